"""A subject package: a subject by convention, every piece of it a file beside an empty module.

tutor.plugins registers a `SubjectPackage` for any plugin package with a
subject.toml beside its __init__.py; its four hooks read the files below.
The readers are also what a hook-writing plugin uses (read_question_types).
Nothing here imports the models or pydantic until a file is read: every
plugin package is looked at when `tutor --help` lists the plugins' commands.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, TypeVar

from .errors import Problem, TutorError, ValidationFailed
from .hookspecs import hookimpl

if TYPE_CHECKING:
    from .models import DiagramFormat, QuestionType, Subject


class SubjectPackage:
    """A subject by convention: everything it registers is a file beside its module.

        tutor_biology/
          __init__.py     (a docstring is enough)
          subject.toml    the Subject: title, syllabus, topics, levels, diagram_formats, [train], [topic_weights]
          types.toml      [[types]]: question types and their answering guides
          formats.toml    [[formats]]: diagram formats (optional)
          templates/      prompt-template overrides (optional)
          bank/           the sample bank (optional)
          notes/          Markdown notes per topic, for the knowledge base (optional)

    The subject's name defaults to the package's (tutor_biology -> biology).
    Files are read, and models built, only when the hooks are called, so
    importing the package (as `tutor --help` does) costs nothing.
    """

    def __init__(self, folder: Path, name: str):
        self.folder, self.name = folder, name

    @classmethod
    def find(cls, plugin: object) -> SubjectPackage | None:
        folders = getattr(plugin, "__path__", None) if isinstance(plugin, ModuleType) else None  # packages only
        if not folders or not (Path(list(folders)[0]) / "subject.toml").is_file():
            return None
        package = plugin.__name__.rpartition(".")[2]
        return cls(Path(list(folders)[0]), package.removeprefix("tutor_"))

    def provides(self, hook: str) -> bool:
        """Whether the package has the file the hook reads (so `tutor plugins` lists only real hooks)."""
        optional = {"register_diagram_formats": "formats.toml", "register_prompt_templates": "templates"}
        return hook not in optional or (self.folder / optional[hook]).exists()

    def subject(self):
        bank, notes = self.folder / "bank", self.folder / "notes"
        return read_subject(self.folder / "subject.toml", name=self.name, bank=bank if bank.is_dir() else None,
                            notes=notes if notes.is_dir() else None)

    def subject_or_none(self):
        """The subject, or None when subject.toml has a problem: register_subjects reports that, once."""
        try:
            return self.subject()
        except TutorError:
            return None

    @hookimpl
    def register_subjects(self, register):
        register(self.subject())

    @hookimpl
    def register_question_types(self, register):
        if subject := self.subject_or_none():
            for qtype in read_question_types(self.folder / "types.toml", subject):
                register(qtype)

    @hookimpl
    def register_diagram_formats(self, register):
        for fmt in read_diagram_formats(self.folder / "formats.toml"):
            register(fmt)

    @hookimpl
    def register_prompt_templates(self, register):
        if subject := self.subject_or_none():
            register(self.folder / "templates", subject=subject.name)


# --- the files, read into models ------------------------------------------------------------
# tomllib keeps no positions, so problems are placed by searching the text: the n-th `[[key]]`
# header is where table n starts, and a top-level `name =` line is where that value is.

M = TypeVar("M")


def _read_toml(path: Path) -> tuple[str, dict]:
    try:
        text = path.read_text(encoding="utf-8")
        return text, tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValidationFailed([Problem(str(path), None, None, str(err))]) from None


def _problem(path: Path, line: int | None, label: list[str], error: dict) -> Problem:
    return Problem(str(path), line, ".".join([*label, *map(str, error["loc"])]) or None, error["msg"].removeprefix("Value error, "))


def read_tables(path: Path, key: str, build: Callable[[dict], M]) -> list[M]:
    """`build(table)` for every `[[key]]` table of a TOML file; ValidationFailed lists every problem with its line."""
    from pydantic import ValidationError

    path = Path(path)
    text, data = _read_toml(path)
    starts = [number for number, line in enumerate(text.splitlines(), start=1) if line.strip() == f"[[{key}]]"]
    problems: list[Problem] = []
    built = []
    for index, table in enumerate(data.get(key, [])):
        try:
            built.append(build(table))
        except ValidationError as err:
            name = table.get("id") or table.get("name") or "?"
            line = starts[index] if index < len(starts) else None
            problems += [_problem(path, line, [f"{key}[{index}] ({name})"], e) for e in err.errors()]
    if not built and not problems:
        problems.append(Problem(str(path), None, None, f"no [[{key}]] tables"))
    if problems:
        raise ValidationFailed(problems)
    return built


def read_question_types(path: Path, subject: str | Subject) -> list[QuestionType]:
    """Question types from a plugin's TOML file: `[[types]]` tables (see docs/plugin-guide.md).

    Given the Subject rather than its name, each type's level is checked against the subject's levels too.
    """
    from .models import QuestionType

    name = subject if isinstance(subject, str) else subject.name
    context = None if isinstance(subject, str) else {"subject": subject}
    return read_tables(path, "types", lambda table: QuestionType.model_validate({"subject": name, **table}, context=context))


def read_diagram_formats(path: Path) -> list[DiagramFormat]:
    """Diagram formats from a plugin's TOML file: `[[formats]]` tables."""
    from .models import DiagramFormat

    return read_tables(path, "formats", DiagramFormat.model_validate)


def read_subject(path: Path, **defaults) -> Subject:
    """A subject from a plugin's subject.toml; `defaults` fill what the file leaves out (name, bank)."""
    from pydantic import ValidationError

    from .models import Subject

    path = Path(path)
    text, data = _read_toml(path)
    try:
        return Subject.model_validate({**defaults, **data})
    except ValidationError as err:
        raise ValidationFailed([_problem(path, _line_of(text, e["loc"][:1]), [], e) for e in err.errors()]) from None


def _line_of(text: str, loc: tuple) -> int | None:
    """The line where a top-level key (`key = ...` or `[key]`) is set, if it is."""
    found = re.search(rf"^\s*\[?{re.escape(str(loc[0]))}\b", text, re.MULTILINE) if loc else None
    return text.count("\n", 0, found.start()) + 1 if found else None
