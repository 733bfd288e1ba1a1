"""The project's own exceptions. The CLI turns each into one line on stderr.

Every message names the bad value and, where there is a closed set, the valid
ones, so a user never has to read a traceback to know what to type instead.
"""

from __future__ import annotations

from dataclasses import dataclass


class TutorError(Exception):
    """Base class: a problem the user can fix. `exit_code` is what the CLI returns."""

    exit_code = 1


class UnknownName(TutorError):
    """A name (subject, question type, format, prompt kind...) that is not registered."""

    exit_code = 2

    def __init__(self, kind: str, value: str, valid: list[str] | tuple[str, ...]):
        self.kind, self.value, self.valid = kind, value, sorted(valid)
        choices = ", ".join(self.valid) if self.valid else "(none installed)"
        super().__init__(f"unknown {kind} {value!r}; valid: {choices}")


class PluginConflict(TutorError):
    """Two plugins registered the same name, e.g. both claim the subject 'physics'."""


class PluginFailed(TutorError):
    """A command needs a subject whose plugin failed (to import, or in one of its hooks): its error, not an empty result."""

    def __init__(self, subject: str, failures: list):  # failures: tutor.plugins.Failure, each with its plugin, hook and error
        where = "; ".join(f"plugin {f.plugin!r} failed " + ("to import" if f.hook == "import" else f"in {f.hook}") + f":\n  {f.detail}"
                          for f in failures)
        super().__init__(f"subject {subject!r} cannot be used: {where}")


class ConfigError(TutorError):
    """The workspace's tutor.toml is missing a value or has a wrong one."""


@dataclass(frozen=True)
class Problem:
    """One validation problem, located as precisely as the input allows."""

    file: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class ValidationFailed(TutorError):
    """One or more records failed validation. Carries every problem, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        first = str(problems[0]) if problems else "no problems"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(first + more)
