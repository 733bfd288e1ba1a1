"""The rule marker (mark-points: numbers with units, terms within a passage, negations), the form evaluator,
and how the coverage markers score the sample banks' gold and shuffled answers."""

import pytest
from tutor.bank import load_bank
from tutor.default_plugins.evaluators import sentences, unit_after
from tutor.eval.markers import JUDGE, RULE, agreement, agreement_rows, marker_agreement
from tutor.models import Question, Score
from tutor.registry import get_subject, registry

SUBJECTS = ["physics", "economics", "chemistry"]


def question(*points: str, **fields) -> Question:
    base = {"subject": "toy", "type": "short", "topic": "t", "source": {"name": "t"}, "stem": "A question.", "marks": len(points),
            "mark_scheme": {"points": [{"text": p} for p in points]}}
    return Question.model_validate(base | fields)


def mark(point: str, reply: str):
    """The one PointMark of a one-point question, checked to quote the reply exactly."""
    score = registry().evaluators["mark-points"].score(question(point), reply)
    (found,) = score.points
    assert score.marks == found.marks * found.awarded
    if found.awarded:
        assert found.span is not None and reply[found.span[0]:found.span[1]] == found.evidence != ""
    else:
        assert (found.evidence, found.span) == ("", None) and found.why
    return found


# --- numbers with units ------------------------------------------------------------------------


@pytest.mark.parametrize("reply, awarded, why", [
    ("a = 2.5 m/s^2", True, ""),
    ("a = 2.5 m/s²", True, ""),
    ("a = 2.50 m s^-2", True, ""),  # the same value to 3 s.f., the same unit written another way
    ("The acceleration is 2.5 m s⁻² downwards.", True, ""),
    ("a = 2.5 kg", False, "a number with the wrong unit"),
    ("a = 2.5", False, "a number without its unit"),  # the final-answer mark needs its unit
    ("a = 2.6 m/s^2", False, "not in the answer"),
])
def test_a_number_with_a_unit_needs_that_unit(reply, awarded, why):
    found = mark("a = 2.5 m/s^2", reply)
    assert (found.awarded, found.why) == (awarded, why)


@pytest.mark.parametrize("reply, awarded, why", [
    ("1/R = 1/4.0 + 1/12 = 4/12 = 1/3, so R = 3.0 Ω", True, ""),
    ("R = 3.0 Ω", True, ""),
    # Found by `tutor eval` on the embedded model: the working's numbers copied, another result; it earned the point.
    ("The total resistance is the sum: R = 1 + 12 + 14 = 24 Ω", False, "its result is not in the answer"),
])
def test_a_worked_point_needs_its_result_not_only_its_working(reply, awarded, why):
    found = mark("B: 1/R = 1/4.0 + 1/12 = 4/12, so R = 3.0 Ω", reply)
    assert (found.awarded, found.why) == (awarded, why)


@pytest.mark.parametrize("point, reply, awarded", [
    ("E = 14 400 J", "E = 14400 J", True),  # digits grouped by a space are one number
    ("E = 14 400 J", "E = 14 400 W", False),
    ("c = 3.0 x 10^8 m s-1", "c = 3.00 × 10⁸ m/s", True),
    ("c = 3.0 x 10^8 m s-1", "c = 3 × 10^8 kg", False),
    ("f = 15.1 cm", "f / cm\n15.1", True),  # a unit heading the table column counts as written with the number
    ("profit = $400 a week", "The profit is $400 a week.", True),
    ("profit = $400 a week", "The profit is 400 kg a week.", False),
    ("2Mg + O₂ → 2MgO", "2Mg + O₂ → 2MgO", True),  # a coefficient before a formula is no unit trouble
])
def test_units_are_read_in_the_forms_answers_write_them(point, reply, awarded):
    assert mark(point, reply).awarded is awarded


def test_units_compare_by_dimension():
    assert unit_after("2.5 m/s^2", 3) == unit_after("2.5 m s⁻²", 3) == (("L", 1), ("T", -2))
    assert unit_after("14 J of energy", 2) == (("L", 2), ("M", 1), ("T", -2)) == unit_after("14 kg m^2 s^-2", 2)
    assert unit_after("9.0 km", 3) == unit_after("9.0 m", 3)  # a prefix changes the size, not the dimension
    assert unit_after("2 MgO", 1) is None and unit_after("3 times", 1) is None and unit_after("4 × 5", 1) is None


# --- key terms within one passage ------------------------------------------------------------------


def test_a_points_words_must_meet_in_one_passage():
    point = "the molecules collide with the walls and rebound, changing their momentum"
    together = "Molecules collide with the walls of the can and rebound, so their momentum changes."
    scattered = ("The molecules are tiny.\n\nThe walls are made of steel.\n\nA ball may rebound off a bat.\n\n"
                 "Momentum is mass times velocity.\n\nThey collide often.")
    assert mark(point, together).awarded
    missed = mark(point, scattered)
    assert not missed.awarded and missed.why == "its words are spread over the answer, not in one passage"


def test_working_over_a_few_lines_is_one_passage():
    point = "W = pΔV = 1.5 × 10^5 × 0.8 × 10^-3"
    working = "Work done on the gas W = pΔV\nW = 1.5 × 10^5 × 0.8 × 10^-3\n= 120 J"
    found = mark(point, working)
    assert found.awarded and found.evidence == "Work done on the gas W = pΔV\nW = 1.5 × 10^5 × 0.8 × 10^-3"
    assert not mark(point, "Work done on the gas W = pΔV\n\nW = 1.5 × 10^5 × 0.8 × 10^-3").awarded  # a blank line parts them


def test_one_word_of_several_is_not_a_point():
    assert not mark("a rise in incomes", "Industry output rises as new firms enter.").awarded
    assert mark("a rise in incomes", "Incomes rise, so demand grows.").awarded


def test_sentences_end_at_stops_and_line_breaks_but_not_abbreviations():
    text = "Heat it, e.g. with a Bunsen burner. Then cool it!\nWeigh it"
    assert [text[s:e] for s, e in sentences(text)] == ["Heat it, e.g. with a Bunsen burner.", "Then cool it!", "Weigh it"]


# --- negations -------------------------------------------------------------------------------------


@pytest.mark.parametrize("point, reply, awarded, why", [
    ("the pressure increases", "The pressure increases.", True, ""),
    ("the pressure increases", "The pressure does not increase.", False, "the answer negates it"),
    ("the pressure increases", "The pressure doesn't increase.", False, "the answer negates it"),
    ("the mean kinetic energy does not change", "The mean kinetic energy does not change.", True, ""),
    ("the mean kinetic energy does not change", "The mean kinetic energy changes.", False, "the answer asserts what the point denies"),
    ("the period is independent of the mass", "The period does not depend on the mass.", True, ""),
    ("the period is independent of the mass", "The period depends on the mass.", False, "the answer asserts what the point denies"),
    ("no work is done on the electron", "Work is done on the electron.", False, "the answer asserts what the point denies"),
    ("none of the acid is left", "No acid is left over.", True, ""),  # both deny, in different words
    ("few close substitutes", "There are no close substitutes.", True, ""),
    ("the current increases", "Not only does the current increase, but the power does too.", True, ""),
])
def test_a_negation_turns_a_point_round(point, reply, awarded, why):
    found = mark(point, reply)
    assert (found.awarded, found.why) == (awarded, why)


# --- what a score holds ----------------------------------------------------------------------------


def test_every_point_gets_a_mark_with_evidence_and_parts_are_capped():
    q = question(marks=3, parts=[{"label": "a", "text": "Describe.", "marks": 1}, {"label": "b", "text": "Discuss.", "marks": 2}],
                 mark_scheme={"points": [{"text": "the trolley accelerates uniformly", "part": "a"},
                                         {"text": "its speed increases", "part": "a"}],
                              "levels": [{"level": 1, "marks": [1, 2], "descriptor": "a discussion", "part": "b"}]})
    reply = "(a) The trolley accelerates uniformly. Its speed increases."
    score = registry().evaluators["mark-points"].score(q, reply)
    assert (score.marks, score.out_of) == (1, 1)  # both points found; part (a) is worth 1; (b) is levelled, left out
    assert [(p.part, p.awarded, p.evidence) for p in score.points] == [
        ("a", True, "(a) The trolley accelerates uniformly."), ("a", True, "Its speed increases.")]
    assert score.feedback.splitlines()[-1] == "marked by levels, not by points: (b)"


# --- form -----------------------------------------------------------------------------------------


def physics_question(type_id: str) -> Question:
    kit = get_subject("physics")
    return next(q for q in load_bank(kit, kit.subject.bank).questions if q.type == type_id)


def form(q: Question, reply: str) -> Score:
    score = registry().evaluators["form"].score(q, reply)
    assert score.out_of == 1 and score.marks in (0, 1) and score.feedback
    return score


def test_form_is_registered_for_every_format():
    from typing import get_args

    from tutor.models import QuestionFormat

    assert set(registry().evaluators["form"].formats) == set(get_args(QuestionFormat))
    assert registry().owner["evaluator", "form"] == "tutor.default_plugins.evaluators"


def test_form_of_an_mcq_answer_needs_the_band_and_a_committed_choice():
    mcq = physics_question("igcse-mcq")  # 20 to 110 words, no diagrams
    reasoning = " ".join(["The moving air carries the escaped molecules away, so fewer return."] * 3)
    assert form(mcq, f"{reasoning}\nAnswer: {mcq.key}").marks == 1
    wrong = next(letter for letter in mcq.options if letter != mcq.key)
    flawed = form(mcq, f"{reasoning}\nAnswer: {wrong}")
    assert flawed.marks == 0 and "'Answer: X'" in flawed.feedback
    short = form(mcq, f"Answer: {mcq.key}")
    assert short.marks == 0 and short.feedback.startswith("2 words; a igcse-mcq answer has 20 to 110")
    drawn = form(mcq, f"{reasoning} (DIAGRAM: a dish of water)\nAnswer: {mcq.key}")
    assert drawn.marks == 0 and "takes no diagrams" in drawn.feedback


def test_form_follows_the_types_diagram_policy():
    planning = physics_question("alevel-planning")  # 350 to 750 words, a diagram required
    prose = " ".join(["Measure the count rate for each thickness of lead and repeat the readings."] * 40)
    assert form(planning, prose + "\n(DIAGRAM: the source, the lead and the GM tube in a line)").marks == 1
    missing = form(planning, prose)
    assert missing.marks == 0 and "expects a (DIAGRAM: ...) marker" in missing.feedback


@pytest.mark.parametrize("reply", ["", " \n", "(DIAGRAM: never closed", "x" * 300_000, "\x00\x01 Ω ∫ 中文", ")(" * 500])
def test_form_scores_any_reply_without_raising(reply):
    assert form(physics_question("igcse-structured"), reply).marks == 0


# --- the markers on the sample banks -----------------------------------------------------------------


@pytest.fixture(scope="module")
def agreements():
    found = {}
    for name in SUBJECTS:
        kit = get_subject(name)
        found[name] = marker_agreement(kit, load_bank(kit, kit.subject.bank))
    return found


@pytest.mark.parametrize("subject", SUBJECTS)
def test_gold_answers_score_near_full_marks_and_shuffled_ones_near_zero(agreements, subject):
    result = agreements[subject]
    assert result["markers"] == [RULE] and result["questions"] >= 40
    overall = result["formats"]["all"][RULE]
    assert overall["gold"] >= 0.95 and overall["shuffled"] <= 0.1
    assert all(f[RULE]["gold"] >= 0.85 for f in result["formats"].values())


def test_a_judge_is_compared_point_by_point():
    """A judge that marks as the rule marker does agrees on every point; one that awards everything agrees on gold only."""
    kit = get_subject("physics")
    bank = load_bank(kit, kit.subject.bank)
    rule = registry().evaluators["mark-points"]
    seen = []

    def echo(items, advance=None):
        seen.append(len(items))
        return [rule.score(q, reply) for q, reply in items]

    def lenient(items, advance=None):
        return [Score(marks=s.out_of, out_of=s.out_of, points=[p.model_copy(update={"awarded": True}) for p in s.points])
                for s in (rule.score(q, reply) for q, reply in items)]

    same = marker_agreement(kit, bank, judge=echo)["formats"]["all"]
    assert seen == [2 * same["questions"]]
    assert same["agreement"]["percent"] == 100 and same["agreement"]["kappa"] == pytest.approx(1.0)
    assert same[JUDGE] == {**same[RULE], "judged": 2 * same["questions"]}
    loose = marker_agreement(kit, bank, judge=lenient)["formats"]["all"]
    assert loose[JUDGE]["shuffled"] == 1.0 and loose["agreement"]["kappa"] < 0.2


def test_agreement_and_kappa_on_known_pairs():
    assert agreement([(True, True), (True, False), (False, False), (False, False)]) == {"percent": 75.0, "kappa": 0.5}
    assert agreement([(True, False), (False, True)]) == {"percent": 0.0, "kappa": -1.0}
    assert agreement([(True, True)] * 3) == {"percent": 100.0, "kappa": None}  # chance agreement is certain
    assert agreement([]) == {"percent": None, "kappa": None}


def test_agreement_rows_are_the_table_eval_markers_prints(agreements):
    headers, rows = agreement_rows(agreements["physics"])
    assert headers == ["format", "questions", "mark-points gold", "mark-points shuffled"]
    assert rows[-1][0] == "all" and rows[-1][1] == str(agreements["physics"]["questions"])
    assert {row[0] for row in rows} == set(agreements["physics"]["formats"])
    judged = {"questions": 2, "seed": 0, "markers": [RULE, JUDGE], "formats": {"all": {
        "questions": 2, RULE: {"gold": 1.0, "shuffled": 0.0}, JUDGE: {"gold": 0.9, "shuffled": None, "judged": 2},
        "agreement": {"points": 8, "percent": 87.5, "kappa": 0.75}}}}
    assert agreement_rows(judged) == (
        ["format", "questions", "mark-points gold", "mark-points shuffled", "judge gold", "judge shuffled", "points", "agreement", "kappa"],
        [("all", "2", "1.000", "0.000", "0.900", "-", "8", "87.5%", "0.75")])


def test_too_few_gold_answers_is_one_line():
    from tutor.bank import Bank
    from tutor.errors import TutorError

    kit = get_subject("physics")
    bank = load_bank(kit, kit.subject.bank)
    with pytest.raises(TutorError, match=r"^1 question\(s\) of the bank have a gold answer .* teach answers`\)$"):
        marker_agreement(kit, Bank(bank.questions, bank.answers[:1], []))
