"""The core's GRPO rewards, registered through the same hook as any plugin's.

Every reward maps a RewardBatch to one score in [0, 1] per completion and is
total over completions: empty, huge or unicode garbage scores low, never raises.
The models are imported where they are used: importing this module (as listing
the plugins for `tutor --help` does) must not build them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from tutor.answers import answer_flaws, answer_words, question_text
from tutor.errors import TutorError
from tutor.hookspecs import hookimpl
from tutor.registry import get_subject, registry
from tutor.rewards_text import tfidf_cosine

if TYPE_CHECKING:
    from tutor.models import Question, QuestionType, RewardBatch

# --- rewards built from evaluators --------------------------------------------------------


def from_evaluator(name: str, judges: Callable[[Question], bool] = lambda question: True) -> Callable[[RewardBatch], list[float]]:
    """A reward that is evaluator `name`'s fraction of the marks, for each completion whose question it judges (else 0).

    The evaluator is looked up when the reward scores, not when it registers: the
    registry is still being built then, and the lookup finds the evaluator a
    plugin registered, so reward and eval always judge alike.
    """

    def score(batch: RewardBatch) -> list[float]:
        evaluator = registry().evaluators[name]
        return [evaluator.score(q, c).fraction if q is not None and judges(q) else 0.0
                for q, c in zip(batch.questions, batch.completions, strict=True)]

    score.__name__ = name.replace("-", "_")
    return score


mcq_correct = from_evaluator("mcq", lambda question: question.is_mcq)
mark_points = from_evaluator("mark-points")  # levelled-only questions score 0: the evaluator finds no point-marked part


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
        qtype = types.get(question.type) if question is not None else None
        flaws = {flaw.rule for flaw in answer_flaws(qtype, completion)}  # bank validation's rule; the key is mcq-correct's reward
        if "markers" in flaws:
            scores.append(0.0)
            continue
        if qtype is None:  # nothing to measure against: well-formed is all we can reward
            scores.append(1.0)
            continue
        score = _length_factor(answer_words(completion), qtype)
        if flaws & {"diagram-missing", "diagram-forbidden"}:
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
        raise TutorError("the diagram-compiles reward needs RewardBatch.compile, a (format, code) -> error-or-None function; "
                         "the batch has none")
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
    from tutor.models import normalise_text

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
    from tutor.models import Reward

    register(Reward(name="mcq-correct", task="answer", score=mcq_correct,
                    description="The mcq evaluator: 1.0 when an MCQ completion chooses the key, else 0."))
    register(Reward(name="mark-points", task="answer", score=mark_points,
                    description="The mark-points evaluator's share of the point-marked marks whose marking points the answer covers."))
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
