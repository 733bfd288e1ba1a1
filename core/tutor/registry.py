"""What the installed plugins registered, gathered once and checked for conflicts."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from .errors import PluginConflict, UnknownName, ValidationFailed
from .models import DiagramFormat, Evaluator, QuestionSource, QuestionType, Reward, Subject
from .plugins import DISTRIBUTIONS, PluginWarning, plugin_manager


def _collect(hook: str) -> list[tuple[str, tuple, dict]]:
    """Call every implementation of a register-style hook; note which plugin registered what.

    A plugin whose hook raises (a broken types.toml, say) is skipped for that
    hook with a warning naming it, so the other subjects keep working.
    """
    found: list[tuple[str, tuple, dict]] = []
    # get_hookimpls() is in registration order (the core's default plugins first);
    # pluggy would *call* them newest first, which is why we call them ourselves.
    for impl in getattr(plugin_manager().hook, hook).get_hookimpls():
        added: list[tuple[str, tuple, dict]] = []
        try:
            impl.function(register=lambda *args, _plugin=impl.plugin_name, **kwargs: added.append((_plugin, args, kwargs)))
        except Exception as err:  # noqa: BLE001 - any failure in someone else's code
            detail = "\n  ".join(map(str, err.problems)) if isinstance(err, ValidationFailed) else f"{type(err).__name__}: {err}"
            warnings.warn(f"plugin {impl.plugin_name!r} failed in {hook} and was skipped there:\n  {detail}", PluginWarning, stacklevel=2)
            continue
        found += added
    return found


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

    def claim(self, kind: str, name: str, plugin: str, table: dict, item: Any) -> None:
        if name in table:
            first, second = sorted([_distribution(self.owner[kind, name]), _distribution(plugin)])
            raise PluginConflict(f"{kind} {name!r} is registered by two plugins: {first} and {second}; uninstall one")
        table[name] = item
        self.owner[kind, name] = plugin


@cache
def registry() -> Registry:
    reg = Registry()
    for plugin, (subject,), _ in _collect("register_subjects"):
        reg.claim("subject", subject.name, plugin, reg.subjects, subject)
    for plugin, (qtype,), _ in _collect("register_question_types"):
        if qtype.subject not in reg.subjects:
            warnings.warn(f"plugin {plugin!r} registered type {qtype.id!r} for subject {qtype.subject!r}, which is not installed", PluginWarning, stacklevel=2)
            continue
        reg.claim(f"{qtype.subject} question type", qtype.id, plugin, reg.types.setdefault(qtype.subject, {}), qtype)
    for hook, kind, table in [
        ("register_diagram_formats", "diagram format", reg.formats),
        ("register_evaluators", "evaluator", reg.evaluators),
        ("register_sources", "question source", reg.sources),
        ("register_rewards", "reward", reg.rewards),
    ]:
        for plugin, (item,), _ in _collect(hook):
            reg.claim(kind, item.name, plugin, table, item)
    for _, args, kwargs in _collect("register_prompt_templates"):
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
    """The installed subject `name`, or UnknownName listing the installed ones."""
    reg = registry()
    if name not in reg.subjects:
        raise UnknownName("subject", name, list(reg.subjects))
    return SubjectKit(reg.subjects[name], reg.types.get(name, {}), _distribution(reg.owner["subject", name]))
