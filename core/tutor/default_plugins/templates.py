"""The core's base prompt templates: searched last, after the user's and the subject's."""

from tutor.hookspecs import hookimpl


@hookimpl
def register_prompt_templates(register):
    from tutor.prompts import core_templates_dir

    register(core_templates_dir())
