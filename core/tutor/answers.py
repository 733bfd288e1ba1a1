"""Two rules every stage shares: what makes an answer valid for its question, and a question as plain text.

Bank validation (a gold answer on disk), teach (a teacher's reply) and the
format-length reward (a model's completion) all judge an answer by
answer_flaws, so a gold answer the teacher writes passes `bank validate`, and
training rewards what the bank holds. Each caller says what it found in its
own way (a problem line, a reason sent back to the teacher, a score); the rule
is here.

Wherever a question becomes plain text (near-duplicate checks, leakage
probes, novelty against the bank) it is question_text's, so two stages never
disagree about what a question says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .markers import MarkerError, find_diagrams, replace_diagrams

if TYPE_CHECKING:
    from .models import Evaluator, Question, QuestionType


def part_label(label: str) -> str:
    """A part label as printed on a paper: 'a' -> '(a)', 'c(ii)' -> '(c)(ii)'."""
    head, sep, rest = label.partition("(")
    return f"({head}){sep}{rest}" if head else label


def question_text(question: Question) -> str:
    """What the student reads, without a prompt's framing: the stem, each part with its label,
    each option with its letter, one per line. Marks are left out: they are not what a question says."""
    lines = [question.stem.strip()]
    lines += [f"{part_label(part.label)} {part.text.strip()}" for part in question.parts]
    lines += [f"{letter} {text.strip()}" for letter, text in sorted(question.options.items())]
    return "\n".join(lines)


def answer_words(text: str) -> int:
    """Length in words, not counting diagram descriptions (they stand for pictures). Malformed markers raise MarkerError."""
    return len(replace_diagrams(text, lambda marker: "").split())


@dataclass(frozen=True)
class Flaw:
    """One way an answer breaks its type's rules."""

    rule: str  # one of RULES, for callers that weigh flaws rather than print them
    message: str  # what is wrong, in words a person and a teacher model both act on


RULES = ("empty", "markers", "diagram-missing", "diagram-forbidden", "length", "mcq-key")


def answer_flaws(qtype: QuestionType | None, text: str, question: Question | None = None, mcq: Evaluator | None = None) -> list[Flaw]:
    """Every way `text` falls short of a valid answer of type `qtype`; [] when it is one.

    The rules: not empty; DIAGRAM markers well formed; the type's diagram
    policy; the type's word band (diagram descriptions not counted); and, when
    `question` is an MCQ, a committed choice of its key, judged by `mcq` (the
    registry's `mcq` evaluator: callers pass it, so this module needs no
    registry). Without a type only the first two apply; without a question
    and an evaluator, not the last (a reward that scores the key on its own
    passes neither).
    """
    if not text.strip():
        return [Flaw("empty", "the answer is empty")]
    try:
        markers = find_diagrams(text)
    except MarkerError as err:
        why = f"a (DIAGRAM: ...) marker is malformed ({err}): write each as (DIAGRAM: description) with its brackets closed"
        return [Flaw("markers", why)]
    flaws = []
    if qtype is not None:
        if qtype.diagrams == "required" and not markers:
            flaws.append(Flaw("diagram-missing", f"type {qtype.id} expects a (DIAGRAM: ...) marker, none found"))
        if qtype.diagrams == "none" and markers:
            flaws.append(Flaw("diagram-forbidden", f"type {qtype.id} takes no diagrams, found {len(markers)}"))
        if qtype.answer_words:
            words, (low, high) = answer_words(text), qtype.answer_words
            if not low <= words <= high:
                flaws.append(Flaw("length", f"{words} words; a {qtype.id} answer has {low} to {high} (diagram descriptions not counted)"))
    if question is not None and question.is_mcq and mcq is not None:
        score = mcq.score(question, text)
        if score.marks != score.out_of:
            flaws.append(Flaw("mcq-key", f"the MCQ gold answer does not commit to the key ({score.feedback}); "
                                         "its last line must be 'Answer: X' with the correct letter"))
    return flaws
