"""Rule-based marking: the chosen letter of a multiple-choice reply, the numbers of a calculation."""

import re

from tutor import hookimpl
from tutor.models import Evaluator, Question, Score

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
    numbers = numbers_in(reply)
    found = [f for f in question.final_answers if any(agrees(n, f.value, f.sig_figs) for n in numbers)]
    missing = [f"{f.key or 'answer'}: {f.value:g} {f.unit}".strip() for f in question.final_answers if f not in found]
    return Score(marks=len(found), out_of=max(len(question.final_answers), 1), feedback="missing " + "; ".join(missing) if missing else "all final answers found")


@hookimpl
def register_evaluators(register):
    register(Evaluator(name="mcq", description="Extracts the chosen option and compares it with the key.", formats=["mcq"], score=score_mcq))
    register(Evaluator(
        name="final-answer",
        description="Finds each of the question's final numeric answers in the reply, to its significant figures.",
        formats=["calculation"],
        score=score_final_answers,
    ))
