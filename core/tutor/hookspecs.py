"""The plugin contract: every hook a plugin can implement. The docstrings are the spec.

Each hook receives a `register` callback and calls it once per thing it adds,
so one plugin can add any number of things and the core knows which plugin
added each. The core's own formats and evaluators arrive the same way.

Hooks are called through pluggy, the core's implementations first (see
tutor.plugins for the order and what tryfirst, trylast and wrappers do). A
subject package needs none of the first four: its subject.toml, types.toml,
formats.toml and templates/ stand for them. Build models inside the hook, not
at import: every plugin module is imported for `tutor --help`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # for the signatures only: importing the models costs start-up time
    import click

    from .models import DiagramFormat, Evaluator, QuestionSource, QuestionType, Reward, Subject

PROJECT = "tutor"  # pluggy's project name and the entry-point group plugins are found by
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_subjects(register: Callable[[Subject], None]) -> None:
    """Add subjects. A subject name may be claimed by only one installed plugin."""


@hookspec
def register_question_types(register: Callable[[QuestionType], None]) -> None:
    """Add question types. Each names its subject; `(subject, id)` must be unique."""


@hookspec
def register_prompt_templates(register: Callable[..., None]) -> None:
    """Add a folder of jinja2 prompt templates: `register(path, subject=None)`.

    With a subject, the folder serves that subject only and is searched before
    folders registered without one. The user's workspace templates come first.
    """


@hookspec
def register_diagram_formats(register: Callable[[DiagramFormat], None]) -> None:
    """Add diagram formats (preamble, body environment, extraction, static check)."""


@hookspec
def register_evaluators(register: Callable[[Evaluator], None]) -> None:
    """Add evaluators that score an answer to a question of the formats they list."""


@hookspec
def register_sources(register: Callable[[QuestionSource], None]) -> None:
    """Add question sources: importers for files, scrapers for question-bank sites."""


@hookspec
def register_rewards(register: Callable[[Reward], None]) -> None:
    """Add GRPO reward functions; each scores a batch of completions in [0, 1]."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands or groups to the `tutor` command line."""

