"""Prompt templates: jinja2, layered user > subject plugin > shared plugins > core.

A prompt kind is a folder with `system.j2` and `user.j2`; rendering gives the
chat messages sent to a model. Small shared pieces (`_question.j2`,
`_mark_scheme.j2`, `_diagram_rule.j2`, `_tutor.j2`) are included by name, so a
subject overrides one piece without copying whole prompts. Core templates are
also reachable as `core/<name>`, for `{% extends "core/answer/user.j2" %}`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from .answers import part_label
from .errors import TutorError, UnknownName
from .registry import SubjectKit

KINDS = {
    "answer": "a teacher model writes a full-mark gold answer from the mark scheme",
    "explain": "the tutor explains a question step by step",
    "set": "the tutor sets a new question of a type",
    "mark": "the tutor marks a student's answer against the mark scheme",
    "diagram": "a diagram model writes diagram code from a description",
}


def core_templates_dir() -> Path:
    """The core's templates: inside the installed wheel, or at the top of a source checkout."""
    packaged = Path(__file__).parent / "templates" / "prompts"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "templates" / "prompts"


@cache
def _environment(search_path: tuple[Path, ...]):
    import jinja2  # only commands that render prompts pay for jinja

    loader = jinja2.ChoiceLoader([
        jinja2.FileSystemLoader([str(p) for p in search_path]),
        jinja2.PrefixLoader({"core": jinja2.FileSystemLoader(str(core_templates_dir()))}),
    ])
    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=False)
    env.filters["part_label"] = part_label
    return env


def search_path(kit: SubjectKit, user_dirs: list[Path] = ()) -> tuple[Path, ...]:
    return tuple(p for p in [*user_dirs, *kit.template_dirs()] if p.is_dir())


def render(kit: SubjectKit, kind: str, user_dirs: list[Path] = (), **context: Any) -> list[dict[str, str]]:
    """The chat messages for prompt `kind`, e.g. render(kit, "answer", question=q, type=t)."""
    import jinja2

    if kind not in KINDS:
        raise UnknownName("prompt kind", kind, list(KINDS))
    env = _environment(search_path(kit, user_dirs))
    context = {"subject": kit.subject, **context}
    messages = []
    for role in ("system", "user"):
        name = f"{kind}/{role}.j2"
        try:
            text = env.get_template(name).render(context).strip()
        except jinja2.UndefinedError as err:
            where = _template_location(err) or name
            raise TutorError(f"prompt {where}: {err.message}; given: {', '.join(sorted(context))}") from None
        except jinja2.TemplateError as err:
            where = f"{err.filename}:{err.lineno}" if getattr(err, "filename", None) else name
            raise TutorError(f"prompt template {where}: {err.message}") from None
        if text:
            messages.append({"role": role, "content": text})
    return messages


def _template_location(err: Exception) -> str | None:
    """file:line inside the template (or included piece) that raised: jinja maps its frames to templates."""
    frames = []
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(".j2"):
            frames.append(f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}")
        tb = tb.tb_next
    return frames[-1] if frames else None


def question_context(kit: SubjectKit, question, gold=None, **extra: Any) -> dict[str, Any]:
    """The variables every question prompt uses, so callers cannot forget one."""
    qtype = kit.type(question.type)
    # Spread a type's exemplars over its questions (stably, by id), so a teacher
    # model does not imitate one exemplar's wording across the whole bank.
    exemplar = qtype.exemplars[int(question.id, 16) % len(qtype.exemplars)]
    return {"question": question, "type": qtype, "exemplar": exemplar, "gold": gold, **extra}


# --- retrieved material (the knowledge base's chunks, --rag) -------------------------------------


def render_material(kit: SubjectKit, user_dirs: list[Path], hits: list) -> str:
    """Retrieved chunks as the `_material.j2` template piece renders them (a subject, or the user, may override it)."""
    template = _environment(search_path(kit, list(user_dirs))).get_template("_material.j2")
    return template.render(subject=kit.subject, chunks=hits).strip()


def with_material(kit: SubjectKit, user_dirs: list[Path], messages: list[dict], hits: list) -> tuple[list[dict], list[str]]:
    """The chat messages with the chunks before the question, in the user's turn (the system prompt stays the trained one),
    and the chunks' sources. Training (`[train] rag`), answering and eval all put them there, the same way."""
    if not hits:
        return messages, []
    last = messages[-1]
    material = render_material(kit, user_dirs, hits)
    return [*messages[:-1], {**last, "content": f"{material}\n\n{last['content']}"}], list(dict.fromkeys(h.source for h in hits))
