"""Marking agreement: the deterministic rule marker against an examiner's marks on real-looking student answers.

    python bench/marking.py [--file tests/data/marking_benchmark.jsonl] [--subject S] [--rows] [--json]

The benchmark is tests/data/marking_benchmark.jsonl: student answers to
questions of the three bundled sample banks (physics, economics, chemistry),
full, partial and wrong, each marked by hand the way a careful A-Level/IGCSE
examiner marks under the question's mark scheme (alternative wording, error
carried forward and implied working credited; vague, contradicted or
unit-less answers not). One JSON object a line:

    {"subject": "physics", "question_id": "<bank id>", "kind": "full" | "partial" | "wrong",
     "answer": "<the student's answer>", "awarded": [true, false, ...] | null, "marks": <int>,
     "note": "<the examiner's reason>", "injection": true (only on prompt-injection answers)}

`awarded` has one verdict per marking point of the question's mark scheme, in
the scheme's order, and `marks` is what those points add up to, each part
capped at its marks; a question marked by levels has `awarded` null and the
examiner's level mark. Every row is checked first (the question is in its
subject's bundled bank, `awarded` fits its points, `marks` fits `awarded`);
a bad row is printed as file:line and the run exits 1.

Each answer is then marked by the registered evaluator "mark-points" (the rule
marker eval and the GRPO rewards use; no model, a second or two in all), and,
per subject and overall:
  - rows, and how many the marker marks (it leaves levelled questions out);
  - Pearson r between the marker's total and the examiner's marks;
  - quadratic weighted kappa between the two, the marker's totals rounded to
    whole marks, over the marks from 0 to the highest either gives;
  - per-point accuracy: the marker's verdict on each marking point
    (PointMark.awarded) against the examiner's, with the points it gives that
    the examiner refused (over) and the ones it refuses that the examiner gave
    (missed);
  - the mean mark each gives to full, partial and wrong answers, and to the
    prompt-injection answers.
--rows prints every row with both marks and the points they disagree on;
--json prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "tests" / "data" / "marking_benchmark.jsonl"
SUBJECTS = ("physics", "economics", "chemistry")
KINDS = ("full", "partial", "wrong")
RULE = "mark-points"
FIELDS = {"subject": str, "question_id": str, "kind": str, "answer": str, "marks": int, "note": str}


class BenchmarkInvalid(ValueError):
    """Rows of the benchmark that cannot be used: `problems` lists each as 'file:line: what is wrong'."""

    def __init__(self, problems: list[str]):
        super().__init__(f"{len(problems)} bad row(s):\n" + "\n".join(problems))
        self.problems = problems


# --- the benchmark ---------------------------------------------------------------------------


@cache
def bank_questions(subject: str) -> dict:
    """Question id -> Question of the subject's bundled sample bank."""
    from tutor.bank import load_bank
    from tutor.registry import get_subject

    kit = get_subject(subject)
    return {q.id: q for q in load_bank(kit, Path(kit.subject.bank)).questions}


def question_of(row: dict):
    return bank_questions(row["subject"])[row["question_id"]]


def examiner_marks(question, awarded: list[bool]) -> int:
    """What the awarded points are worth: each part's points summed and capped at the part's marks."""
    parts = [(p.label, p.marks) for p in question.parts] or [(None, question.marks)]
    points = question.mark_scheme.points
    return sum(min(marks, sum(p.marks for p, given in zip(points, awarded, strict=True) if given and p.part == label))
               for label, marks in parts)


def row_problems(row: object) -> list[str]:
    """Why a row (one parsed line) cannot be used; [] when it can."""
    if not isinstance(row, dict):
        return ["not a JSON object"]
    found = [f"{name}: expected {kind.__name__}" for name, kind in FIELDS.items()
             if not isinstance(row.get(name), kind) or isinstance(row.get(name), bool)]
    unknown = sorted(set(row) - set(FIELDS) - {"awarded", "injection"})
    found += [f"unknown field {name!r}" for name in unknown]
    if found:
        return found
    if row["subject"] not in SUBJECTS:
        return [f"subject {row['subject']!r} is not one of {', '.join(SUBJECTS)}"]
    if row["kind"] not in KINDS:
        found.append(f"kind {row['kind']!r} is not one of {', '.join(KINDS)}")
    if not row["answer"].strip() or not row["note"].strip():
        found.append("answer and note must not be empty")
    if "injection" in row and row["injection"] is not True:
        found.append("injection: only `true` (leave it out otherwise)")
    question = bank_questions(row["subject"]).get(row["question_id"])
    if question is None:
        return found + [f"question {row['question_id']} is not in the bundled {row['subject']} bank"]
    scheme, awarded = question.mark_scheme, row.get("awarded")
    if scheme.points and scheme.levels:
        return found + ["the question is marked partly by points and partly by levels: not supported"]
    if scheme.levels:
        if awarded is not None:
            found.append("the question is marked by levels: awarded must be null")
    elif not isinstance(awarded, list) or not all(isinstance(a, bool) for a in awarded):
        found.append("awarded: expected a list of true/false, one per marking point")
    elif len(awarded) != len(scheme.points):
        found.append(f"awarded has {len(awarded)} verdicts; the question has {len(scheme.points)} marking points")
    elif row["marks"] != (due := examiner_marks(question, awarded)):
        found.append(f"marks is {row['marks']}, but the awarded points are worth {due}")
    if not 0 <= row["marks"] <= question.marks:
        found.append(f"marks {row['marks']} is outside 0..{question.marks}")
    return found


def load_benchmark(path: Path | str = DEFAULT) -> list[dict]:
    """The benchmark's rows, each with its `line` in the file; BenchmarkInvalid listing every bad row."""
    path = Path(path)
    rows, problems = [], []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            problems.append(f"{path}:{number}: not JSON: {err}")
            continue
        found = row_problems(row)
        problems += [f"{path}:{number}: {problem}" for problem in found]
        if not found:
            rows.append({**row, "line": number})
    seen: dict[tuple, int] = {}
    for row in rows:
        key = (row["subject"], row["question_id"], row["answer"].strip())
        if key in seen:
            problems.append(f"{path}:{row['line']}: the same answer as line {seen[key]}")
        seen.setdefault(key, row["line"])
    if problems:
        raise BenchmarkInvalid(problems)
    return rows


# --- marking and agreement -------------------------------------------------------------------


def mark_rows(rows: list[dict]) -> tuple[list[float | None], list[list[bool] | None]]:
    """The rule marker's total and per-point verdicts (in the mark scheme's order) for each row; None for both where it
    gives no mark (a question marked by levels, which it leaves out)."""
    from tutor.default_plugins.evaluators import point_parts
    from tutor.registry import registry

    marker = registry().evaluators[RULE]
    totals, point_awards = [], []
    for row in rows:
        question = question_of(row)
        if row["awarded"] is None:
            totals.append(None)
            point_awards.append(None)
            continue
        score = marker.score(question, row["answer"])
        marked = [p for _, _, points in point_parts(question)[0] for p in points]  # the order of score.points
        verdict = {id(point): mark.awarded for point, mark in zip(marked, score.points, strict=True)}
        totals.append(score.marks)
        point_awards.append([verdict[id(point)] for point in question.mark_scheme.points])
    return totals, point_awards


def pearson(xs: list[float], ys: list[float]) -> float | None:
    """Pearson's r; None with fewer than two pairs or when either side is constant."""
    import numpy as np

    if len(xs) < 2 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    return float(np.corrcoef(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float))[0, 1])


def quadratic_weighted_kappa(first: list[int], second: list[int]) -> float | None:
    """Cohen's kappa with quadratic weights over the whole marks 0..the highest either rater gives; None when it is
    undefined (no pairs, or both raters give one and the same mark throughout)."""
    import numpy as np

    if not first:
        return None
    size = max(max(first), max(second)) + 1
    observed = np.zeros((size, size))
    for a, b in zip(first, second, strict=True):
        observed[a, b] += 1
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / len(first)
    grid = np.arange(size)
    weights = (grid[:, None] - grid[None, :]) ** 2
    chance = float((weights * expected).sum())
    return None if chance == 0 else 1 - float((weights * observed).sum()) / chance


def agreement(rows: list[dict], totals: list[float | None], point_awards: list[list[bool] | None]) -> dict:
    """How far a marker's marks (totals, None where it gave none) and per-point verdicts (in each mark scheme's
    order, None where it gave none) agree with the examiner's marks and `awarded` of the same rows.

    {"rows", "marked", "levelled", "pearson", "qwk", "points", "point_accuracy", "over", "missed",
     "kinds": {kind: {"rows", "marker", "examiner"}}, "injection": {"rows", "marker", "examiner", "worst"}};
    a mean or a statistic is None where there is nothing to compute it from.
    """
    if not len(rows) == len(totals) == len(point_awards):
        raise ValueError(f"{len(rows)} rows, {len(totals)} totals and {len(point_awards)} point verdicts")
    marked = [i for i, total in enumerate(totals) if total is not None]
    human = [float(rows[i]["marks"]) for i in marked]
    machine = [float(totals[i]) for i in marked]
    pairs = [(given, ours) for row, ours_all in zip(rows, point_awards, strict=True)
             if row["awarded"] is not None and ours_all is not None
             for given, ours in zip(row["awarded"], ours_all, strict=True)]

    def means(members: list[int]) -> dict:
        scored = [i for i in members if totals[i] is not None]
        return {"rows": len(members),
                "marker": sum(totals[i] for i in scored) / len(scored) if scored else None,
                "examiner": sum(rows[i]["marks"] for i in scored) / len(scored) if scored else None}

    injected = [i for i, row in enumerate(rows) if row.get("injection")]
    injection = means(injected)
    injection["worst"] = max((totals[i] - rows[i]["marks"] for i in injected if totals[i] is not None), default=None)
    return {
        "rows": len(rows),
        "marked": len(marked),
        "levelled": sum(row["awarded"] is None for row in rows),
        "pearson": pearson(machine, human),
        "qwk": quadratic_weighted_kappa([_whole(m) for m in machine], [int(h) for h in human]),
        "points": len(pairs),
        "point_accuracy": sum(a == b for a, b in pairs) / len(pairs) if pairs else None,
        "over": sum(ours and not given for given, ours in pairs),
        "missed": sum(given and not ours for given, ours in pairs),
        "kinds": {kind: means([i for i, row in enumerate(rows) if row["kind"] == kind]) for kind in KINDS},
        "injection": injection,
    }


def _whole(marks: float) -> int:
    return math.floor(marks + 0.5)  # half up, not to even


def by_subject(rows: list[dict], totals: list, point_awards: list) -> dict[str, dict]:
    """agreement() for each subject present, and for all rows ("all")."""
    result = {}
    for subject in [s for s in SUBJECTS if any(row["subject"] == s for row in rows)]:
        members = [i for i, row in enumerate(rows) if row["subject"] == subject]
        result[subject] = agreement([rows[i] for i in members], [totals[i] for i in members], [point_awards[i] for i in members])
    result["all"] = agreement(rows, totals, point_awards)
    return result


# --- the report ------------------------------------------------------------------------------


def _figure(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(result: dict[str, dict]) -> None:
    headers = ["subject", "rows", "marked", "pearson r", "QWK", "points", "point acc.", "over", "missed",
               *[f"{kind} (ex.)" for kind in KINDS], "injection (ex.)"]
    lines = []
    for name, figures in result.items():
        kinds = [f"{_figure(k['marker'], '.2f')} ({_figure(k['examiner'], '.2f')})" for k in figures["kinds"].values()]
        inj = figures["injection"]
        lines.append([name, str(figures["rows"]), str(figures["marked"]), _figure(figures["pearson"]), _figure(figures["qwk"]),
                      str(figures["points"]), _figure(figures["point_accuracy"]), str(figures["over"]), str(figures["missed"]),
                      *kinds, f"{_figure(inj['marker'], '.2f')} ({_figure(inj['examiner'], '.2f')})"])
    widths = [max(len(cell) for cell in column) for column in zip(headers, *lines, strict=True)]
    for cells in [headers, *lines]:
        print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)))
    print("Mean marks per kind: the rule marker's, then the examiner's in brackets. Levelled questions are not marked by the "
          "rule marker and are left out of every figure but the row count.")


def print_rows(rows: list[dict], totals: list, point_awards: list) -> None:
    for row, total, ours in zip(rows, totals, point_awards, strict=True):
        question = question_of(row)
        flag = " injection" if row.get("injection") else ""
        print(f"line {row['line']}: {row['subject']} {row['question_id']} {row['kind']}{flag}: "
              f"marker {_figure(total, 'g')}, examiner {row['marks']} of {question.marks}")
        if row["awarded"] is None or ours is None:
            continue
        for point, given, got in zip(question.mark_scheme.points, row["awarded"], ours, strict=True):
            if given != got:
                side = "over: marker gives" if got else "missed: marker refuses"
                print(f"    {side} ({point.part or '-'}) {point.text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=DEFAULT, help="the benchmark (default: %(default)s)")
    parser.add_argument("--subject", choices=SUBJECTS, help="only this subject's rows")
    parser.add_argument("--rows", action="store_true", help="print each row's marks and the points the two disagree on")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    try:
        rows = load_benchmark(args.file)
    except BenchmarkInvalid as err:
        print("\n".join(err.problems), file=sys.stderr)
        sys.exit(1)
    if args.subject:
        rows = [row for row in rows if row["subject"] == args.subject]
    totals, point_awards = mark_rows(rows)
    result = by_subject(rows, totals, point_awards)
    if args.rows:
        print_rows(rows, totals, point_awards)
        print()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
