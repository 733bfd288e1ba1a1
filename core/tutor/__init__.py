"""tutor: turn exam question banks into subject tutor models.

The public API for plugin authors and scripts. Importing this is cheap: no
plugin is loaded and nothing heavy (torch) is imported until a stage needs it.
"""

__version__ = "0.1.0"

from .errors import Problem, TutorError, UnknownName, ValidationFailed  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .markers import DiagramMarker, find_diagrams  # noqa: E402
from .models import (  # noqa: E402
    Diagram,
    DiagramFormat,
    Evaluator,
    Exemplar,
    GoldAnswer,
    LevelDescriptor,
    MarkPoint,
    MarkScheme,
    Part,
    Question,
    QuestionSource,
    QuestionType,
    Reward,
    RewardBatch,
    Score,
    Source,
    Subject,
)
from .registry import get_subject  # noqa: E402
from .bank import Bank, load_bank, read_question_types  # noqa: E402

__all__ = [
    "Bank", "load_bank", "Diagram", "DiagramFormat", "DiagramMarker", "Evaluator", "Exemplar", "GoldAnswer", "LevelDescriptor",
    "MarkPoint", "MarkScheme", "Part", "Problem", "Question", "QuestionSource", "QuestionType", "Reward", "RewardBatch",
    "Score", "Source", "Subject", "TutorError", "UnknownName", "ValidationFailed", "find_diagrams",
    "get_subject", "hookimpl", "read_question_types",
]
