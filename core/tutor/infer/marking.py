"""`mark`: a student's answer against the mark scheme, point by point, by the eval stage's own two markers.

- rules (default): the mark-points evaluator, deterministic, with the quoted
  evidence per point; MCQs by the mcq evaluator. It matches words and numbers,
  so an instruction inside the answer ("award full marks") is only more words
  that match no marking point.
- judge (`via="teacher"`): eval.judge's model judge, whose every awarded point
  must quote the answer, so a judge talked into awarding what the answer does
  not say gains it nothing.
The subject's other evaluators for the question's format (final answers with
their significant figures, a plugin's own checkers such as state symbols)
add their findings as checks; the mark is the markers'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import TutorError
from .results import MarkResult

if TYPE_CHECKING:
    from ..models import Question, Score
    from ..registry import SubjectKit
    from ..workspace import Workspace

MAX_ANSWER_CHARS = 20_000  # as the judge reads: an exam answer is a few thousand characters
FEEDBACK_LINES = 3


def check_answer_text(answer: str) -> tuple[str, bool]:
    """(the answer as marked, whether it was truncated); an empty one is refused."""
    if not answer or not answer.strip():
        raise TutorError("the student's answer is empty: there is nothing to mark")
    if len(answer) > MAX_ANSWER_CHARS:
        return answer[:MAX_ANSWER_CHARS], True
    return answer, False


def mark_answer(kit: SubjectKit, question: Question, answer: str, *, workspace: Workspace | None = None, judge: bool = False,
                student: str | None = None) -> MarkResult:
    """The MarkResult of `answer`: by the rules, or by the teacher as judge (`judge`, which needs `workspace`)."""
    from ..default_plugins.evaluators import point_parts
    from ..eval.scoring import score_reply
    from ..registry import registry

    answer, truncated = check_answer_text(answer)
    evaluators = registry().evaluators
    marker = "rules"
    if question.is_mcq:
        score = evaluators["mcq"].score(question, answer)
    elif judge:
        from ..eval.judge import JudgeRun, mark_with_judge

        run = JudgeRun()
        (score,) = mark_with_judge(kit, workspace, [(question, answer)], run=run)
        if score is None:
            raise TutorError(f"the judge gave no mark: {run.stopped or '; '.join(run.failed) or 'no reply'}")
        from ..teach import teacher_config

        marker = f"judge:{teacher_config(workspace).model}"
    else:
        score = evaluators["mark-points"].score(question, answer)
    _, levelled = point_parts(question)
    checks = [f"{name}: {extra.marks:g}/{extra.out_of:g}" + (f" ({_one_line(extra.feedback)})" if extra.feedback else "")
              for name, extra in score_reply(kit, question, answer).items() if name not in ("mark-points", "mcq", "form")]
    return MarkResult(subject=kit.name, question_id=question.id, student=student, marks=score.marks, out_of=score.out_of,
                      question_marks=question.marks, points=score.points, levelled=levelled if not question.is_mcq else [],
                      feedback=feedback(question, score), checks=checks, marker=marker, truncated=truncated)


def feedback(question: Question, score: Score) -> list[str]:
    """Two or three lines in the mark scheme's terms: what earned marks, then what to add, point by point."""
    if question.is_mcq:
        return [score.feedback] if score.feedback else []
    got = [p for p in score.points if p.awarded]
    missed = [p for p in score.points if not p.awarded]
    lines = []
    if got:
        lines.append(f"Credit for: {'; '.join(_short(p.text) for p in got[:3])}{' ...' if len(got) > 3 else ''}.")
    for point in missed[:FEEDBACK_LINES - len(lines) or 1]:
        where = f"In ({point.part}), " if point.part else ""
        lines.append(f"{where}to earn {point.marks:g} more mark{'s' if point.marks != 1 else ''}: {_short(point.text)}"
                     + (f" ({point.why})" if point.why and point.why != "not found" else "") + ".")
    if not missed and score.points:
        lines.append("Every marking point is covered: full marks on the point-marked parts.")
    return lines[:FEEDBACK_LINES]


def _short(text: str, limit: int = 140) -> str:
    text = " ".join(text.split()).rstrip(".")
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def _one_line(text: str) -> str:
    return _short(text.replace("\n", "; "), 200)
