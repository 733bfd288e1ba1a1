"""Rule-based marking: the chosen letter of a multiple-choice reply, the numbers of a calculation,
the marking points an answer covers (with the passage that earns each), and the answer's form.

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
from itertools import accumulate, pairwise
from typing import TYPE_CHECKING

from tutor.hookspecs import hookimpl
from tutor.rewards_text import STOP_WORDS, stem

if TYPE_CHECKING:
    from tutor.models import MarkPoint, PointMark, Question, Score

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


# --- units ---------------------------------------------------------------------------

# A unit is read as powers of dimensions (length, mass, time, current, temperature,
# amount; and angle, percent and money, which match only themselves). Prefixes change
# the size, not the dimension: "km" and "m" are compatible (the number is checked apart).
_ENERGY, _POWER = {"L": 2, "M": 1, "T": -2}, {"L": 2, "M": 1, "T": -3}
_FORCE, _PRESSURE = {"L": 1, "M": 1, "T": -2}, {"L": -1, "M": 1, "T": -2}
_SYMBOLS: dict[str, dict[str, int]] = {  # SI symbols, each of which may take a prefix
    "m": {"L": 1}, "g": {"M": 1}, "s": {"T": 1}, "A": {"I": 1}, "mol": {"N": 1}, "N": _FORCE, "J": _ENERGY, "eV": _ENERGY,
    "W": _POWER, "Pa": _PRESSURE, "Hz": {"T": -1}, "Bq": {"T": -1}, "C": {"I": 1, "T": 1}, "V": {**_POWER, "I": -1},
    "Ω": {**_POWER, "I": -2}, "F": {"L": -2, "M": -1, "T": 4, "I": 2}, "T": {"M": 1, "T": -2, "I": -1},
    "Wb": {"L": 2, "M": 1, "T": -2, "I": -1}, "L": {"L": 3},
}
_NAMED = [  # names (plurals too), and symbols that take no prefix
    (("K", "kelvin", "°C"), {"Θ": 1}), (("M",), {"N": 1, "L": -3}), (("kWh",), _ENERGY), (("bar", "atm", "pascal"), _PRESSURE),
    (("min", "h", "hr", "yr", "second", "minute", "hour", "day", "year"), {"T": 1}), (("metre", "meter"), {"L": 1}),
    (("gram", "kilogram", "tonne"), {"M": 1}), (("joule",), _ENERGY), (("newton",), _FORCE), (("watt",), _POWER),
    (("volt",), {**_POWER, "I": -1}), (("ohm",), {**_POWER, "I": -2}), (("amp", "ampere"), {"I": 1}), (("mole",), {"N": 1}),
    (("coulomb",), {"I": 1, "T": 1}), (("hertz",), {"T": -1}), (("°", "rad", "degree", "radian"), {"angle": 1}),
    (("%", "percent"), {"%": 1}), (("dollar", "pound", "euro", "cent"), {"money": 1}),
]
_NAMES = {name: dims for names, dims in _NAMED for name in names} | {name + "s": dims for names, dims in _NAMED for name in names
                                                                     if len(name) > 2}
_PREFIXES = "pnµμmcdkMG"
_CURRENCY = "$£€¥"
_SCALE = re.compile(r"\s*(?:thousand|million|billion|trillion|bn)\b", re.IGNORECASE)  # "$40 billion", "6 million dollars"
_FACTOR = re.compile(r"(?P<symbol>°\s?C|°|%|per\s?cent|(?:(?![⁰¹²³⁴⁵⁶⁷⁸⁹])[^\W\d_])+)"
                     r"(?P<power>\s?\^\s?(?:[{(]\s?[-−+]?\d+\s?[})]|[-−+]?\d+)|\*\*\s?[-−+]?\d+|[⁻⁺]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+|[-−]?\d+(?![\d.]))?")

Unit = tuple[tuple[str, int], ...]  # sorted (dimension, power) pairs, e.g. m/s^2: (("L", 1), ("T", -2))


def _dimensions(symbol: str) -> dict[str, int] | None:
    symbol = "°C" if symbol[0] == "°" and symbol[-1] == "C" else "%" if re.fullmatch(r"per\s?cent", symbol, re.I) else symbol
    named = _NAMES.get(symbol) or (_NAMES.get(symbol.lower()) if len(symbol) > 3 else None)  # "Hours", but "MIN" is no minute
    if named or symbol in _SYMBOLS:
        return named or _SYMBOLS[symbol]
    return _SYMBOLS.get(symbol[1:]) if len(symbol) > 1 and symbol[0] in _PREFIXES else None


def _power(written: str | None) -> int:
    digits = re.sub(r"[^\d\-−⁻⁰¹²³⁴⁵⁶⁷⁸⁹]", "", written or "").translate(_SUPERSCRIPT).replace("−", "-")
    return int(digits) if digits.lstrip("-") else 1


def unit_after(text: str, end: int) -> Unit | None:
    """The unit written right after text[:end] ("2.5 m/s^2", "14 400 J", "3.0 x 10^8 m s-1", "6 billion dollars"),
    or None when none is: a bare number, or one followed by a word or an operator.

    A symbol glued to more letters or digits is no unit, so a coefficient's
    formula is read as a formula: "2Mg" has a unit (megagrams), "2MgO" none.
    """
    dims: dict[str, int] = {}
    pos = scale.end() if (scale := _SCALE.match(text, end)) else end
    pos += text[pos:pos + 1] == " "
    sign = 1
    while match := _FACTOR.match(text, pos):
        found, after = _dimensions(match["symbol"]), match.end()
        if found is None or (after < len(text) and (text[after].isalnum() or text[after] == "_")):
            break
        for dimension, power in found.items():
            dims[dimension] = dims.get(dimension, 0) + sign * power * _power(match["power"])
        pos, sign = after, 1
        if text[pos:pos + 1] == "/":
            pos, sign = pos + 1, -1
        elif text[pos:pos + 1] in (" ", "·", "⋅", ".") and text[pos + 1:pos + 2].strip():
            pos += 1
        else:
            break
    return tuple(sorted((d, p) for d, p in dims.items() if p)) or None


def number_unit(text: str, start: int, end: int) -> Unit | None:
    """The unit of the number at text[start:end]: a currency sign before it, else what unit_after reads after it."""
    before = text[max(0, start - 2):start].strip()
    if before and before[-1] in _CURRENCY:
        return (("money", 1),)
    return unit_after(text, end)


# --- marking points ------------------------------------------------------------------

# A point is earned by a few sentences of the answer (one, or a run of up to RUN
# in one paragraph) that hold at least half of its content words and at least
# half of its numbers (with a compatible unit), and whose negations do not turn
# it round. Half, not all: points carry bracketed synonyms and asides
# ("superpose (interfere)", "(and speed)") that one correct phrasing never uses
# all of. A few sentences, not the whole answer: words scattered over an answer
# about something else must not add up to a point. Words and numbers are judged
# apart so that "kg" alone cannot earn "2500 kg/m^3", nor a bare number an explanation.
COVERAGE = 0.5
RUN = 3  # sentences: working and an explanation often run over a few lines
NEGATED_SHARE = 1 / 3  # of the words a passage shares with a point: turned round this often, it says something else
_ALTERNATIVE = re.compile(r";\s*(?:or\s+)?(?:accept|allow)\b\s*:?", re.IGNORECASE)
# What a correct answer need not repeat: a leading label ("Safety: ", "Defining the problem: ", "B: ") and (asides);
# brackets without words ("(450 × 10^3)") are working, not asides.
_LABEL = re.compile(r"\A\s*(?:[^\W\d_][\w'’-]*\s+){0,3}[^\W\d_][\w'’-]*\s*:\s")
_ASIDE = re.compile(r"\([^()]*[^\W\d_]{2}[^()]*\)")
# Sentence ends: a line break, or . ! ? before a space (not after e.g., i.e., etc.: they end no sentence).
_SENTENCE_END = re.compile(r"\n|(?<=[.!?])\s+")  # spaces around a line break are trimmed off the sentences
_ABBREVIATION = re.compile(r"\b(?:e\.g|i\.e|etc|approx|cf|vs|fig|eq)\.\Z", re.IGNORECASE)
_PARAGRAPH = re.compile(r"\n\s*\n")
# Negation: a cue turns round the content word right after it in its clause ("does not *increase*", "no *work* is done").
_TOKEN = re.compile(r"(?P<word>[^\W\d_]+(?:['’][^\W\d_]+)?)|[,;:()\[\]=→]")
_NEGATIONS = frozenset(["not", "no", "never", "cannot", "without", "none", "nothing", "neither", "nor", "absence", "lack", "lacks"])
_FEW = frozenset(["few", "little"])  # "few close substitutes" denies them; "a few" does not
_CLAUSE_WORDS = frozenset(["but", "and", "or", "so", "because", "which", "that", "who", "while", "whilst", "whereas", "although",
                           "though", "however", "therefore", "hence", "thus", "when", "since", "if", "unless", "until"])


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of `text`, without the space around it."""
    spans, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        if not _ABBREVIATION.search(text, max(0, end.start() - 8), end.start()):
            spans.append((start, end.start()))
            start = end.end()
    spans.append((start, len(text)))
    trimmed = [(s + len(text[s:e]) - len(text[s:e].lstrip()), e - len(text[s:e]) + len(text[s:e].rstrip())) for s, e in spans]
    return [(s, e) for s, e in trimmed if s < e]


def polarity(text: str) -> tuple[dict[str, set[bool]], bool]:
    """({stem of each content word: how it is used}, whether the text negates anything at all).

    A use is True where a negation turns the word round ("does not *increase*",
    "no *work* is done", "*independent* of mass"), False where it is asserted.
    Only the word right after a cue: that is the denied word in the forms
    answers and mark schemes share ("no acid is left" and "none is left" both
    deny, one the acid, the other the leaving; a wider scope calls them
    opposites). Negation cues are not content words.
    """
    found: dict[str, set[bool]] = {}
    negating = negates = False
    tokens = [token["word"] for token in _TOKEN.finditer(text.lower())]
    for before, word, after in zip([None, *tokens], tokens, [*tokens[1:], None]):  # each word with the ones either side
        if word is None or word in _CLAUSE_WORDS:
            negating = False
        elif word == "independent" and after == "of":  # "independent of the mass" is "does not depend on the mass"
            found.setdefault(stem("depend"), set()).add(True)
            negates = True
        elif word in _NEGATIONS or word.endswith(("n't", "n’t")) or (word in _FEW and before != "a"):
            negating = after != "only"  # "not only ... but also" asserts
            negates = negates or negating
        elif len(word) > 1 and word not in STOP_WORDS:
            found.setdefault(stem(word), set()).add(negating)
            negating = False
    return found, negates


def essentials(point: str) -> str:
    """A marking point without what one correct phrasing need not repeat: its leading label and its (asides)."""
    text = _LABEL.sub(" ", point, count=1)
    while (stripped := _ASIDE.sub(" ", text)) != text:
        text = stripped
    return text.strip()


class _Reading:
    """One way a marking point may be earned: content words (each with how the point uses it) and numbers (with units).

    A number is the readings of one written number ("14 400" may be 14400, or
    14 and 400), each number once: "4" twice in a formula is one thing to find.
    """

    def __init__(self, text: str):
        from tutor.models import normalise_text

        self.flat = normalise_text(text).lower()
        uses, _ = polarity(text)
        self.words = set(uses)
        self.polarity = {word: next(iter(used)) for word, used in uses.items() if len(used) == 1}
        written: dict[tuple[int, int], list[float]] = {}
        for value, start, end in safe_number_spans(text):
            written.setdefault((start, end), []).append(value)
        numbers = {tuple(values): number_unit(text, start, end) for (start, end), values in written.items()}
        self.numbers = list(numbers.items())
        # A point that works something out ("..., so R = 3.0 Ω") has a result: the first number after its last
        # "=" outside brackets (an aside like "(accept 59.9 %)" is not it).
        equals = [m.start() for m in re.finditer("=", text) if text.count("(", 0, m.start()) == text.count(")", 0, m.start())]
        after = [values for (start, _), values in written.items() if equals and start > equals[-1]]
        self.result = list(numbers).index(tuple(after[0])) if after else None


def readings(point: str) -> list[_Reading]:
    """The ways a point may be earned: each alternative ("...; accept ..."), whole or by its essentials alone."""
    alternatives = [a.strip() for a in _ALTERNATIVE.split(point) if a.strip()] or [point]
    return [_Reading(text) for text in dict.fromkeys(t for a in alternatives for t in (a, essentials(a)) if t)]


def safe_number_spans(text: str) -> list[tuple[float, int, int]]:
    """numbers_with_spans, but finite values only and never raising (10^99999 overflows a float)."""
    try:
        found = numbers_with_spans(text)
    except (OverflowError, ValueError):  # retry line by line, dropping only the lines that fail
        found, offset = [], 0
        for line in text.splitlines(keepends=True):
            try:
                found += [(value, start + offset, end + offset) for value, start, end in numbers_with_spans(line)]
            except (OverflowError, ValueError):
                pass
            offset += len(line)
    return [n for n in found if math.isfinite(n[0])]


class _Passage:
    """Sentences of an answer as coverage reads them: span, content words with their uses, numbers with their units."""

    def __init__(self, start: int, end: int, flat: str, words: dict[str, set[bool]], negates: bool,
                 numbers: list[tuple[float, Unit | None, int]]):
        self.start, self.end, self.flat, self.words, self.negates = start, end, flat, words, negates
        self.numbers = sorted(numbers, key=lambda number: (number[0], number[2]))  # (value, unit, offset in the reply)
        self.values = [number[0] for number in self.numbers]

    def written(self, value: float) -> list[tuple[Unit | None, int]]:
        """(unit, offset) of each number here that is `value` to 3 s.f. (bisect: answers can hold thousands)."""
        spread = abs(value) * 0.01  # wider than half a step in the 3rd significant figure
        near = self.numbers[bisect_left(self.values, value - spread): bisect_right(self.values, value + spread)]
        return [(unit, offset) for number, unit, offset in near if agrees(number, value, 3)]

    @staticmethod
    def joined(passages: list[_Passage]) -> _Passage:
        words: dict[str, set[bool]] = {}
        for passage in passages:
            for word, uses in passage.words.items():
                words[word] = words.get(word, set()) | uses
        return _Passage(passages[0].start, passages[-1].end, " ".join(p.flat for p in passages), words,
                        any(p.negates for p in passages), [n for p in passages for n in p.numbers])


class _Answer:
    """A reply cut into sentences, read once; the passages a point may be found in are built from them on demand."""

    def __init__(self, reply: str):
        from tutor.models import normalise_text

        self.reply = reply
        spans = sentences(reply)
        numbers: list[list] = [[] for _ in spans]
        starts = [start for start, _ in spans]
        for value, start, end in safe_number_spans(reply):  # each number to the sentence it starts in
            if (i := bisect_right(starts, start) - 1) >= 0 and start < spans[i][1]:
                numbers[i].append((value, number_unit(reply, start, end), start))
        self.sentences = [_Passage(start, end, normalise_text(reply[start:end]).lower(), *polarity(reply[start:end]), found)
                          for (start, end), found in zip(spans, numbers, strict=True)]
        breaks = [bool(_PARAGRAPH.search(reply, before, after)) for (_, before), (after, _) in pairwise(spans)]
        self.paragraph = [0, *accumulate(breaks)]  # a passage never crosses a blank line
        self.words = {word for sentence in self.sentences for word in sentence.words}
        self._passages: dict[tuple[int, int], _Passage] = {}
        self._blank_lines = [m.start() for m in _PARAGRAPH.finditer(reply)]
        self._headings: dict[Unit, list[int]] = {}  # unit -> where a table heading gives it: "f / cm"
        for m in re.finditer(r" / ", reply):
            if unit := unit_after(reply, m.end() - 1):
                self._headings.setdefault(unit, []).append(m.start())

    def heads_column(self, unit: Unit, offset: int) -> bool:
        """Whether `unit` heads a table column the number at `offset` may stand in: "f / cm" earlier in its block of lines."""
        block = self._blank_lines[i - 1] if (i := bisect_right(self._blank_lines, offset)) else 0
        headings = self._headings.get(unit, [])
        first = bisect_left(headings, block)
        return first < len(headings) and headings[first] < offset

    def near(self, reading: _Reading) -> list[tuple[int, int]]:
        """(first, last) sentence of each passage that holds something of the reading, shortest passages first."""
        def holds(sentence: _Passage) -> bool:
            if not reading.words and not reading.numbers:
                return reading.flat in sentence.flat
            return bool(reading.words & sentence.words.keys()) or any(sentence.written(v) for values, _ in reading.numbers
                                                                       for v in values)

        runs = {(first, first + length - 1) for i, sentence in enumerate(self.sentences) if holds(sentence)
                for length in range(1, RUN + 1) for first in range(max(0, i - length + 1), i + 1)
                if first + length <= len(self.sentences) and self.paragraph[first] == self.paragraph[first + length - 1]}
        return sorted(runs, key=lambda run: (run[1] - run[0], run[0]))

    def passage(self, first: int, last: int) -> _Passage:
        if (first, last) not in self._passages:
            self._passages[first, last] = _Passage.joined(self.sentences[first:last + 1])
        return self._passages[first, last]


def _number_found(values: tuple[float, ...], unit: Unit | None, passage: _Passage, answer: _Answer) -> str:
    """'ok' when the passage writes the number (to 3 s.f.) with a compatible unit; else why not: 'missing', 'wrong unit', 'no unit'.

    A number written bare where the point gives it a unit is not the point:
    examiners withhold a final answer's mark for a missing unit. A unit heading
    its table column ("f / cm") counts as written with it.
    """
    written = [found for value in values for found in passage.written(value)]
    if not written:
        return "missing"
    if unit is None or any(u == unit or (u is None and answer.heads_column(unit, offset)) for u, offset in written):
        return "ok"
    return "wrong unit" if any(u is not None for u, _ in written) else "no unit"


def _enough(found: int, needed: int, at_least: int = 1) -> bool:
    """Half of what a point asks for, and `at_least` of it (when it asks for that much)."""
    return found >= COVERAGE * needed and found >= min(at_least, needed)


def _judge(reading: _Reading, passage: _Passage, answer: _Answer) -> tuple[float, str]:
    """How well a passage covers one reading of a point: (how much of it, in [0, 1]; '' when covered, else why not).

    A negation turns the point round when the passage asserts a word the point
    denies, and either negates nothing itself or does so for a third of the
    words they share; or when the passage denies a third of the words they
    share that the point asserts.
    """
    if not reading.words and not reading.numbers:  # nothing to match ("C", "S(g) → S⁺(g) + e⁻"): the text itself must appear
        return (1.0, "") if reading.flat in passage.flat else (0.0, "not in the answer")
    matched = reading.words & passage.words.keys()
    found = [_number_found(values, unit, passage, answer) for values, unit in reading.numbers]
    share = (len(matched) + found.count("ok")) / (len(reading.words) + len(found))
    # Without numbers to pin it down, one word of several is too little: "a rise in incomes" is not "output rises".
    if not _enough(len(matched), len(reading.words), at_least=1 if reading.numbers else 2):
        return share, "not in the answer"
    # Half the numbers will do for the working ("1/R = 1/4.0 + 1/12"), but not without the point's result
    # ("so R = 3.0 Ω"): a reply that copies the working's numbers and ends elsewhere has not earned it.
    # The result itself, with its unit, earns the point as examiners award a correct answer without working.
    result = found[reading.result] if reading.result is not None and len(found) > 1 else None
    if result == "missing":
        return share, "its result is not in the answer"
    if result != "ok" and not _enough(found.count("ok"), len(found)):
        return share, ("a number with the wrong unit" if "wrong unit" in found else
                       "a number without its unit" if "no unit" in found else "its numbers are not in the answer")
    asserted = [word for word in matched if reading.polarity.get(word) is True and passage.words[word] == {False}]
    if asserted and (not passage.negates or len(asserted) >= NEGATED_SHARE * len(matched)):
        return share, "the answer asserts what the point denies"
    denied = [word for word in matched if passage.words[word] == {True} and reading.polarity.get(word) is False]
    if len(denied) >= NEGATED_SHARE * len(matched) > 0:
        return share, "the answer negates it"
    return share, ""


# Why a point was missed, the nearest miss first.
_MISSES = ["the answer negates it", "the answer asserts what the point denies", "a number with the wrong unit",
           "a number without its unit", "its result is not in the answer", "its numbers are not in the answer", "not in the answer"]


def _mark_point(point: MarkPoint, answer: _Answer) -> PointMark:
    """The point as the answer earns it: the shortest passage that covers a reading of it (quoted), or the nearest miss."""
    from tutor.models import PointMark

    ways = readings(point.text)
    tries = sorted((last - first, first, last, i) for i, reading in enumerate(ways) for first, last in answer.near(reading))
    nearest = (len(_MISSES) - 1, 0.0)
    for _, first, last, i in tries:
        passage = answer.passage(first, last)
        share, why = _judge(ways[i], passage, answer)
        if not why:
            return PointMark(text=point.text, part=point.part, marks=point.marks, awarded=True,
                             evidence=answer.reply[passage.start:passage.end], span=(passage.start, passage.end))
        nearest = min(nearest, (_MISSES.index(why), -share))
    why = _MISSES[nearest[0]]
    if why == "not in the answer" and any(r.words and _enough(len(r.words & answer.words), len(r.words), 2) for r in ways):
        why = "its words are spread over the answer, not in one passage"
    return PointMark(text=point.text, part=point.part, marks=point.marks, awarded=False, why=why)


def point_parts(question: Question) -> tuple[list[tuple[str | None, int, list[MarkPoint]]], list[str]]:
    """([(label, marks, marking points)] of each part marked by points (None for a question without parts),
    the names of the parts marked by levels): the marks both coverage markers award, and what they leave out."""
    levelled = {level.part for level in question.mark_scheme.levels}
    parts = [(p.label, p.marks) for p in question.parts] or [(None, question.marks)]
    points = question.mark_scheme.points
    marked = [(label, marks, [p for p in points if p.part == label]) for label, marks in parts if label not in levelled]
    return marked, [f"({label})" if label else "the question" for label, _ in parts if label in levelled]


def points_score(question: Question, marks: list[PointMark]) -> Score:
    """A Score from one PointMark per marking point of point_parts, in its order: the marks of the awarded points,
    each part capped at its marks (points may offer more than a part has: a max rule), over the point-marked marks."""
    from tutor.models import Score

    parts, levelled = point_parts(question)
    got = total = 0
    found, missed = [], []
    marks_left = iter(marks)
    for label, part_marks, points in parts:
        covered = 0
        for point, mark in zip(points, marks_left):  # `marks` runs on over the parts, in order
            named = f"{f'({label}) ' if label else ''}{point.text} [{point.marks}]"
            (found if mark.awarded else missed).append(named)
            covered += point.marks if mark.awarded else 0
        got += min(covered, part_marks)
        total += part_marks
    notes = [f"found: {'; '.join(found) or 'none'}", f"missed: {'; '.join(missed) or 'none'}"]
    if levelled:
        notes.append(f"marked by levels, not by points: {', '.join(levelled)}")
    if not total:
        return Score(marks=0, out_of=1, feedback="no point-marked part: " + notes[-1])
    return Score(marks=got, out_of=total, feedback="\n".join(notes), points=marks)


def score_mark_points(question: Question, reply: str) -> Score:
    """Marks of the marking points the reply covers, each part capped at its marks, over the point-marked marks.

    A point's alternatives ("...; accept ...") each count. Every point gets a
    PointMark: the passage of the reply that earns it, quoted with its offsets,
    or why none does. Parts marked by levels are left out: they are judged, not
    matched (the feedback says so).
    """
    answer = _Answer(reply)
    parts, _ = point_parts(question)
    return points_score(question, [_mark_point(point, answer) for _, _, points in parts for point in points])


def covered_points(texts: list[str], reply: str) -> list[PointMark]:
    """One PointMark per text, read as a marking point: what `mark` estimates a levelled part from (its indicative content)."""
    from tutor.models import MarkPoint

    answer = _Answer(reply)
    return [_mark_point(MarkPoint(text=text), answer) for text in texts]


# --- form ----------------------------------------------------------------------------


def score_form(question: Question, reply: str) -> Score:
    """1 when the reply has its type's form (answers.answer_flaws: not empty, DIAGRAM markers well formed and as the
    type's diagram policy wants, length in the type's word band, and for an MCQ a committed choice), else 0 with the flaws."""
    from tutor.answers import answer_flaws
    from tutor.models import Score
    from tutor.registry import get_subject, registry

    qtype = get_subject(question.subject).type(question.type)
    flaws = answer_flaws(qtype, reply, question, registry().evaluators["mcq"])
    return Score(marks=0 if flaws else 1, out_of=1, feedback="; ".join(flaw.message for flaw in flaws) or "well formed")


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
        description="Marks of the mark scheme's points the answer covers: half their content words and numbers (3 s.f., "
                    "with a compatible unit) within a few sentences, not turned round by a negation; each part capped at its "
                    "marks; levelled parts are left out.",
        formats=list(get_args(QuestionFormat)),
        score=score_mark_points,
    ))
    register(Evaluator(
        name="form",
        description="1 when the answer has its type's form: length in the word band, (DIAGRAM: ...) markers as the type's "
                    "diagram policy wants, and for an MCQ a final 'Answer: X' line; else 0, with what is wrong.",
        formats=list(get_args(QuestionFormat)),
        score=score_form,
    ))
