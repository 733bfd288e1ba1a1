"""Rule-based marking of multiple choice: pull the chosen letter out of free text."""

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


@hookimpl
def register_evaluators(register):
    register(Evaluator(name="mcq", description="Extracts the chosen option and compares it with the key.", formats=["mcq"], score=score_mcq))
