"""Scoring one reply to one question with every registered evaluator that judges its format.

The single place eval, training's epoch checks and (later) the tutor's `mark`
turn a reply into scores: evaluators are the single source of judgement, and a
plugin's evaluator is used as soon as it is registered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import TutorError

if TYPE_CHECKING:
    from ..models import Evaluator, Question, Score
    from ..registry import SubjectKit


def evaluators_for(kit: SubjectKit, question: Question) -> list[Evaluator]:
    """The registered evaluators that judge the question's format and subject, in registration order (the core's first)."""
    from ..registry import registry

    fmt = kit.type(question.type).format
    return [e for e in registry().evaluators.values() if fmt in e.formats and (not e.subjects or kit.name in e.subjects)]


def score_reply(kit: SubjectKit, question: Question, reply: str, only: set[str] | None = None) -> dict[str, Score]:
    """Evaluator name -> its score of `reply` (the evaluators named in `only`, when given)."""
    scores = {}
    for evaluator in evaluators_for(kit, question):
        if only is not None and evaluator.name not in only:
            continue
        try:
            scores[evaluator.name] = evaluator.score(question, reply)
        except Exception as err:  # noqa: BLE001 - a plugin's bug, named; evaluators must be total over replies
            raise TutorError(f"evaluator {evaluator.name!r} failed on question {question.id}: {type(err).__name__}: {err}") from err
    return scores
