"""tutor: turn exam question banks into subject tutor models.

The public API for plugin authors and scripts. Importing this is cheap: each
name is imported on first use (PEP 562), so `tutor --help` does not build the
models' schemas before it needs them, no plugin is loaded, and nothing heavy
(torch) is imported until a stage needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Each public name, and the module it lives in.
_PUBLIC = {
    **dict.fromkeys(["Problem", "TutorError", "UnknownName", "ValidationFailed"], "errors"),
    "hookimpl": "hookspecs",
    **dict.fromkeys(["DiagramMarker", "find_diagrams"], "markers"),
    **dict.fromkeys(["Diagram", "DiagramFormat", "Evaluator", "Exemplar", "GoldAnswer", "LevelDescriptor", "MarkPoint", "MarkScheme",
                     "Part", "PointMark", "Question", "QuestionSource", "QuestionType", "Reward", "RewardBatch", "Score", "Source",
                     "Subject"], "models"),
    "get_subject": "registry",
    **dict.fromkeys(["Bank", "load_bank"], "bank"),
    "read_question_types": "package",
    "Tutor": "infer.tutor",
    **dict.fromkeys(["TextResult", "MarkResult", "SetResult", "SetQuestion", "SetReject", "DiagramResult"], "infer.results"),
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value  # once: later look-ups are plain attribute reads
        return value
    raise AttributeError(f"module 'tutor' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


if TYPE_CHECKING:  # for type checkers and editors: the same names, eagerly
    from .bank import Bank, load_bank  # noqa: F401
    from .errors import Problem, TutorError, UnknownName, ValidationFailed  # noqa: F401
    from .hookspecs import hookimpl  # noqa: F401
    from .infer.results import DiagramResult, MarkResult, SetQuestion, SetReject, SetResult, TextResult  # noqa: F401
    from .infer.tutor import Tutor  # noqa: F401
    from .markers import DiagramMarker, find_diagrams  # noqa: F401
    from .models import (  # noqa: F401
        Diagram,
        DiagramFormat,
        Evaluator,
        Exemplar,
        GoldAnswer,
        LevelDescriptor,
        MarkPoint,
        MarkScheme,
        Part,
        PointMark,
        Question,
        QuestionSource,
        QuestionType,
        Reward,
        RewardBatch,
        Score,
        Source,
        Subject,
    )
    from .package import read_question_types  # noqa: F401
    from .registry import get_subject  # noqa: F401
