"""The core's GRPO rewards, registered through the same hook as any plugin's.

Every reward maps a RewardBatch to one score in [0, 1] per completion and is
total over completions: empty, huge or unicode garbage scores low, never raises.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right

from tutor import hookimpl
from tutor.default_plugins.evaluators import agrees, numbers_in, score_mcq
from tutor.errors import TutorError
from tutor.markers import MarkerError, find_diagrams, replace_diagrams
from tutor.models import Question, QuestionType, Reward, RewardBatch, normalise_text
from tutor.registry import get_subject, registry
from tutor.rewards_text import content_words, tfidf_cosine


def mcq_correct(batch: RewardBatch) -> list[float]:
    return [score_mcq(q, c).fraction if q is not None and q.is_mcq else 0.0 for q, c in zip(batch.questions, batch.completions, strict=True)]


# --- mark-points ------------------------------------------------------------------------

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


def _point_terms(question: Question) -> list[tuple[str | None, int, list[tuple[set[str], list[float], str]]]]:
    """(part, marks, alternatives) per marking point; an alternative is (words, numbers, text)."""
    out = []
    for point in question.mark_scheme.points:
        alternatives = [a.strip() for a in _ALTERNATIVE.split(point.text) if a.strip()] or [point.text]
        out.append((point.part, point.marks, [(content_words(a), safe_numbers(a), a) for a in alternatives]))
    return out


def _covered(words: set[str], numbers: list[float], text: str, flat: str, answer_words: set[str], answer_numbers: list[float]) -> bool:
    """Whether one alternative of a point is in the answer (`flat`: its normalised lower-case text)."""
    if not words and not numbers:  # nothing to match ("C"): the text itself must appear
        return normalise_text(text).lower() in flat
    if words and len(words & answer_words) / len(words) < COVERAGE:
        return False
    distinct = set(numbers)
    return not distinct or sum(_has_number(v, answer_numbers) for v in distinct) / len(distinct) >= COVERAGE


def mark_points(batch: RewardBatch) -> list[float]:
    """Marks of the covered points over the marks of the point-marked parts (levelled parts are skipped)."""
    terms: dict[int, list] = {}
    scores = []
    for question, completion in zip(batch.questions, batch.completions, strict=True):
        if question is None:
            scores.append(0.0)
            continue
        if id(question) not in terms:  # a prompt's completions share one question: parse its scheme once
            terms[id(question)] = _point_terms(question)
        points = terms[id(question)]
        answer = (normalise_text(completion).lower(), content_words(completion), sorted(safe_numbers(completion)))
        levelled = {lv.part for lv in question.mark_scheme.levels}
        got = total = 0
        for label, marks in [(p.label, p.marks) for p in question.parts] or [(None, question.marks)]:
            if label in levelled:
                continue
            covered = sum(m for part, m, alts in points if part == label and any(_covered(w, n, t, *answer) for w, n, t in alts))
            got += min(covered, marks)  # points may offer more marks than the part has (a max rule)
            total += marks
        scores.append(got / total if total else 0.0)
    return scores


# --- format-length ----------------------------------------------------------------------

MCQ_SHORT = 60  # words: an MCQ reply this short is never too long, whatever the band says


def _length_factor(words: int, qtype: QuestionType) -> float:
    """1 inside the band, falling linearly to 0 at half the minimum and at double the maximum."""
    band = qtype.answer_words
    if qtype.format == "mcq":
        low, high = 0, max(band[1] if band else 0, MCQ_SHORT)
    elif band is None:
        return 1.0
    else:
        low, high = band
    if words < low:
        return max(0.0, (words - low / 2) / (low / 2))
    if words > high:
        return max(0.0, (2 * high - words) / high)
    return 1.0


def _types(subject: str) -> dict[str, QuestionType]:
    try:
        return get_subject(subject).types
    except TutorError:
        return {}


def format_length(batch: RewardBatch) -> list[float]:
    types = _types(batch.subject.name)
    scores = []
    for question, completion in zip(batch.questions, batch.completions, strict=True):
        try:
            markers = find_diagrams(completion)
        except MarkerError:
            scores.append(0.0)
            continue
        qtype = types.get(question.type) if question is not None else None
        if qtype is None:  # nothing to measure against: well-formed is all we can reward
            scores.append(1.0)
            continue
        score = _length_factor(len(replace_diagrams(completion, lambda marker: "").split()), qtype)
        if (qtype.diagrams == "required" and not markers) or (qtype.diagrams == "none" and markers):
            score *= 0.5
        scores.append(score)
    return scores


# --- diagram-compiles -------------------------------------------------------------------

_LATEX_BLOCK = re.compile(r"```(?:latex|tex)[ \t]*\n(.*?)```", re.DOTALL)


def diagram_code(completion: str, format_name: str) -> str:
    """The code of a diagram completion: its ```latex block, as the dataset trains, else what the format extracts."""
    if block := _LATEX_BLOCK.search(completion):
        return block.group(1).strip()
    fmt = registry().formats.get(format_name)
    return fmt.extract(completion) if fmt else ""


def diagram_compiles(batch: RewardBatch) -> list[float]:
    if batch.compile is None:
        raise TutorError("the diagram-compiles reward needs RewardBatch.compile, a (format, code) -> error-or-None function; the batch has none")
    results: dict[tuple[str, str], float] = {}
    scores = []
    for fmt, completion in zip(batch.formats, batch.completions, strict=True):
        code = diagram_code(completion, fmt)
        if not code:
            scores.append(0.0)
            continue
        if (fmt, code) not in results:
            results[fmt, code] = 1.0 if batch.compile(fmt, code) is None else 0.0
        scores.append(results[fmt, code])
    return scores


# --- novelty and diversity (question setting) -------------------------------------------

# The rule: a set question more than 0.85 TF-IDF-similar to a bank
# question is a copy with cosmetic edits, and earns nothing.
NOVELTY_THRESHOLD = 0.85


def question_text(question: Question) -> str:
    return "\n".join([question.stem, *(p.text for p in question.parts), *question.options.values()])


def novelty(batch: RewardBatch) -> list[float]:
    scores = [0.0] * len(batch)
    live = [i for i, c in enumerate(batch.completions) if c.strip()]
    if not live:
        return scores
    bank = [question_text(q) for q in batch.bank]
    texts = [batch.completions[i] for i in live]
    nearest = tfidf_cosine(texts, bank, bank + texts).max(axis=1) if bank else [0.0] * len(live)
    for i, similarity in zip(live, nearest, strict=True):
        scores[i] = 1.0 if similarity < NOVELTY_THRESHOLD else 0.0
    return scores


def diversity(batch: RewardBatch) -> list[float]:
    """1 - the highest similarity to another completion of the same prompt; an empty completion gets 0."""
    texts = batch.completions
    sims = tfidf_cosine(texts, texts, texts) if texts else None
    flat = [normalise_text(t) for t in texts]
    scores = []
    for i, text in enumerate(texts):
        if not text.strip():
            scores.append(0.0)
            continue
        others = [j for j, g in enumerate(batch.groups) if g == batch.groups[i] and j != i]
        # Identical texts are similarity 1 exactly (cosine only gets to 1 - rounding).
        nearest = max((1.0 if flat[j] == flat[i] else float(sims[i, j]) for j in others), default=0.0)
        scores.append(min(1.0, max(0.0, 1.0 - nearest)))
    return scores


@hookimpl
def register_rewards(register):
    register(Reward(name="mcq-correct", description="1.0 when an MCQ completion chooses the key, else 0.", task="answer", score=mcq_correct))
    register(Reward(
        name="mark-points", task="answer", score=mark_points,
        description="Share of the point-marked marks whose marking points the answer covers (half their content words and numbers to 3 s.f.).",
    ))
    register(Reward(
        name="format-length", task="answer", score=format_length,
        description="1.0 inside the type's answer_words band, linear to 0 at half the minimum or double the maximum; "
                    "0 for malformed DIAGRAM markers, halved when they break the type's diagram policy.",
    ))
    register(Reward(
        name="diagram-compiles", task="diagram", score=diagram_compiles,
        description="1.0 when the code in the completion's ```latex block compiles in the requested format, else 0.",
    ))
    register(Reward(
        name="novelty", task="set", score=novelty,
        description="1.0 when a set question's TF-IDF cosine to every bank question is below 0.85, else 0 (and 0 when empty).",
    ))
    register(Reward(
        name="diversity", task="set", score=diversity,
        description="1 - the highest TF-IDF cosine to another completion of the same prompt; 1.0 alone, 0 for duplicates.",
    ))
