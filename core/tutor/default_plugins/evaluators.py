"""Rule-based marking: the chosen letter of a multiple-choice reply, the numbers of a calculation,
the marking points an answer covers.

Evaluators are the single source of judgement: GRPO rewards, eval, `mark` and
bank validation call these (registry().evaluators[name].score), never a copy.
Every one is total over replies: empty, huge or garbage text scores low, never raises.
The models are imported where they are used: importing this module (as listing
the plugins for `tutor --help` does) must not build them.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING

from tutor.hookspecs import hookimpl
from tutor.rewards_text import content_words

if TYPE_CHECKING:
    from tutor.models import Question, Score

# Tried in order; within a rule the last match wins, because replies often
# discuss other options before committing. Only keywords ignore case, so
# "the answer is a vector" never reads as option A.
_RULES = [
    re.compile(r"(?i:answer|key)\s*(?:is|:|=|-)?\s*(?i:option)?\s*[*(\[]*\s*([A-Z])\b(?![a-z'])"),
    re.compile(r"\b(?i:option|choice)?\s*\(?([A-Z])\)?\s+(?i:is\s+(?:the\s+)?(?:correct|right|true))"),
    re.compile(r"\A\W*([A-Z])\s*(?:[).:\]]|$)", re.MULTILINE),
]


def chosen_option(question: Question, reply: str) -> str | None:
    """The option letter a reply commits to, or None if it commits to none."""
    for rule in _RULES:
        found = [m.group(1) for m in rule.finditer(reply.strip()) if m.group(1) in question.options]
        if found:
            return found[-1]
    return None


def score_mcq(question: Question, reply: str) -> Score:
    from tutor.models import Score

    choice = chosen_option(question, reply)
    if choice is None:
        return Score(marks=0, out_of=1, feedback="no option chosen")
    return Score(marks=float(choice == question.key), out_of=1, feedback=f"chose {choice}; key {question.key}")


# --- numeric final answers --------------------------------------------------------------

_SUPERSCRIPT = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")
_NUMBER = re.compile(
    r"(?<![\w.^\-−])(?P<sign>[-−–]\s?)?(?P<mantissa>\d{1,3}(?:[, \u2009\u202f]\d{3})+(?![\d,])(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:\s*[×x*]\s*10\s*(?:\^|\*\*)\s*\{?\(?(?P<exp>[-−+]?\d+)\)?\}?"
    r"|\s*[×x]\s*10(?P<sup>[⁻⁺]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+)"
    r"|[eE](?P<e>[-+−]?\d+))?"
)


def numbers_in(text: str) -> list[float]:
    """Every number written in a text, in the forms exam answers use:
    1,200  14 400  -3.5  −180  4.23 × 10^7  1.60 x 10^-19  6.63×10⁻³⁴  2.5e-3."""
    return [value for value, _, _ in numbers_with_spans(text)]


def numbers_with_spans(text: str) -> list[tuple[float, int, int]]:
    """Each number of a text with its start and end offsets (where a unit would sit).

    "14 400" is one number in exam style, but "100 120 126" may be three data
    values: digits grouped by spaces yield the whole and each group.
    """
    found = []
    for m in _NUMBER.finditer(text):
        exponent = m["exp"] or (m["sup"] and m["sup"].translate(_SUPERSCRIPT)) or m["e"]
        scale = 10.0 ** int(exponent.replace("−", "-")) if exponent else 1.0
        sign = -1.0 if m["sign"] else 1.0
        whole = re.sub(r"[, \u2009\u202f]", "", m["mantissa"])
        readings = [whole] + (m["mantissa"].split(" ") if " " in m["mantissa"] else [])
        found += [(sign * float(reading.replace(",", "")) * scale, m.start(), m.end()) for reading in readings]
    return found


def agrees(candidate: float, value: float, sig_figs: int | None) -> bool:
    """True when `candidate` is `value` as written to `sig_figs` significant figures."""
    if value == 0:
        return candidate == 0
    import math

    figures = sig_figs or 3
    half_step = 0.5 * 10 ** (math.floor(math.log10(abs(value))) - figures + 1)
    return abs(candidate - value) <= half_step * 1.001


def score_final_answers(question: Question, reply: str) -> Score:
    from tutor.models import Score

    numbers = numbers_in(reply)
    found = [f for f in question.final_answers if any(agrees(n, f.value, f.sig_figs) for n in numbers)]
    missing = [f"{f.key or 'answer'}: {f.value:g} {f.unit}".strip() for f in question.final_answers if f not in found]
    return Score(marks=len(found), out_of=max(len(question.final_answers), 1),
                 feedback="missing " + "; ".join(missing) if missing else "all final answers found")


# --- marking points ------------------------------------------------------------------

# A point is covered when at least half of its content words, and at least half
# of its numbers, appear in the answer. Half, not all: points carry bracketed
# synonyms and asides ("superpose (interfere)", "(and speed)") that one correct
# phrasing never uses all of. Words and numbers are judged apart so that "kg"
# alone cannot earn "2500 kg/m^3", nor a bare number an explanation.
COVERAGE = 0.5
_ALTERNATIVE = re.compile(r";\s*(?:or\s+)?(?:accept|allow)\b\s*:?", re.IGNORECASE)


def safe_numbers(text: str) -> list[float]:
    """numbers_in, but finite values only and never raising (10^99999 overflows a float)."""
    try:
        found = numbers_in(text)
    except (OverflowError, ValueError):  # retry line by line, dropping only the lines that fail
        found = []
        for line in text.splitlines():
            try:
                found += numbers_in(line)
            except (OverflowError, ValueError):
                continue
    return [n for n in found if math.isfinite(n)]


def _has_number(value: float, numbers: list[float]) -> bool:
    """Some number of the sorted list agrees with `value` to 3 s.f. (bisect: answers can hold thousands)."""
    window = abs(value) * 0.01  # wider than half a step in the 3rd significant figure
    return any(agrees(n, value, 3) for n in numbers[bisect_left(numbers, value - window): bisect_right(numbers, value + window)])


class _Answer:
    """What coverage reads from a reply, worked out once: its flat text, content words and sorted numbers."""

    def __init__(self, reply: str):
        from tutor.models import normalise_text

        self.flat, self.words, self.numbers = normalise_text(reply).lower(), content_words(reply), sorted(safe_numbers(reply))

    def covers(self, alternative: str) -> bool:
        from tutor.models import normalise_text

        words, numbers = content_words(alternative), set(safe_numbers(alternative))
        if not words and not numbers:  # nothing to match ("C"): the text itself must appear
            return normalise_text(alternative).lower() in self.flat
        if words and len(words & self.words) / len(words) < COVERAGE:
            return False
        return not numbers or sum(_has_number(v, self.numbers) for v in numbers) / len(numbers) >= COVERAGE


def score_mark_points(question: Question, reply: str) -> Score:
    """Marks of the marking points the reply covers, each part capped at its marks, over the point-marked marks.

    A point's alternatives ("...; accept ...") each count. Parts marked by levels
    are left out: they are judged, not matched (the feedback says so).
    """
    from tutor.models import Score

    answer = _Answer(reply)
    levelled = {level.part for level in question.mark_scheme.levels}
    got = total = 0
    found, missed, skipped = [], [], []
    for label, marks in [(p.label, p.marks) for p in question.parts] or [(None, question.marks)]:
        if label in levelled:
            skipped.append(f"({label})" if label else "the question")
            continue
        covered = 0
        for point in (p for p in question.mark_scheme.points if p.part == label):
            alternatives = [a.strip() for a in _ALTERNATIVE.split(point.text) if a.strip()] or [point.text]
            named = f"{f'({label}) ' if label else ''}{point.text} [{point.marks}]"
            if any(answer.covers(a) for a in alternatives):
                covered += point.marks
                found.append(named)
            else:
                missed.append(named)
        got += min(covered, marks)  # points may offer more marks than the part has (a max rule)
        total += marks
    notes = [f"found: {'; '.join(found) or 'none'}", f"missed: {'; '.join(missed) or 'none'}"]
    if skipped:
        notes.append(f"marked by levels, not by points: {', '.join(skipped)}")
    if not total:
        return Score(marks=0, out_of=1, feedback="no point-marked part: " + notes[-1])
    return Score(marks=got, out_of=total, feedback="\n".join(notes))


@hookimpl
def register_evaluators(register):
    from typing import get_args

    from tutor.models import Evaluator, QuestionFormat

    register(Evaluator(name="mcq", description="Extracts the chosen option and compares it with the key.", formats=["mcq"],
                       score=score_mcq))
    register(Evaluator(
        name="final-answer",
        description="Finds each of the question's final numeric answers in the reply, to its significant figures.",
        formats=["calculation"],
        score=score_final_answers,
    ))
    register(Evaluator(
        name="mark-points",
        description="Marks of the mark scheme's points the answer covers (half their content words and numbers to 3 s.f.), "
                    "each part capped at its marks; levelled parts are left out.",
        formats=list(get_args(QuestionFormat)),
        score=score_mark_points,
    ))
