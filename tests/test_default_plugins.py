"""The core's own pieces, which arrive through the same hooks as any plugin."""

import json

import pytest
from tutor.models import Question
from tutor.registry import registry


@pytest.fixture
def mcq():
    return Question.model_validate({
        "subject": "toy", "type": "mcq", "topic": "foundations", "marks": 1, "source": {"name": "t"}, "stem": "Pick one.",
        "options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "key": "C", "mark_scheme": {"points": [{"text": "C"}]},
    })


@pytest.mark.parametrize("reply, chosen", [
    ("Answer: C", "C"),
    ("The correct answer is **C**.", "C"),
    ("A is wrong because ... B is wrong because ...\nAnswer: C", "C"),
    ("Answer: C. Option D fails because it ignores friction.", "C"),  # an option discussed after the answer
    ("the answer is a vector quantity, so C is correct", "C"),  # lowercase 'a' is a word, not option A
    ("C) because the gradient is constant", "C"),
    ("B", "B"),
    ("It could be A or B; I cannot tell.", None),
    ("Answer: E", None),  # not an option of this question
])
def test_mcq_evaluator_extracts_the_chosen_option(mcq, reply, chosen):
    from tutor.default_plugins.evaluators import chosen_option

    assert chosen_option(mcq, reply) == chosen
    score = registry().evaluators["mcq"].score(mcq, reply)
    assert (score.marks, score.out_of) == (float(chosen == "C"), 1)


def test_mcq_reward_scores_a_batch(mcq):
    reward = registry().rewards["mcq-correct"]
    assert reward.task == "answer"
    from tutor.models import RewardBatch, Subject

    subject = Subject(name="toy", title="Toy", syllabus="none", topics=["t"])
    completions = ["Answer: C", "Answer: A", "no idea", "Answer: C"]
    batch = RewardBatch("answer", completions, ["q"] * 4, [mcq, mcq, mcq, None], [""] * 4, [0, 0, 0, 1], subject)
    assert reward.score(batch) == [1.0, 0.0, 0.0, 0.0]


def test_file_sources_read_records_with_where_they_came_from(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("\ufeff" + json.dumps({"stem": "x"}) + "\n\nnot json\n" + json.dumps({"stem": "y"}) + "\n", encoding="utf-8")
    assert list(registry().sources["jsonl"].fetch(str(path))) == [
        (f"{path}:1", {"stem": "x"}), (f"{path}:3", {"__error__": "not valid JSON: Expecting value at column 1"}),
        (f"{path}:4", {"stem": "y"})]
    csv_path = tmp_path / "q.csv"
    csv_path.write_text('stem;marks\n"two\nlines";3\nplain;1\n', encoding="utf-8")
    assert list(registry().sources["csv"].fetch(str(csv_path))) == [
        (f"{csv_path}:2", {"stem": "two\nlines", "marks": "3"}), (f"{csv_path}:4", {"stem": "plain", "marks": "1"})]


def test_tikz_format_wraps_checks_and_extracts():
    tikz = registry().formats["tikz"]
    body = "\\begin{tikzpicture}\\draw (0,0) -- (1,1);\\end{tikzpicture}"
    document = tikz.document(body)
    assert document.startswith("\\documentclass[border=4pt]{standalone}") and "\\usepackage{pgfplots}" in document
    assert document.index("\\begin{document}") < document.index(body) < document.index("\\end{document}")
    assert tikz.check(body) == []
    assert tikz.check("\\documentclass{article}\\begin{tikzpicture}\\end{tikzpicture}") == [
        "a body must not contain \\documentclass or \\begin{document}"]
    assert tikz.check("\\draw (0,0);") == ["expected a tikzpicture environment"]
    assert tikz.extract(f"Here you are:\n```latex\n{body}\n```\nHope it helps.") == body


def test_format_is_chosen_from_the_description(toy):
    from tutor.models import DiagramFormat

    circuit = DiagramFormat(name="circuit", title="c", preamble="", example="", keywords=("circuit", "resistor"))
    registry().formats["circuit"] = circuit  # registry() is rebuilt when the toy fixture ends
    qtype = toy.types["short"].model_copy(update={"diagram_formats": ["tikz", "circuit"]})
    assert toy.format_for("A series Circuit with a lamp", qtype) is circuit
    assert toy.format_for("A velocity-time graph", qtype).name == "tikz"
    assert toy.format_for("A resistor network").name == "tikz"  # the toy subject draws only in tikz


def test_numbers_are_read_in_the_forms_answers_write_them():
    from tutor.default_plugins.evaluators import numbers_in

    text = ("r = 4.23 × 10^7 m; q = −300 J; a = -9.81 m s^-2 in kg m-3; e = 1.60 x 10^-19 C; h = 6.63×10⁻³⁴ J s; "
            "2.5e-3; 1,200 kg; 14 400 J; CO2")
    assert numbers_in(text) == pytest.approx([4.23e7, -300, -9.81, 1.6e-19, 6.63e-34, 2.5e-3, 1200, 14400, 14, 400], rel=1e-12)


def test_final_answer_evaluator_checks_significant_figures():
    from tutor.models import Question

    calc = Question.model_validate({
        "subject": "toy", "type": "calc", "topic": "t", "marks": 2, "source": {"name": "t"}, "stem": "Find r and v.",
        "mark_scheme": {"points": [{"text": "r", "marks": 1}, {"text": "v", "marks": 1}]},
        "final_answers": [{"label": "r", "value": 4.23e7, "unit": "m", "sig_figs": 3},
                          {"label": "v", "value": 3.1, "unit": "km s^-1", "sig_figs": 2}],
    })
    evaluator = registry().evaluators["final-answer"]
    assert evaluator.score(calc, "r = 4.225 x 10^7 m and v = 3.07 km s^-1").marks == 2
    score = evaluator.score(calc, "r = 4.21 × 10^7 m, v = 3.1 km s^-1")
    assert (score.marks, score.out_of, score.feedback) == (1, 2, "missing r: 4.23e+07 m")


def test_space_grouped_digits_read_both_ways():
    from tutor.default_plugins.evaluators import numbers_in

    assert numbers_in("100 120 126") == [100120126, 100, 120, 126]


@pytest.mark.parametrize("text, unit, ok", [
    ("v = 15.1 cm", "cm", True),
    ("f / cm\n15.1", "cm", True),
    ("v / m/s\n\nLater: 15.1 hours", "m/s", False),  # a heading in another block does not count
    ("costs $2400 a year", "$", True),
    ("spending of $400 million", "$ million", True),
    ("spending of 400 million", "$ million", False),
    ("15.1 and, elsewhere, cm", "cm", False),
    ("30 %", "%", True),
])
def test_a_unit_must_be_written_with_its_number(text, unit, ok):
    from tutor.default_plugins.evaluators import numbers_with_spans
    from tutor.testing import _unit_beside

    _, start, end = numbers_with_spans(text)[0]
    assert _unit_beside(text, start, end, unit) is ok


@pytest.mark.parametrize("reply", [
    "```latex\n{body}\n```",
    "Sure! Here is the diagram:\n\n```tex\n{body}\n```\n\nIt shows the force.",
    "```\n\\usepackage{{tikz}}\n```\nthen\n```latex\n{body}\n```",  # the block with the environment wins
    "```latex\n\\documentclass{{standalone}}\n\\usepackage{{tikz}}\n\\begin{{document}}\n{body}\n\\end{{document}}\n```",
    "Here you go:\n{body}\nThis draws an arrow labelled F.",
    "{body}",
])
def test_format_extracts_the_body_from_a_model_reply(reply):
    tikz = registry().formats["tikz"]
    body = "\\begin{tikzpicture}\n  \\draw[->] (0,0) -- (1,0) node[right] {$F$};\n\\end{tikzpicture}"
    assert tikz.extract(reply.format(body=body)) == body
