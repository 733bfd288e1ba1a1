import pytest
from pydantic import ValidationError
from tutor.models import Diagram, GoldAnswer, Question, QuestionType, Subject


def question(**changes):
    data = {
        "subject": "toy", "type": "short", "topic": "foundations", "marks": 3, "source": {"name": "test"},
        "stem": "A stem.",
        "parts": [{"label": "a", "text": "First.", "marks": 1}, {"label": "b", "text": "Second.", "marks": 2}],
        "mark_scheme": {"points": [{"part": "a", "text": "p1"}, {"part": "b", "text": "p2", "marks": 2}]},
    }
    data.update(changes)
    return data


def errors(data, model=Question):
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return " | ".join(e["msg"] for e in info.value.errors())


def test_id_is_derived_from_content_and_stable():
    first = Question.model_validate(question())
    again = Question.model_validate(question(stem="  A   stem. "))  # whitespace does not matter
    changed = Question.model_validate(question(stem="Another stem."))
    assert len(first.id) == 16 and first.id == again.id != changed.id
    # The mark scheme is not part of a question's identity: fixing it keeps answers linked.
    scheme = {"points": [{"part": "a", "text": "x"}, {"part": "b", "text": "y", "marks": 2}]}
    assert Question.model_validate(question(mark_scheme=scheme)).id == first.id


def test_stale_id_is_rejected_with_the_expected_one():
    good = Question.model_validate(question()).id
    assert f"expected {good!r}" in errors(question(id="0000000000000000"))


def test_missing_mark_scheme_and_empty_mark_scheme():
    data = question()
    del data["mark_scheme"]
    assert "Field required" in errors(data)
    assert "needs marking points or level descriptors" in errors(question(mark_scheme={}))


def test_part_marks_must_add_up():
    assert "part marks add up to 3, but the question has 4 marks" in errors(question(marks=4))


def test_mcq_key_must_be_an_option():
    mcq = question(parts=[], marks=1, options={"A": "x", "B": "y"}, key="E", mark_scheme={"points": [{"text": "E"}]})
    assert "key 'E' is not one of the options ['A', 'B']" in errors(mcq)
    assert "both options and key" in errors({**mcq, "key": None})


def test_points_must_cover_the_marks_of_each_part():
    data = question(mark_scheme={"points": [{"part": "a", "text": "p1"}, {"part": "b", "text": "p2"}]})
    assert "part b: marking points offer 1 marks, fewer than 2" in errors(data)


def test_levels_must_reach_the_marks():
    levels = [{"level": 1, "marks": [1, 5], "descriptor": "d"}, {"level": 2, "marks": [6, 10], "descriptor": "d"}]
    data = question(parts=[], marks=12, mark_scheme={"levels": levels})
    assert "the top level gives 10 marks, not 12" in errors(data)


def test_points_must_name_an_existing_part():
    data = question(mark_scheme={"points": [{"part": "z", "text": "p", "marks": 3}]})
    assert "mark scheme refers to part 'z'" in errors(data)


def test_unknown_fields_are_rejected_with_the_field_meant():
    assert errors(question(stemm="typo")) == "Extra inputs are not permitted; did you mean 'stem'?"
    # Nested records too, with the fields of the model at that place; no close name: the valid ones.
    scheme = {"points": [{"part": "a", "text": "p1", "mark": 1}, {"part": "b", "text": "p2", "marks": 2}], "notse": "", "zzz": 1}
    assert errors(question(mark_scheme=scheme)).split(" | ") == [
        "Extra inputs are not permitted; did you mean 'marks'?",
        "Extra inputs are not permitted; did you mean 'notes'?",
        "Extra inputs are not permitted; valid: points, levels, notes",
    ]


def test_a_changed_part_mark_reports_the_marks_not_the_stale_id():
    good = Question.model_validate(question())
    parts = [{"label": "a", "text": "First.", "marks": 2}, {"label": "b", "text": "Second.", "marks": 2}]
    # The part mark is the root cause; the id follows from it, so it is not reported on top.
    assert errors(question(id=good.id, parts=parts)) == "Value error, part marks add up to 4, but the question has 3 marks"
    scheme = {"points": [{"part": "a", "text": "p1", "marks": 2}, {"part": "b", "text": "p2", "marks": 2}]}
    assert "does not match the content" in errors(question(id=good.id, parts=parts, marks=4, mark_scheme=scheme))  # consistent: now the id


def test_gold_answer_markers_must_be_well_formed():
    assert "never closed" in errors({"question_id": "q", "author": "t", "text": "(DIAGRAM: oops"}, GoldAnswer)
    # An edited answer with a stale id: the marker is the problem named, not the id.
    answer = GoldAnswer(question_id="q", author="t", text="(DIAGRAM: fine)")
    assert errors({**answer.model_dump(), "text": "(DIAGRAM: oops"}, GoldAnswer) == "Value error, line 1: '(DIAGRAM:' is never closed"
    answer = GoldAnswer(question_id="q", author="t", text="x (DIAGRAM: a (b) c) y (DIAGRAM: d)")
    assert [m.description for m in answer.diagrams] == ["a (b) c", "d"]


def test_diagram_and_answer_ids_are_content_derived():
    a = Diagram(description="d", format="tikz", code="c", author="x")
    b = Diagram(description="d", format="tikz", code="other code", author="y")
    assert a.id == b.id  # one diagram per (format, description): new code replaces old
    assert GoldAnswer(question_id="q", text="t", author="a").id != GoldAnswer(question_id="q", text="u", author="a").id


TYPE = {"subject": "s", "id": "t", "name": "T", "level": "IGCSE", "format": "essay", "guide": "g" * 80,
        "exemplars": [{"question": "q", "answer": "a"}]}


def test_question_type_with_diagrams_must_name_formats():
    assert "must name its diagram_formats" in errors({**TYPE, "diagrams": "required"}, QuestionType)


def test_levels_come_from_the_subject_not_the_core():
    subject = Subject(name="s", title="S", syllabus="x", topics=["t"], levels={"AS": "9700 AS", "A Level": "9700", "IB": "IB Biology HL"})
    for level in ("AS", "A Level", "IB"):
        assert QuestionType.model_validate({**TYPE, "level": level}, context={"subject": subject}).level == level
    with pytest.raises(ValidationError) as info:
        QuestionType.model_validate(TYPE, context={"subject": subject})
    assert info.value.errors()[0]["msg"] == "Value error, level 'IGCSE' is not one of s's levels; valid: AS, A Level, IB"
    assert subject.level_problem("GCSE") == "level 'GCSE' is not one of s's levels; valid: AS, A Level, IB"


def test_marking_styles_and_caps():
    capped = {**TYPE, "marks": 15, "marking": "points-with-caps", "caps": [7, 8]}
    assert QuestionType.model_validate(capped).caps == [7, 8]
    assert "caps [7, 7] add up to 14, but the type has 15 marks" in errors({**capped, "caps": [7, 7]}, QuestionType)
    assert "caps are for marking = 'points-with-caps', not 'points'" in errors({**capped, "marking": "points"}, QuestionType)
    assert "Input should be 'points', 'levels', 'points-with-caps' or 'mixed'" in errors({**TYPE, "marking": "banded"}, QuestionType)


def test_level_strands_add_up_to_the_marks():
    levels = [
        {"level": 1, "marks": [1, 4], "descriptor": "d", "strand": "AO1/AO2"},
        {"level": 2, "marks": [5, 8], "descriptor": "d", "strand": "AO1/AO2"},
        {"level": 1, "marks": [1, 2], "descriptor": "d", "strand": "AO3"},
        {"level": 2, "marks": [3, 4], "descriptor": "d", "strand": "AO3"},
    ]
    assert Question.model_validate(question(parts=[], marks=12, mark_scheme={"levels": levels})).marks == 12
    assert "the top level gives 12 marks, not 13" in errors(question(parts=[], marks=13, mark_scheme={"levels": levels}))


def test_final_answers_need_distinct_keys():
    data = question(final_answers=[{"part": "b", "value": 1, "unit": "m"}, {"part": "b", "value": 2, "unit": "s"}])
    assert "final answers share a key ['b']: give each a part or a label" in errors(data)
    labelled = question(final_answers=[{"part": "b", "label": "d", "value": 1, "unit": "m"},
                                       {"part": "b", "label": "t", "value": 2, "unit": "s"}])
    assert [f.key for f in Question.model_validate(labelled).final_answers] == ["b:d", "b:t"]


def test_a_levelled_part_takes_no_marking_points():
    scheme = {"points": [{"text": "x"}], "levels": [{"level": 1, "marks": [1, 8], "descriptor": "d"}]}
    data = question(parts=[], marks=8, mark_scheme=scheme)
    assert "question is marked by levels, so its marking points would be marks on top" in errors(data)


def test_control_characters_are_refused_in_every_text_field():
    assert errors(question(stem="A\x00 stem.")) == "Value error, contains a control character U+0000 at position 2"
    parts = [{"label": "a", "text": "Fi\x07rst.", "marks": 1}, {"label": "b", "text": "Second.", "marks": 2}]
    assert "U+0007 at position 3" in errors(question(parts=parts))
    scheme = {"points": [{"part": "a", "text": "p1"}, {"part": "b", "text": "p\x7f2", "marks": 2}], "notes": "\x1b[31m"}
    assert errors(question(mark_scheme=scheme)).count("control character") == 2
    mcq = question(parts=[], marks=1, options={"A": "x\x0c", "B": "y"}, key="A", mark_scheme={"points": [{"text": "A"}]})
    assert "U+000C at position 2" in errors(mcq)
    # Tabs and line breaks are text, not control
    assert Question.model_validate(question(stem="A table:\tx\r\ny")).stem == "A table:\tx\r\ny"
