"""External MCQ files (tutor eval --mcq): MMLU-style CSV and JSON Lines, every bad row one problem with its line, good rows kept."""

import dataclasses
import json
import re

import pytest
from tutor.errors import TutorError
from tutor.eval.mcqfile import read_mcq_file


def write(tmp_path, name, text: str | bytes):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def lines(problems):
    return [str(p) for p in problems]


def test_a_clean_mmlu_csv_with_a_header_and_index_answers(toy, tmp_path):
    path = write(tmp_path, "set.csv", 'question,choice0,choice1,choice2,choice3,answer\n'
                                      '"What is 2 + 2, in words?",three,four,five,six,1\n'
                                      'Which is a unit of force?, newton ,joule,watt,pascal,0\n')
    questions, problems = read_mcq_file(path, toy)
    assert problems == []
    first, second = questions
    assert first.stem == "What is 2 + 2, in words?"  # a quoted comma stays in the cell
    assert first.options == {"A": "three", "B": "four", "C": "five", "D": "six"} and first.key == "B"
    assert second.options["A"] == "newton" and second.key == "A"  # cells are stripped
    assert (first.subject, first.type, first.topic, first.marks) == ("toy", "mcq", "foundations", 1)
    assert [p.text for p in first.mark_scheme.points] == ["B"]
    assert (first.source.name, first.source.line) == ("set.csv", 2) and second.source.line == 3


def test_csv_without_a_header_with_letter_answers_and_three_choices(toy, tmp_path):
    path = write(tmp_path, "letters.csv", "First?,a,b,c,C\nSecond?,a,b,c,a\n")
    questions, problems = read_mcq_file(path, toy)
    assert problems == []
    assert [(q.stem, q.key, list(q.options)) for q in questions] == [("First?", "C", ["A", "B", "C"]), ("Second?", "A", ["A", "B", "C"])]
    assert [q.source.line for q in questions] == [1, 2]


def test_every_kind_of_bad_csv_row_is_one_problem_on_its_line_and_the_good_rows_stay(toy, tmp_path):
    rows = [
        "question,A,B,C,D,answer",          # 1 header
        "Good one?,w,x,y,z,3",              # 2
        "Too few columns?,w,x,y,2",         # 3
        "Index out of range?,w,x,y,z,4",    # 4
        "Letter out of range?,w,x,y,z,E",   # 5
        "Empty option?,w,,y,z,0",           # 6
        ",w,x,y,z,0",                       # 7 empty question
        "Not an answer?,w,x,y,z,maybe",     # 8
        "",                                 # 9 blank: skipped
        "Another good one?,w,x,y,z,B",      # 10
        '"Bad "quote,w,x,y,z,0',            # 11
    ]
    text = "\n".join(rows).encode() + "\nCaf\xe9 or tea?,w,x,y,z,0\nLast good?,w,x,y,z,a\n".encode("cp1252")  # 12: cp1252, 13
    path = write(tmp_path, "bad.csv", text)
    questions, problems = read_mcq_file(path, toy)
    assert [(q.source.line, q.key) for q in questions] == [(2, "D"), (10, "B"), (13, "A")]
    assert lines(problems) == [
        f"{path}:3: 5 column(s), expected 6 (question, 4 choices, answer)",
        f"{path}:4: answer: '4' is not a choice: 4 choices take 0-3 or A-D",
        f"{path}:5: answer: 'E' is not a choice: 4 choices take 0-3 or A-D",
        f"{path}:6: choices: choice 1 (B) is empty",
        f"{path}:7: question: empty",
        f"{path}:8: answer: 'maybe' is not a choice: 4 choices take 0-3 or A-D",
        f"{path}:11: not valid CSV: ',' expected after '\"'",
        f"{path}:12: not valid UTF-8 (byte 0xe9 at column 4); save the file as UTF-8",
    ]


def test_a_quote_left_open_is_one_problem_naming_the_lines_it_swallowed(toy, tmp_path):
    path = write(tmp_path, "open.csv", 'Fine?,a,b,c,d,0\n"Open quote?,a,b,c,d,0\nSwallowed?,a,b,c,d,1\n')
    questions, problems = read_mcq_file(path, toy)
    assert [q.stem for q in questions] == ["Fine?"]
    assert lines(problems) == [f"{path}:2: not valid CSV: unexpected end of data "
                               "(a quote opened on line 2 runs to line 3; the rows in between were not read)"]


def test_a_first_row_with_a_bad_answer_is_a_header_only_when_its_answer_is_not_answer_shaped(toy, tmp_path):
    path = write(tmp_path, "first.csv", "Out of range first?,a,b,c,d,9\nGood?,a,b,c,d,1\n")
    questions, problems = read_mcq_file(path, toy)
    assert [q.stem for q in questions] == ["Good?"]
    assert lines(problems) == [f"{path}:1: answer: '9' is not a choice: 4 choices take 0-3 or A-D"]


def test_jsonl_rows_good_and_bad(toy, tmp_path):
    rows = [
        {"question": "Index answer?", "choices": ["a", "b", "c", "d"], "answer": 2, "subject": "ignored"},
        {"question": "Letter answer?", "choices": ["a", "b"], "answer": "b"},
        {"question": "Numbers as options?", "choices": [1, 2.5, 3], "answer": "0"},
        {"choices": ["a", "b"], "answer": 0},
        {"question": "One choice?", "choices": ["a"], "answer": 0},
        {"question": "Out of range?", "choices": ["a", "b", "c"], "answer": 3},
        {"question": "True is not an index?", "choices": ["a", "b"], "answer": True},
        {"question": "Blank option?", "choices": ["a", "  "], "answer": 0},
        {"question": "Nested option?", "choices": ["a", ["b"]], "answer": 0},
        {"question": "  ", "choices": ["a", "b"], "answer": 0},
    ]
    text = "\n".join(json.dumps(r) for r in rows) + '\n{"question": "torn\n[1, 2]\n'
    text = text.encode() + '{"question": "Ol\xe9?", "choices": ["a", "b"], "answer": 0}\n'.encode("latin-1")
    path = write(tmp_path, "set.jsonl", text)
    questions, problems = read_mcq_file(path, toy)
    assert [(q.source.line, q.stem, q.options, q.key) for q in questions] == [
        (1, "Index answer?", {"A": "a", "B": "b", "C": "c", "D": "d"}, "C"),
        (2, "Letter answer?", {"A": "a", "B": "b"}, "B"),
        (3, "Numbers as options?", {"A": "1", "B": "2.5", "C": "3"}, "A"),
    ]
    assert lines(problems) == [
        f"{path}:4: question: missing",
        f"{path}:5: choices: a list of two choices or more is required",
        f"{path}:6: answer: 3 is not a choice: 3 choices take 0-2 or A-C",
        f"{path}:7: answer: True is not a choice: 2 choices take 0-1 or A-B",
        f"{path}:8: choices: choice 1 (B) is empty",
        f"{path}:9: choices: choice 1 (B) is not text: ['b']",
        f"{path}:10: question: empty",
        f"{path}:11: not valid JSON: Invalid control character at column 19",
        f"{path}:12: expected a JSON object, got list",
        f"{path}:13: not valid UTF-8 (byte 0xe9 at column 17); save the file as UTF-8",
    ]


def test_a_control_character_is_the_rows_problem(toy, tmp_path):
    path = write(tmp_path, "ctl.jsonl", json.dumps({"question": "Bell\x07?", "choices": ["a", "b"], "answer": 0}) + "\n")
    questions, problems = read_mcq_file(path, toy)
    assert questions == [] and lines(problems) == [f"{path}:1: stem: contains a control character U+0007 at position 5"]


def test_a_utf8_bom_is_not_part_of_the_first_question(toy, tmp_path):
    path = write(tmp_path, "bom.csv", "\ufeffFirst?,a,b,0\n".encode())
    questions, problems = read_mcq_file(path, toy)
    assert problems == [] and questions[0].stem == "First?"


@pytest.mark.parametrize(("name", "text", "message"), [
    ("two.csv", "question,answer\nWhat?,0\n", "the header has 2 column(s); an MCQ CSV has question, two choices or more, and answer"),
    ("set.txt", "What?,a,b,0\n", "not an MCQ file this reads; valid suffixes: .csv, .jsonl, .ndjson"),
])
def test_files_that_are_not_mcq_sets_are_one_error(toy, tmp_path, name, text, message):
    with pytest.raises(TutorError, match=re.escape(message)):
        read_mcq_file(write(tmp_path, name, text), toy)


def test_a_subject_without_a_multiple_choice_type_is_an_error(toy, tmp_path):
    no_mcq = dataclasses.replace(toy, types={k: t for k, t in toy.types.items() if t.format != "mcq"})
    with pytest.raises(TutorError, match="subject 'toy' has no multiple-choice question type to evaluate set.csv as; its types: short"):
        read_mcq_file(write(tmp_path, "set.csv", "What?,a,b,0\n"), no_mcq)
