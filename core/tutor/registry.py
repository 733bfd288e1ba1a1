"""What the installed plugins registered, gathered once and checked for conflicts."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import PluginConflict, PluginFailed, TutorError, UnknownName
from .plugins import DISTRIBUTIONS, IMPORT_FAILURES, Failure, PluginWarning, call, calling

if TYPE_CHECKING:  # the models are built by the plugins' hooks; this module only files them
    from .models import DiagramFormat, Evaluator, QuestionSource, QuestionType, Reward, Subject


def _distribution(plugin: str) -> str:
    return DISTRIBUTIONS.get(plugin, (plugin, "?"))[0]


@dataclass
class Registry:
    subjects: dict[str, Subject] = field(default_factory=dict)
    types: dict[str, dict[str, QuestionType]] = field(default_factory=dict)
    formats: dict[str, DiagramFormat] = field(default_factory=dict)
    evaluators: dict[str, Evaluator] = field(default_factory=dict)
    sources: dict[str, QuestionSource] = field(default_factory=dict)
    rewards: dict[str, Reward] = field(default_factory=dict)
    template_dirs: list[tuple[Path, str | None]] = field(default_factory=list)
    owner: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> plugin
    failures: list[Failure] = field(default_factory=list)  # hook implementations that raised

    def collect(self, hook: str) -> list[tuple[str, tuple, dict]]:
        """Call a register-style hook; (plugin, args, kwargs) for each thing registered, in call order.

        What a plugin registered before its implementation raised is dropped with
        it: the plugin is skipped for that hook (and warned about), not half-used.
        """
        found: list[tuple[str, tuple, dict]] = []
        failures = call(hook, register=lambda *args, **kwargs: found.append((calling() or "?", args, kwargs)))
        self.failures += failures
        failed = {f.plugin for f in failures}
        return [entry for entry in found if entry[0] not in failed]

    def refuse(self, plugin: str, hook: str, message: str) -> None:
        """A registration the core cannot accept: the plugin's hook counts as failed, with this message."""
        warnings.warn(f"plugin {plugin!r} failed in {hook} and was skipped there:\n  {message}", PluginWarning, stacklevel=3)
        self.failures.append(Failure(plugin, hook, TutorError(message)))

    def claim(self, kind: str, name: str, plugin: str, table: dict, item: Any) -> None:
        if name in table:
            first, second = sorted([_distribution(self.owner[kind, name]), _distribution(plugin)])
            raise PluginConflict(f"{kind} {name!r} is registered by two plugins: {first} and {second}; uninstall one")
        table[name] = item
        self.owner[kind, name] = plugin


@cache
def registry() -> Registry:
    reg = Registry()
    for plugin, (subject,), _ in reg.collect("register_subjects"):
        reg.claim("subject", subject.name, plugin, reg.subjects, subject)
    for plugin, (qtype,), _ in reg.collect("register_question_types"):
        subject = reg.subjects.get(qtype.subject)
        if subject is None:
            warnings.warn(f"plugin {plugin!r} registered type {qtype.id!r} for subject {qtype.subject!r}, which is not installed",
                          PluginWarning, stacklevel=2)
            continue
        if problem := subject.level_problem(qtype.level):  # a type from code; types.toml is checked as it is read
            reg.refuse(plugin, "register_question_types", f"type {qtype.id!r}: {problem}")
            continue
        reg.claim(f"{qtype.subject} question type", qtype.id, plugin, reg.types.setdefault(qtype.subject, {}), qtype)
    for hook, kind, table in [
        ("register_diagram_formats", "diagram format", reg.formats),
        ("register_evaluators", "evaluator", reg.evaluators),
        ("register_sources", "question source", reg.sources),
        ("register_rewards", "reward", reg.rewards),
    ]:
        for plugin, (item,), _ in reg.collect(hook):
            reg.claim(kind, item.name, plugin, table, item)
    for _, args, kwargs in reg.collect("register_prompt_templates"):
        path, subject = _template_args(*args, **kwargs)
        reg.template_dirs.append((path, subject))
    return reg


def _template_args(path: str | Path, subject: str | None = None) -> tuple[Path, str | None]:
    return Path(path), subject


@dataclass(frozen=True)
class SubjectKit:
    """Everything registered for one subject: what `--subject NAME` gives a command."""

    subject: Subject
    types: dict[str, QuestionType]
    distribution: str

    @property
    def name(self) -> str:
        return self.subject.name

    def type(self, type_id: str) -> QuestionType:
        try:
            return self.types[type_id]
        except KeyError:
            raise UnknownName(f"question type of {self.name}", type_id, list(self.types)) from None

    def template_dirs(self) -> list[Path]:
        """The subject's own template folders first, then shared ones (the core's last)."""
        dirs = registry().template_dirs
        return [p for p, s in dirs if s == self.name] + [p for p, s in reversed(dirs) if s is None]

    def format_for(self, description: str, qtype: QuestionType | None = None) -> DiagramFormat:
        """The format to draw a description in: the first candidate whose keywords it mentions.

        Candidates are the question type's formats, else the subject's; with no
        keyword match the first candidate (the most used) wins.
        """
        names = (qtype.diagram_formats if qtype else []) or self.subject.diagram_formats or ["tikz"]
        candidates = [self.format(name) for name in names]
        return next((f for f in candidates if f.suits(description)), candidates[0])

    def format(self, name: str) -> DiagramFormat:
        formats = registry().formats
        if name not in formats:
            raise UnknownName("diagram format", name, list(formats))
        return formats[name]


def get_subject(name: str) -> SubjectKit:
    """The installed subject `name`, or UnknownName listing the installed ones.

    PluginFailed when the subject's plugin failed (to import, or in any hook): a
    subject without its types would give empty tables and banks where every
    question is "of an unknown type", so the plugin's own error is what to show.
    """
    reg = registry()
    if name in reg.subjects:
        owner = reg.owner["subject", name]
        if failed := [f for f in reg.failures if f.plugin == owner]:
            raise PluginFailed(name, failed)
        return SubjectKit(reg.subjects[name], reg.types.get(name, {}), _distribution(owner))
    # Not registered: was it the subject of a plugin that failed? (Entry-point name = subject name.)
    if failed := [f for f in [*IMPORT_FAILURES, *reg.failures] if f.plugin.split(" (")[0] == name]:
        raise PluginFailed(name, failed)
    raise UnknownName("subject", name, list(reg.subjects))
