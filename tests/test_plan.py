"""Study plans (tutor.infer.plan) on the physics sample bank: reading results, ranking, practice, reviews, schedule, output,
and whether the mastery estimate predicts simulated students' next attempts."""

import dataclasses
import json
import subprocess
import sys

import pytest
from tutor.bank import load_bank
from tutor.errors import TutorError, UnknownName
from tutor.infer import plan as p
from tutor.registry import get_subject

WEAK = "electricity"


@pytest.fixture(scope="module")
def physics():
    return get_subject("physics")


@pytest.fixture(scope="module")
def bank(physics):
    return load_bank(physics, physics.subject.bank)


def by_topic(bank, topic):
    """The topic's questions, fewest marks first (the order the tests pick them in)."""
    return sorted((q for q in bank.questions if q.topic == topic), key=lambda q: (q.marks, q.id))


def synthetic(bank, physics, weak=WEAK, per_topic=3, student=None):
    """Results rows: `per_topic` questions of every topic, full marks except one point off; the weak topic nothing at all."""
    rows = []
    for topic in physics.subject.topics:
        for q in by_topic(bank, topic)[:per_topic]:
            marks = 0 if topic == weak else max(q.marks - 1, 1) if q.marks > 1 else 1
            rows.append({"question_id": q.id, "marks": marks, **({"student": student} if student else {})})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows), encoding="utf-8")
    return path


# --- reading -----------------------------------------------------------------------------------


def test_bad_rows_are_one_line_each_and_the_rest_are_used(tmp_path, bank, physics):
    good = synthetic(bank, physics)
    mcq = next(q for q in bank.questions if q.marks == 1)
    typo = good[0]["question_id"][:-1] + "x"
    rows = [good[0], {"question_id": "abc", "marks": 1}, {"question_id": mcq.id, "marks": 3}, "{not json",
            {"question_id": typo, "marks": 1}, {"marks": 1}, *good[1:]]
    path = write_jsonl(tmp_path / "results.jsonl", rows)

    attempts, problems = p.read_results(path, bank)

    assert len(attempts) == len(good)
    assert len(problems) == 5
    assert problems[0].startswith(f"{path}:2: unknown question id 'abc' (")
    assert problems[1] == f"{path}:3: 3 marks is above the question's 1"
    assert problems[2].startswith(f"{path}:4: not valid JSON")
    assert problems[3] == f"{path}:5: unknown question id {typo!r} (closest: {good[0]['question_id']})"  # difflib finds the typo's source
    assert problems[4].startswith(f"{path}:6: question_id:")


def test_csv_results_with_and_without_a_header(tmp_path, bank, physics):
    q1, q2 = by_topic(bank, "waves")[-2:]
    plain = tmp_path / "plain.csv"
    plain.write_text(f"{q1.id},2\n{q2.id},{q2.marks + 1}\n{q2.id[:8]},1,{q2.marks}\n", encoding="utf-8")
    attempts, problems = p.read_results(plain, bank)
    assert [(a.question_id, a.marks) for a in attempts] == [(q1.id, 2), (q2.id, 1)]  # a unique prefix of an id is enough
    assert problems == [f"{plain}:2: {q2.marks + 1} marks is above the question's {q2.marks}"]

    headed = tmp_path / "headed.csv"
    headed.write_text(f"question_id,student,marks\n{q1.id},ann,3\n", encoding="utf-8")
    (attempt,), problems = p.read_results(headed, bank)
    assert (attempt.student, attempt.marks, attempt.out_of, problems) == ("ann", 3, q1.marks, [])


def test_time_order_follows_at_when_every_row_has_it(tmp_path, bank, physics):
    q1, q2 = by_topic(bank, "waves")[:2]
    path = write_jsonl(tmp_path / "r.jsonl", [{"question_id": q1.id, "marks": 1, "at": "2026-03-02T10:00:00"},
                                              {"question_id": q2.id, "marks": 0, "at": "2026-03-01T10:00:00Z"}])
    attempts, _ = p.read_results(path, bank)
    assert [a.question_id for a in attempts] == [q2.id, q1.id]
    assert [a.order for a in attempts] == [0, 1]


def test_a_mark_result_row_quotes_its_missed_points_in_the_reason(tmp_path, bank, physics):
    q = by_topic(bank, WEAK)[-1]
    points = [{"text": point.text, "part": point.part, "marks": point.marks, "awarded": i == 0, "evidence": "", "why": ""}
              for i, point in enumerate(q.mark_scheme.points[:3])]
    # the fields of tutor.infer.results.MarkResult, as `mark --answers` writes them
    row = {"subject": "physics", "question_id": q.id, "student": "ann", "marks": 1, "out_of": q.marks, "question_marks": q.marks,
           "points": points, "levelled": [], "levels": [], "feedback": ["Use the right equation."], "checks": [], "marker": "rules",
           "truncated": False}
    rows = [row, *synthetic(bank, physics, weak="none", student="ann")]
    attempts, problems = p.read_results(write_jsonl(tmp_path / "marked.jsonl", rows), bank)
    assert problems == []
    assert attempts[0].missed == [point.text for point in q.mark_scheme.points[1:3]]

    plan = p.make_plan(physics, bank, attempts)
    topic = next(t for t in plan.topics if t.topic == WEAK)
    missed = " ".join(q.mark_scheme.points[1].text.split())
    assert f"\u201c{missed[:40]}" in topic.reason
    assert plan.student == "ann"


def test_a_mark_result_out_of_fewer_marks_than_the_question_is_out_of_those(tmp_path, bank, physics):
    """`mark` leaves levelled parts to an examiner: its marks and out_of cover the other parts only."""
    q = by_topic(bank, "fields")[-1]
    rows = [{"question_id": q.id, "marks": 3, "out_of": q.marks - 5, "question_marks": q.marks},
            {"question_id": q.id, "marks": 3, "out_of": q.marks + 1},
            {"question_id": q.id, "marks": 3, "out_of": 2},
            {"question_id": q.id, "marks": 3, "question_marks": q.marks + 2},
            {"question_id": q.id, "marks": 3, "subject": "chemistry"}]
    path = write_jsonl(tmp_path / "marked.jsonl", rows)
    (attempt,), problems = p.read_results(path, bank)
    assert (attempt.marks, attempt.out_of) == (3, q.marks - 5)
    assert problems == [f"{path}:2: out_of {q.marks + 1} is above the question's {q.marks} marks",
                        f"{path}:3: 3 marks is above its out_of 2",
                        f"{path}:4: the row gives question {q.id} {q.marks + 2} marks, the bank {q.marks}: another version of the bank?",
                        f"{path}:5: the row is for subject 'chemistry', but question {q.id} is physics"]


def test_an_empty_or_missing_file(tmp_path, bank):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    assert p.read_results(empty, bank) == ([], [f"{empty}: the file has no results"])
    with pytest.raises(TutorError, match="no such file"):
        p.read_results(tmp_path / "missing.jsonl", bank)


# --- the plan ----------------------------------------------------------------------------------


def plan_for(tmp_path, bank, physics, rows, **kwargs):
    attempts, problems = p.read_results(write_jsonl(tmp_path / "results.jsonl", rows), bank)
    assert problems == []
    return p.make_plan(physics, bank, attempts, **kwargs)


def test_the_clearly_weak_topic_comes_first(tmp_path, bank, physics):
    plan = plan_for(tmp_path, bank, physics, synthetic(bank, physics))

    first = plan.topics[0]
    assert first.topic == WEAK
    assert first.estimate.mastery < 0.35 < min(t.estimate.mastery for t in plan.topics[1:])
    assert first.estimate.low <= first.estimate.mastery <= first.estimate.high
    assert first.reason.startswith("0/")  # nothing earned: every marking point quoted as missed
    assert "\u201c" in first.reason
    assert [t.rank for t in plan.topics] == list(range(1, len(physics.subject.topics) + 1))
    assert {t.topic for t in plan.topics} == set(physics.subject.topics)


def test_syllabus_weight_breaks_the_tie_between_equally_weak_topics(tmp_path, bank, physics):
    rows = [row for row in synthetic(bank, physics) if row["question_id"] not in {q.id for q in by_topic(bank, "waves")}]
    rows += [{"question_id": q.id, "marks": 0} for q in by_topic(bank, "waves")[:3]]  # waves now as weak as electricity
    weighted = dataclasses.replace(physics, subject=physics.subject.model_copy(update={"topic_weights": {"waves": 3.0}}))

    plan = plan_for(tmp_path, bank, weighted, rows)

    assert [t.topic for t in plan.topics[:2]] == ["waves", WEAK]
    assert plan.topics[0].weight == 3.0
    assert plan.topics[0].weakness == pytest.approx(3 * p.shortfall(plan.topics[0].estimate))


def test_a_learnt_topic_is_not_ranked_up_by_its_weight_alone(tmp_path, bank, physics):
    """Tracing's mastery stays below 1 - slip even once a topic is learnt: weakness is 1 - P(known) there."""
    rows = synthetic(bank, physics)
    plan = plan_for(tmp_path, bank, physics, rows)
    learnt = [t for t in plan.topics if t.estimate.known is not None and t.estimate.known > 0.95]
    assert learnt and all(t.weakness < 0.1 * t.weight for t in learnt)
    assert plan.topics[0].topic == WEAK and plan.topics[0].weakness > 5 * max(t.weakness for t in learnt)


def test_practice_questions_are_never_ones_already_attempted(tmp_path, bank, physics):
    rows = synthetic(bank, physics, per_topic=5)
    plan = plan_for(tmp_path, bank, physics, rows, per_topic=4)

    done = {row["question_id"] for row in rows}
    offered = [item.question_id for t in plan.topics for item in t.practice]
    assert offered and not done & set(offered)
    for t in plan.topics:
        assert all(bank.question(item.question_id).topic == t.topic for item in t.practice)


def test_practice_is_easier_while_mastery_is_low(bank, physics):
    easy = p.practice(physics, bank, "mechanics", 0.1, set(), 2)
    hard = p.practice(physics, bank, "mechanics", 0.95, set(), 2)
    assert max(q.marks for q in easy) < min(q.marks for q in hard)
    assert {q.type for q in easy} <= {"alevel-mcq", "igcse-mcq"}


def test_the_schedule_covers_the_days_and_holds_the_fsrs_reviews(tmp_path, bank, physics):
    rows = [{**row, "at": f"2026-03-01T{9 + i // 60:02d}:{i % 60:02d}:00Z"} for i, row in enumerate(synthetic(bank, physics))]
    plan = plan_for(tmp_path, bank, physics, rows, days=10)

    assert [day.day for day in plan.schedule] == list(range(1, 11))
    assert all(day.tasks for day in plan.schedule)
    assert str(plan.schedule[0].on) == "2026-03-02" and str(plan.schedule[-1].on) == "2026-03-11"
    weak = plan.topics[0]
    assert {r.question_id for r in weak.reviews} == {q.id for q in by_topic(bank, WEAK)[:3]}
    for review in weak.reviews:
        assert review.rating == "Again" and review.days and review.days[0] == 1  # nothing earned: FSRS wants it back tomorrow
        assert review.days == sorted(set(review.days)) and review.days[-1] <= 10
        for day in review.days:
            assert any(task.kind == "review" and task.question_id == review.question_id for task in plan.schedule[day - 1].tasks)
    scheduled = [task.question_id for day in plan.schedule for task in day.tasks if task.kind == "practice"]
    assert sorted(scheduled) == sorted(item.question_id for t in plan.topics for item in t.practice)


def test_one_day_plans_and_bad_days(tmp_path, bank, physics):
    plan = plan_for(tmp_path, bank, physics, synthetic(bank, physics), days=1)
    assert len(plan.schedule) == 1 and plan.schedule[0].tasks
    with pytest.raises(TutorError, match="--days"):
        plan_for(tmp_path, bank, physics, synthetic(bank, physics), days=0)


def test_a_class_file_needs_a_student(tmp_path, bank, physics):
    rows = synthetic(bank, physics, student="ann") + synthetic(bank, physics, weak="waves", student="bob")
    with pytest.raises(TutorError, match="2 students; choose one with --student: ann, bob"):
        plan_for(tmp_path, bank, physics, rows)
    with pytest.raises(UnknownName):
        plan_for(tmp_path, bank, physics, rows, student="cy")
    assert plan_for(tmp_path, bank, physics, rows, student="bob").topics[0].topic == "waves"


def test_no_usable_results_is_an_error(bank, physics):
    with pytest.raises(TutorError, match="no usable results"):
        p.make_plan(physics, bank, [])


# --- output ------------------------------------------------------------------------------------


def test_write_plan_writes_markdown_json_and_a_real_png(tmp_path, bank, physics):
    plan = plan_for(tmp_path, bank, physics, synthetic(bank, physics))

    paths = p.write_plan(plan, tmp_path / "plan")

    assert set(paths) == {"plan.md", "plan.json", "mastery.png"}
    assert paths["mastery.png"].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert p.StudyPlan.model_validate_json(paths["plan.json"].read_text(encoding="utf-8")) == plan
    markdown = paths["plan.md"].read_text(encoding="utf-8")
    assert f"### 1. {WEAK}" in markdown and "![mastery](mastery.png)" in markdown and "**Day 7**" in markdown
    assert sorted(f.name for f in (tmp_path / "plan").iterdir()) == ["mastery.png", "plan.json", "plan.md"]  # no temp files left
    table = p.plan_table(plan)
    assert table.splitlines()[1].split()[:2] == ["1", WEAK]


def test_importing_the_module_imports_nothing_heavy():
    code = "import sys, tutor.infer.plan; print([m for m in ('numpy', 'fsrs', 'matplotlib') if m in sys.modules])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


# --- the estimate -----------------------------------------------------------------------------------


def test_em_recovers_the_parameters_that_generated_the_data():
    import numpy as np

    truth = p.Tracing(prior=0.3, learn=0.15, guess=0.2, slip=0.08)
    rng = np.random.default_rng(0)
    sequences = []
    for _ in range(2000):
        known, seq = rng.random() < truth.prior, []
        for _ in range(10):
            seq.append((float(rng.random() < (1 - truth.slip if known else truth.guess)), 1.0))
            known = known or rng.random() < truth.learn
        sequences.append(seq)
    fitted = p.fit_tracing(sequences)
    for name in p.Tracing.model_fields:
        assert getattr(fitted, name) == pytest.approx(getattr(truth, name), abs=0.03), name


@pytest.mark.parametrize("world", p.WORLDS)
def test_the_estimate_predicts_next_attempts_better_than_raw_error_rates_and_chance(world):
    result = p.simulate(students=300, seed=0, world=world)
    estimate, alone, raw = result["estimate"], result["estimate, one student"], result["raw"]
    assert estimate["auc"] > raw["auc"] + 0.01
    assert estimate["log_loss"] < raw["log_loss"] - 0.05
    for baseline in ("chance", "base rate"):
        assert estimate["auc"] > result[baseline]["auc"] + 0.15
        assert estimate["log_loss"] < result[baseline]["log_loss"] - 0.03
        assert alone["log_loss"] < result[baseline]["log_loss"] - 0.03  # one student's file alone, as `plan` mostly runs
    assert alone["auc"] > 0.65 and alone["log_loss"] < raw["log_loss"]
    assert result["chance"]["auc"] == 0.5 and result["chance"]["log_loss"] == pytest.approx(0.6931, abs=1e-4)
