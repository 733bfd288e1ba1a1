"""How far the two coverage markers can be trusted: gold answers, shuffled answers, and their agreement.

A coverage marker is useful when a full-mark answer scores near full marks
and an answer to another question scores near zero. So every question of a
bank with a gold answer and point-marked parts is marked twice by each
marker: with its own gold answer, and with the gold answer of another
question of the same bank (a seeded derangement: no question keeps its own).
With the model judge as well, the two markers' verdicts on each marking
point are compared: percent agreement, and Cohen's kappa, which discounts
the agreement two markers would reach by chance (near-certain when both
award most gold points and refuse most shuffled ones).

`tutor --subject S eval markers [--judge teacher]` prints agreement_rows.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from statistics import mean
from typing import TYPE_CHECKING

from ..errors import TutorError

if TYPE_CHECKING:
    from ..bank import Bank
    from ..models import Question, Score
    from ..registry import SubjectKit

RULE = "mark-points"  # the deterministic marker: the evaluator's name, as in eval's metrics
JUDGE = "judge"
CONDITIONS = ("gold", "shuffled")
ALL = "all"


def marker_agreement(kit: SubjectKit, bank: Bank, *, judge: Callable[..., list[Score | None]] | None = None, seed: int = 0) -> dict:
    """Mean fraction of the point-marked marks each marker gives gold and shuffled answers, per question format and
    for all; with `judge` (mark_with_judge bound to a workspace: judge(items, advance=...)), also the per-point
    agreement of the two markers.

    {"questions": n, "seed": seed, "markers": [...], "formats": {format or "all": {"questions": n, "mark-points":
    {"gold": mean, "shuffled": mean}, "judge": {"gold": mean, "shuffled": mean, "judged": n}, "agreement": {"points": n,
    "percent": p, "kappa": k or None}}}}; the judge's means are over the answers it returned a mark for.
    """
    from ..console import progress
    from ..registry import registry

    questions = [q for q in bank.questions if bank.answers_to(q.id) and _point_marked(q)]
    if len(questions) < 2:
        raise TutorError(f"{len(questions)} question(s) of the bank have a gold answer and marking points: at least 2 are needed "
                         f"to compare gold with shuffled answers (gold answers come from `tutor --subject {kit.name} teach answers`)")
    gold = [bank.answers_to(q.id)[0].text for q in questions]
    items = {"gold": list(zip(questions, gold, strict=True)), "shuffled": list(zip(questions, _deranged(gold, seed), strict=True))}
    rule = registry().evaluators[RULE]
    scores = {RULE: {c: [rule.score(q, reply) for q, reply in items[c]] for c in CONDITIONS}}
    if judge is not None:
        with progress(2 * len(questions), "judge: marking gold and shuffled answers") as advance:
            judged = judge(items["gold"] + items["shuffled"], advance=advance)
        scores[JUDGE] = {"gold": judged[:len(questions)], "shuffled": judged[len(questions):]}
    formats = [kit.type(q.type).format for q in questions]
    groups = {ALL: list(range(len(questions))), **{f: [i for i, g in enumerate(formats) if g == f] for f in sorted(set(formats))}}
    return {"questions": len(questions), "seed": seed, "markers": list(scores),
            "formats": {name: _summary(scores, members) for name, members in groups.items()}}


def _point_marked(question: Question) -> bool:
    from ..default_plugins.evaluators import point_parts

    return bool(point_parts(question)[0])


def _deranged(answers: list[str], seed: int) -> list[str]:
    """The answers moved so that none stays at its own index: a seeded shuffle of the positions, each given the next one's."""
    order = list(range(len(answers)))
    random.Random(seed).shuffle(order)
    moved = [""] * len(answers)
    for here, there in zip(order, order[1:] + order[:1], strict=True):
        moved[here] = answers[there]
    return moved


def _summary(scores: dict[str, dict[str, list[Score | None]]], members: list[int]) -> dict:
    summary: dict = {"questions": len(members)}
    for marker, by_condition in scores.items():
        found = {c: [by_condition[c][i] for i in members if by_condition[c][i] is not None] for c in CONDITIONS}
        summary[marker] = {c: mean(s.fraction for s in found[c]) if found[c] else None for c in CONDITIONS}
        if marker == JUDGE:
            summary[marker]["judged"] = sum(len(found[c]) for c in CONDITIONS)
    if JUDGE in scores:
        pairs = [(r.awarded, j.awarded) for c in CONDITIONS for i in members if (judged := scores[JUDGE][c][i]) is not None
                 for r, j in zip(scores[RULE][c][i].points, judged.points, strict=True)]
        summary["agreement"] = {"points": len(pairs), **agreement(pairs)}
    return summary


def agreement(pairs: list[tuple[bool, bool]]) -> dict:
    """Percent agreement and Cohen's kappa of two markers' verdicts on the same points (kappa None when chance
    agreement is certain, as when both markers give every point the same verdict)."""
    if not pairs:
        return {"percent": None, "kappa": None}
    observed = sum(a == b for a, b in pairs) / len(pairs)
    first, second = sum(a for a, _ in pairs) / len(pairs), sum(b for _, b in pairs) / len(pairs)
    chance = first * second + (1 - first) * (1 - second)
    return {"percent": 100 * observed, "kappa": (observed - chance) / (1 - chance) if chance < 1 else None}


def agreement_rows(result: dict) -> tuple[list[str], list[tuple[str, ...]]]:
    """The table `eval markers` prints: one row per question format and one for all, each marker's mean on gold and
    shuffled answers, and, when the judge ran, the points compared, percent agreement and kappa."""
    judged = JUDGE in result["markers"]
    headers = ["format", "questions", f"{RULE} gold", f"{RULE} shuffled"]
    if judged:
        headers += ["judge gold", "judge shuffled", "points", "agreement", "kappa"]
    rows = []
    for name, summary in sorted(result["formats"].items(), key=lambda item: item[0] == ALL):  # "all" last
        row = [name, str(summary["questions"]), _fraction(summary[RULE]["gold"]), _fraction(summary[RULE]["shuffled"])]
        if judged:
            agreed = summary["agreement"]
            row += [_fraction(summary[JUDGE]["gold"]), _fraction(summary[JUDGE]["shuffled"]), str(agreed["points"]),
                    "-" if agreed["percent"] is None else f"{agreed['percent']:.1f}%",
                    "-" if agreed["kappa"] is None else f"{agreed['kappa']:.2f}"]
        rows.append(tuple(row))
    return headers, rows


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
