"""The core's base prompt templates: searched last, after the user's and the subject's."""

from tutor import hookimpl
from tutor.prompts import core_templates_dir


@hookimpl
def register_prompt_templates(register):
    register(core_templates_dir())
