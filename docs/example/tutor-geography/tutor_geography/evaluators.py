"""A rule-based check of case-study detail, the thing that separates Level 2 from Level 3.

IGCSE case-study questions ("For a named area you have studied...") cap an
answer that could be about anywhere: the top level needs place-specific
detail. Two cheap signs of it are a named place and a statistic. The check
cannot tell whether the facts are true; it tells a tutor model (and a
student) when an answer has none at all, which is the commonest reason a
case study stops at Level 2.
"""

from __future__ import annotations

import re

from tutor import Question, Score

# A capitalised name after words that introduce a place: "in Haiti", "near Léogâne",
# "of Port-au-Prince", "into the Mithi River", "cities such as Tokyo". Only the first
# letter must be a capital, so hyphenated names and accented letters count, and
# joiners like "de" may sit inside ("Rio de Janeiro").
_NAME = r"[A-ZÀ-Þ][\w'’-]*"
_PLACE = re.compile(
    r"\b(?i:in|at|on|near|from|around|across|along|between|beside|into|to|of|within|outside|throughout|such\s+as)"
    rf"\s+(?:the\s+)?({_NAME}(?:\s+(?:(?:de|da|do|del|la|le|au|upon|on)\s+)?{_NAME})*)"
)
# Capitalised words after "in" that are not places.
_NOT_PLACES = {
    "I", "A", "An", "The", "This", "These", "That", "Level", "Figure", "Table", "Answer", "DIAGRAM",
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
    "LEDC", "LEDCs", "MEDC", "MEDCs", "LIC", "LICs", "HIC", "HICs", "NIC", "NICs", "GDP", "GNI", "HDI", "CBD",
}

# A number is a statistic when it has a unit or a currency, a decimal point or a
# thousands comma. A bare "12" or "2010" is more likely a date than a measurement.
_NUMBER = r"\d[\d,]*(?:\.\d+)?"
_LARGE = r"(?:\s?(?:million|billion|thousand))?"
_UNIT = (
    r"%|per\s?cent|per\s+[\w²]+|km²|km2|km/h|km|mm|cm|m\b|metres|kilometres|miles|mph|°C|degrees|hectares|ha\b|tonnes|"
    r"million|billion|thousand|people|persons|residents|deaths|dead|homes|houses|buildings|years"
)
_STATISTIC = re.compile(
    rf"(?:(?:US)?[$£€]\s?{_NUMBER}{_LARGE})|(?:{_NUMBER}\s?(?:{_UNIT}))|(?:\d+,\d{{3}}|\d+\.\d+)", re.IGNORECASE
)


def named_places(text: str) -> list[str]:
    """Place names the text introduces with 'in', 'near', 'of'..., in order of appearance."""
    places = []
    for match in _PLACE.finditer(text):
        name = match.group(1)
        if name.split()[0] not in _NOT_PLACES and name not in places:
            places.append(name)
    return places


def statistics(text: str) -> list[str]:
    """Numbers with a unit, a currency, a decimal point or a thousands comma."""
    return [m.group(0).strip() for m in _STATISTIC.finditer(text)]


def score_case_study_detail(question: Question, answer: str) -> Score:
    """One mark for naming a specific place, one for giving at least one statistic."""
    places, stats = named_places(answer), statistics(answer)
    found = [
        f"named places: {', '.join(places[:3])}" if places else "no named place (write e.g. 'in Port-au-Prince, Haiti')",
        f"statistics: {', '.join(stats[:3])}" if stats else "no statistic (give a figure with its unit, e.g. '1.5 million people')",
    ]
    return Score(marks=bool(places) + bool(stats), out_of=2, feedback="; ".join(found))
