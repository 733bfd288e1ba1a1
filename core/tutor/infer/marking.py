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

import math
import re
from typing import TYPE_CHECKING

from ..errors import TutorError
from .results import LevelAward, MarkResult

if TYPE_CHECKING:
    from ..models import Question, Score
    from ..registry import SubjectKit
    from ..workspace import Workspace

MAX_ANSWER_CHARS = 20_000  # as the judge reads: an exam answer is a few thousand characters
FEEDBACK_LINES = 3
# A levelled part reaches its top level when the answer covers this share of the indicative content: no answer
# covers it all (the notes list more than a full-mark answer needs). On the 22 levelled economics questions of the
# sample bank, 0.5 gives gold answers 95% of the levelled marks and other questions' gold answers 12% (0.3: 99% and 21%;
# 0.6: 91% and 11%); tests/test_tutor_modes.py holds it there.
TOP_SHARE = 0.5
_CLAUSE = re.compile(r";\s+|(?<=[a-z)])\.\s+|:\s+(?=[A-Za-z])")
_META = re.compile(r"\b(marks?|level|AO\d|indicative content|evaluation)\b\s*[:.]?\s*$|\bmarks? for\b", re.IGNORECASE)


def check_answer_text(answer: str) -> tuple[str, bool]:
    """(the answer as marked, whether it was truncated); an empty one is refused."""
    if not answer or not answer.strip():
        raise TutorError("the student's answer is empty: there is nothing to mark")
    if len(answer) > MAX_ANSWER_CHARS:
        return answer[:MAX_ANSWER_CHARS], True
    return answer, False


def mark_answer(kit: SubjectKit, question: Question, answer: str, *, workspace: Workspace | None = None, judge: bool = False,
                student: str | None = None, material: str | None = None, sources: list[str] | None = None) -> MarkResult:
    """The MarkResult of `answer`: by the rules, or by the teacher as judge (`judge`, which needs `workspace`).

    `material` (retrieved by --rag) is shown to the judge as reference, apart from the answer; the rules never read it,
    and a judge's award still needs a quote from the answer, so no retrieved text can raise a mark. `sources` name it."""
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
        (score,) = mark_with_judge(kit, workspace, [(question, answer)], run=run, material=[material])
        if score is None:
            raise TutorError(f"the judge gave no mark: {run.stopped or '; '.join(run.failed) or 'no reply'}")
        from ..teach import teacher_config

        marker = f"judge:{teacher_config(workspace).model}"
    else:
        score = evaluators["mark-points"].score(question, answer)
    levels, levelled = estimate_levels(question, answer) if not question.is_mcq else ([], [])
    marks = score.marks + sum(level.marks for level in levels)
    out_of = (score.out_of if score.points or question.is_mcq else 0) + sum(level.out_of for level in levels)
    checks = [f"{name}: {extra.marks:g}/{extra.out_of:g}" + (f" ({_one_line(extra.feedback)})" if extra.feedback else "")
              for name, extra in score_reply(kit, question, answer).items() if name not in ("mark-points", "mcq", "form")]
    return MarkResult(subject=kit.name, question_id=question.id, student=student, marks=marks, out_of=out_of or score.out_of,
                      question_marks=question.marks, points=score.points, levelled=levelled, levels=levels,
                      feedback=feedback(question, score, levels), checks=checks, marker=marker, truncated=truncated,
                      sources=sources or [])


def indicative_content(notes: str) -> list[str]:
    """The mark scheme notes cut into clauses of content, the examiner's bookkeeping ("up to 8 marks for ...") left out."""
    clauses = [" ".join(c.split()) for c in _CLAUSE.split(notes)]
    return [c for c in clauses if len(c.split()) >= 3 and not _META.search(c)]


def estimate_levels(question: Question, answer: str) -> tuple[list[LevelAward], list[str]]:
    """(a level for each part, and strand, marked by levels; the levelled parts that cannot be estimated).

    The rule marker cannot judge the quality of an argument; it can see how much of the indicative content (the
    mark scheme's notes) an answer covers, as it sees marking points. That share, over TOP_SHARE, places the answer
    in the part's levels from the bottom: nothing covered is level 0, TOP_SHARE or more the top level, and within a
    level the marks rise with the share. An estimate, labelled as one: an examiner (or the judge) decides levels.
    """
    from ..default_plugins.evaluators import covered_points

    scheme = question.mark_scheme
    parts = list(dict.fromkeys(level.part for level in scheme.levels))
    if not parts:
        return [], []
    clauses = indicative_content(scheme.notes)
    if not clauses:
        return [], [f"({part})" if part else "the question" for part in parts]
    found = [p for p in covered_points(clauses, answer) if p.awarded]
    share = len(found) / len(clauses)
    position = min(1.0, share / TOP_SHARE)
    awards = []
    for part in parts:
        for strand in dict.fromkeys(level.strand for level in scheme.levels if level.part == part):
            table = sorted((lv for lv in scheme.levels if lv.part == part and lv.strand == strand), key=lambda lv: lv.level)
            top = max(lv.marks[1] for lv in table)
            if position == 0:
                awards.append(LevelAward(part=part, strand=strand, level=0, marks=0, out_of=top, share=0.0))
                continue
            step = position * len(table)
            chosen = table[max(0, math.ceil(step) - 1)]
            within = step - (math.ceil(step) - 1)  # (0, 1]: how far into its level
            low, high = chosen.marks
            awards.append(LevelAward(part=part, strand=strand, level=chosen.level, marks=low + round((high - low) * within),
                                     out_of=top, descriptor=chosen.descriptor, covered=[p.text for p in found], share=round(share, 3)))
    return awards, []


def feedback(question: Question, score: Score, levels: list[LevelAward] = ()) -> list[str]:
    """Two or three lines in the mark scheme's terms: what earned marks, then what to add, point by point; for a
    part marked by levels, the level estimated and how much of the indicative content it rests on."""
    if question.is_mcq:
        return [score.feedback] if score.feedback else []
    level_lines = [f"{f'({award.part}) ' if award.part else ''}{f'{award.strand}: ' if award.strand else ''}level {award.level} "
                   f"(estimated: {len(award.covered)} pieces of the indicative content covered; an examiner decides levels)"
                   for award in levels]
    if level_lines and not score.points:
        return level_lines[:FEEDBACK_LINES]
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
    return (level_lines[:1] + lines)[:FEEDBACK_LINES]


def _short(text: str, limit: int = 140) -> str:
    text = " ".join(text.split()).rstrip(".")
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def _one_line(text: str) -> str:
    return _short(text.replace("\n", "; "), 200)
