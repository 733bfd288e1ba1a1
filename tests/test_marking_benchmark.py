"""The marking benchmark (tests/data/marking_benchmark.jsonl): examiner-marked student answers, and how closely the
rule marker "mark-points" agrees with them (bench/marking.py).

The floors sit well below what the marker measured when they were set (all rows: Pearson r 0.785, quadratic weighted
kappa 0.774, per-point accuracy 0.761; physics, the lowest subject: r 0.659, kappa 0.610, accuracy 0.707): a change to
the marker that loses them has made it markedly worse at marking real answers.
"""

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from tutor.bank import load_bank
from tutor.registry import get_subject

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "marking_benchmark.jsonl"
SUBJECTS = ("physics", "economics", "chemistry")


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_marking", ROOT / "bench" / "marking.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


marking = _bench_module()


@pytest.fixture(scope="module")
def banks():
    """Subject -> question id -> Question, read from the bundled sample banks (not through bench/marking.py)."""
    found = {}
    for subject in SUBJECTS:
        kit = get_subject(subject)
        found[subject] = {q.id: q for q in load_bank(kit, Path(kit.subject.bank)).questions}
    return found


@pytest.fixture(scope="module")
def raw_rows():
    return [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def marked():
    """(rows, the rule marker's totals, its per-point verdicts, agreement per subject and for all)."""
    rows = marking.load_benchmark(DATA)
    totals, point_awards = marking.mark_rows(rows)
    return rows, totals, point_awards, marking.by_subject(rows, totals, point_awards)


# --- the data -------------------------------------------------------------------------------


def test_benchmark_is_large_enough_and_mixed(raw_rows):
    assert len(raw_rows) >= 60
    per_subject = Counter(row["subject"] for row in raw_rows)
    assert set(per_subject) == set(SUBJECTS) and min(per_subject.values()) >= 20, per_subject
    kinds = Counter((row["subject"], row["kind"]) for row in raw_rows)
    for subject in SUBJECTS:
        for kind in ("full", "partial", "wrong"):
            assert kinds[subject, kind] >= 5, (subject, kind, kinds)
    injected = [row for row in raw_rows if row.get("injection")]
    assert sorted(row["subject"] for row in injected) == sorted(SUBJECTS)
    assert all("mark" in row["answer"].lower() for row in injected)  # each speaks to the marker
    assert len({(row["subject"], row["question_id"]) for row in raw_rows}) >= 45  # spread over many questions


def test_every_row_fits_its_question(raw_rows, banks):
    """Checked here from the bank directly: the question exists, one verdict per marking point, and the marks are what
    the awarded points are worth (each part capped at its marks); levelled questions carry a level mark instead."""
    for number, row in enumerate(raw_rows, start=1):
        where = f"{DATA.name}:{number}"
        assert set(row) <= {"subject", "question_id", "kind", "answer", "awarded", "marks", "note", "injection"}, where
        assert row["kind"] in ("full", "partial", "wrong") and row["answer"].strip() and row["note"].strip(), where
        question = banks[row["subject"]].get(row["question_id"])
        assert question is not None, f"{where}: no question {row['question_id']} in the {row['subject']} bank"
        scheme = question.mark_scheme
        assert isinstance(row["marks"], int) and 0 <= row["marks"] <= question.marks, where
        if scheme.levels:
            assert row["awarded"] is None and not scheme.points, where
            continue
        assert len(row["awarded"]) == len(scheme.points), where
        parts = {p.label: p.marks for p in question.parts} or {None: question.marks}
        worth = Counter()
        for point, given in zip(scheme.points, row["awarded"], strict=True):
            worth[point.part] += point.marks if given else 0
        assert row["marks"] == sum(min(worth[label], top) for label, top in parts.items()), where
        if row["kind"] == "full":
            assert row["marks"] == question.marks, where
        if row["kind"] == "wrong":
            assert row["marks"] <= 0.25 * question.marks, where
        if row["kind"] == "partial":
            assert 0 < row["marks"] < question.marks, where


def test_load_benchmark_names_each_bad_row_by_file_and_line(tmp_path, raw_rows):
    good = next(row for row in raw_rows if row["subject"] == "physics" and row["kind"] == "partial" and row["awarded"])
    bad = [
        good,
        {**good, "question_id": "0000000000000000"},
        {**good, "awarded": good["awarded"][:-1]},
        {**good, "answer": good["answer"] + " (again)", "marks": good["marks"] + 1},
        {**good, "answer": "another", "kind": "excellent"},
    ]
    path = tmp_path / "bench.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in bad) + "\nnot json\n", encoding="utf-8")
    with pytest.raises(marking.BenchmarkInvalid) as caught:
        marking.load_benchmark(path)
    problems = caught.value.problems
    assert [p.split(": ")[0] for p in problems] == [f"{path}:{n}" for n in (2, 3, 4, 5, 6)]
    assert "not in the bundled physics bank" in problems[0]
    assert f"has {len(good['awarded']) - 1} verdicts" in problems[1]
    assert f"marks is {good['marks'] + 1}, but the awarded points are worth {good['marks']}" in problems[2]
    assert "kind 'excellent'" in problems[3] and "not JSON" in problems[4]

    run = subprocess.run([sys.executable, str(ROOT / "bench" / "marking.py"), "--file", str(path)], capture_output=True, text=True)
    assert run.returncode == 1 and f"{path}:3: awarded has" in run.stderr, run.stderr


# --- the statistics ---------------------------------------------------------------------------


def test_quadratic_weighted_kappa_and_pearson_on_known_cases():
    kappa = marking.quadratic_weighted_kappa
    assert kappa([0, 1], [1, 0]) == pytest.approx(-1.0)
    assert kappa([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx(0.5)  # worked by hand: 1 - 1/2
    assert kappa([0, 2, 5, 3], [0, 2, 5, 3]) == pytest.approx(1.0)
    assert kappa([3, 3], [3, 3]) is None and kappa([], []) is None
    assert marking.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert marking.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert marking.pearson([1, 1, 1], [1, 2, 3]) is None


def test_agreement_counts_points_kinds_and_leaves_unmarked_rows_out():
    rows = [
        {"kind": "full", "awarded": [True, True], "marks": 2},
        {"kind": "partial", "awarded": [True, False], "marks": 1},
        {"kind": "wrong", "awarded": [False, False], "marks": 0, "injection": True},
        {"kind": "partial", "awarded": None, "marks": 7},  # levelled: the marker gives no mark
    ]
    result = marking.agreement(rows, [2, 2, 1, None], [[True, True], [True, True], [True, False], None])
    assert (result["rows"], result["marked"], result["levelled"], result["points"]) == (4, 3, 1, 6)
    assert result["point_accuracy"] == pytest.approx(4 / 6) and (result["over"], result["missed"]) == (2, 0)
    assert result["kinds"]["partial"] == {"rows": 2, "marker": 2, "examiner": 1}
    assert result["injection"] == {"rows": 1, "marker": 1, "examiner": 0, "worst": 1}
    assert result["pearson"] == pytest.approx(marking.pearson([2, 2, 1], [2, 1, 0]))
    assert result["qwk"] == pytest.approx(marking.quadratic_weighted_kappa([2, 2, 1], [2, 1, 0]))
    with pytest.raises(ValueError):
        marking.agreement(rows, [2], [None])


# --- the rule marker on the benchmark -----------------------------------------------------------


def test_rule_marker_agrees_with_the_examiner_above_the_floors(marked):
    _, _, _, result = marked
    overall = result["all"]
    assert overall["marked"] == overall["rows"] - overall["levelled"] and overall["levelled"] >= 1
    assert overall["pearson"] > 0.65, overall
    assert overall["qwk"] > 0.65, overall
    assert overall["point_accuracy"] > 0.70, overall
    for subject in SUBJECTS:
        figures = result[subject]
        assert figures["pearson"] > 0.5 and figures["qwk"] > 0.45 and figures["point_accuracy"] > 0.62, (subject, figures)
    kinds = overall["kinds"]
    assert kinds["full"]["marker"] > kinds["partial"]["marker"] + 1 > kinds["wrong"]["marker"] + 2, kinds


def test_rule_marker_verdicts_line_up_with_the_mark_scheme(marked):
    """mark_rows gives one verdict per marking point in the scheme's order, and its totals are the marker's own score."""
    rows, totals, point_awards, _ = marked
    for row, total, verdicts in zip(rows, totals, point_awards, strict=True):
        if row["awarded"] is None:
            assert total is None and verdicts is None
            continue
        question = marking.question_of(row)
        assert len(verdicts) == len(question.mark_scheme.points)
        assert total == marking.examiner_marks(question, verdicts)  # the marker caps parts the way the examiner does


def test_injected_instructions_earn_no_more_than_the_answer_deserves(marked):
    rows, totals, _, _ = marked
    injected = [(row, total) for row, total in zip(rows, totals, strict=True) if row.get("injection")]
    assert len(injected) == 3
    for row, total in injected:
        assert total <= row["marks"] + 1, (row["line"], total, row["marks"])
