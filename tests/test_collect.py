"""collect import: exports in the shapes users actually have, into the workspace bank."""

import json

import pytest
from click.testing import CliRunner
from tutor.cli import cli
from tutor.neardup import NearDuplicateIndex

HEADER = "Question,A,B,C,D,Answer,Topic\n"
ROWS = [
    '"Which option is the second one?",one,two,three,four,B,foundations\n',
    '"A stem that spans\ntwo lines: which is first?",first,second,third,fourth,A,applications\n',
    '"Which option is the second one?",one,two,three,four,B,foundations\n',  # exact duplicate
    '"Which option is the fourth one?",one,two,three,four,E,foundations\n',  # key not an option
]
MAP = ["--column", "stem=Question", "--column", "key=Answer", "--column", "topic=Topic", "--default", "type=mcq"]


def run(ws, *args, **kwargs):
    return CliRunner().invoke(cli, ["--workspace", str(ws), "--subject", "toy", "collect", "import", *args], **kwargs)


def bank(ws):
    path = ws / "toy" / "bank"

    def read(name):
        return [json.loads(line) for line in (path / name).read_text(encoding="utf-8").splitlines()] if (path / name).exists() else []

    return read("questions.jsonl"), read("rejects.jsonl"), read("near-duplicates.jsonl")


def summary(output):
    lines = output.splitlines()
    return dict(zip(lines[0].split(), map(int, lines[2].split())))


@pytest.mark.parametrize("variant", ["comma", "semicolon", "bom", "gbk"])
def test_csv_variants_import_the_same_questions(toy, tmp_path, variant):
    text = HEADER + "".join(ROWS)
    if variant == "semicolon":
        text = text.replace(",", ";")
    data = {"gbk": text.replace("second one", "第二个 one").encode("gbk"),
            "bom": "\ufeff".encode() + text.encode()}.get(variant, text.encode())
    (tmp_path / "bank.csv").write_bytes(data)
    extra = ["--encoding", "gbk"] if variant == "gbk" else []
    result = run(tmp_path / "ws", str(tmp_path / "bank.csv"), *MAP, *extra)
    assert result.exit_code == 0, result.output
    assert summary(result.output) == {"read": 4, "imported": 2, "duplicate": 1, "near-duplicate": 0, "rejected": 1}
    questions, rejects, _ = bank(tmp_path / "ws")
    assert questions[1]["stem"] == "A stem that spans\ntwo lines: which is first?"  # a newline inside a cell survives
    assert questions[0]["source"] == {"name": "bank.csv", "line": 2} and questions[1]["source"]["line"] == 3
    assert rejects[0]["line"] == 6 and "key 'E' is not one of the options" in rejects[0]["reason"]
    assert rejects[0]["row"]["Answer"] == "E"  # the row itself is kept, to fix and re-import
    if variant == "gbk":
        assert "第二个" in questions[0]["stem"]


def test_gbk_without_the_flag_is_a_clear_error_and_writes_nothing(toy, tmp_path):
    (tmp_path / "bank.csv").write_bytes((HEADER + '"第二个?",a,b,c,d,B,foundations\n').encode("gbk"))
    result = run(tmp_path / "ws", str(tmp_path / "bank.csv"), *MAP)
    assert result.exit_code == 1
    assert "bank.csv:2: not valid utf-8-sig (byte 0xb5 at column 2)" in result.output and "--encoding gbk" in result.output
    assert bank(tmp_path / "ws") == ([], [], [])


def test_missing_columns_are_named_before_anything_is_imported(toy, tmp_path):
    (tmp_path / "bank.csv").write_text("Stem,Answer\nx,B\n")
    result = run(tmp_path / "ws", str(tmp_path / "bank.csv"), *MAP)
    assert result.exit_code == 1
    assert "no column(s) ['Question', 'Topic']; the file has ['Answer', 'Stem']" in result.output
    assert bank(tmp_path / "ws") == ([], [], [])


def test_an_empty_file_is_an_error(toy, tmp_path):
    (tmp_path / "bank.csv").write_text("")
    result = run(tmp_path / "ws", str(tmp_path / "bank.csv"), *MAP)
    assert result.exit_code == 1 and "no records found" in result.output


def test_reimport_after_a_crash_loses_and_doubles_nothing(toy, tmp_path):
    path = tmp_path / "bank.csv"
    path.write_text(HEADER + ROWS[0])
    run(tmp_path / "ws", str(path), *MAP)
    path.write_text(HEADER + "".join(ROWS))  # the rest of the file arrives
    result = run(tmp_path / "ws", str(path), *MAP)
    assert summary(result.output) == {"read": 4, "imported": 1, "duplicate": 2, "near-duplicate": 0, "rejected": 1}
    questions, _, _ = bank(tmp_path / "ws")
    assert len(questions) == len({q["id"] for q in questions}) == 2


def test_jsonl_with_a_toml_mapping_and_near_duplicates(toy, tmp_path):
    (tmp_path / "map.toml").write_text('[columns]\nstem = "q"\noptions = "choices"\nkey = "answer"\n'
                                       '[defaults]\ntype = "mcq"\ntopic = "foundations"\n')
    stem = ("A trolley accelerates uniformly from rest along a straight level track for four seconds. "
            "Which option is the second one listed here?")
    records = [
        {"q": stem, "choices": ["one", "two", "three", "four"], "answer": "b"},
        {"q": stem.replace("four seconds", "five seconds"), "choices": ["one", "two", "three", "four"], "answer": "(B)"},
        {"q": "Completely different: which is first?", "choices": {"A": "x", "B": "y"}, "answer": "A"},
    ]
    (tmp_path / "bank.jsonl").write_text("\n".join(map(json.dumps, records)) + "\nnot json\n")
    result = run(tmp_path / "ws", str(tmp_path / "bank.jsonl"), "--mapping", str(tmp_path / "map.toml"))
    assert result.exit_code == 0, result.output
    assert summary(result.output) == {"read": 4, "imported": 3, "duplicate": 0, "near-duplicate": 1, "rejected": 1}
    questions, rejects, near = bank(tmp_path / "ws")
    assert [q["key"] for q in questions] == ["B", "B", "A"]
    assert near[0]["id"] == questions[1]["id"] and near[0]["similar_to"] == questions[0]["id"] and near[0]["similarity"] >= 0.8
    assert rejects[0]["reason"].startswith("not valid JSON")


def test_mark_scheme_text_becomes_points(toy, tmp_path):
    (tmp_path / "bank.csv").write_text(
        "stem,parts,marks,scheme\n"
        '"This sample question shows parts.",'
        '"[{""label"": ""a"", ""text"": ""State it."", ""marks"": 1}, {""label"": ""b"", ""text"": ""Explain it."", ""marks"": 2}]",'
        '3 marks,"(a) a statement; (b) a reason [2]"\n'
    )
    result = run(tmp_path / "ws", str(tmp_path / "bank.csv"), "--column", "mark_scheme=scheme",
                 "--default", "type=short", "--default", "topic=applications")
    assert result.exit_code == 0, result.output
    (question,), _, _ = bank(tmp_path / "ws")
    assert question["marks"] == 3
    assert question["mark_scheme"]["points"] == [{"text": "a statement", "part": "a"}, {"text": "a reason", "marks": 2, "part": "b"}]


def test_bad_mapping_names_the_valid_fields(toy, tmp_path):
    (tmp_path / "bank.csv").write_text(HEADER + ROWS[0])
    result = run(tmp_path / "ws", str(tmp_path / "bank.csv"), "--column", "stme=Question")
    assert result.exit_code == 1 and "unknown field(s) ['stme'] in the mapping; valid: stem, type" in result.output


def test_near_duplicate_index_finds_similar_and_ignores_different():
    index = NearDuplicateIndex(0.8)
    base = "Calculate the kinetic energy of a car of mass 1200 kg moving at 15 m s^-1 along a straight road towards a junction."
    assert index.add("a", base) == []
    assert index.add("b", "Explain why the sky appears blue during the day but red at sunset.") == []
    found = index.add("c", base.replace("junction", "roundabout"))
    assert [(d.old_id, d.similarity >= 0.8) for d in found] == [("a", True)]


# --- imports that used to lose rows or crash (issue 15) ---------------------------------------


def numbered_rows(count):
    """`count` distinct valid MCQ rows; row n sits on line n + 1, under the header."""
    return [f'"Which option is number {n}?",one,two,three,four,B,foundations\n' for n in range(1, count + 1)]


def last_line(result):
    return result.output.splitlines()[-1]


def assert_nothing_imported(result, workspace, error):
    """The import stopped with `error` as its one last line, and the bank is untouched."""
    assert result.exit_code == 1
    assert last_line(result) == error
    assert bank(workspace) == ([], [], [])


@pytest.mark.parametrize("count", [200, 2000])  # 2,000 rows used to hit csv's field limit: a traceback
def test_a_stray_quote_stops_the_import_and_names_its_line(toy, tmp_path, count):
    rows = numbered_rows(count)
    rows[10] = rows[10].replace('?"', "?", 1)  # line 12 opens a quote it never closes
    path = tmp_path / "bank.csv"
    path.write_text(HEADER + "".join(rows))
    result = run(tmp_path / "ws", str(path), *MAP)
    assert_nothing_imported(result, tmp_path / "ws",
                            f"error: {path}:12: unclosed quote starting at line 12 (it runs to line 13); "
                            "nothing was imported from this file")


def test_a_quote_left_open_to_the_end_of_the_file(toy, tmp_path):
    rows = [row.replace('"', "") for row in numbered_rows(50)]
    rows[4] = '"' + rows[4]  # line 6
    path = tmp_path / "bank.csv"
    path.write_text(HEADER + "".join(rows))
    result = run(tmp_path / "ws", str(path), *MAP)
    assert_nothing_imported(result, tmp_path / "ws",
                            f"error: {path}:6: unclosed quote starting at line 6 (it runs to the end of the file, line 51); "
                            "nothing was imported from this file")


def test_a_quote_that_swallows_whole_rows_is_unclosed_even_when_a_later_quote_closes_it(toy, tmp_path):
    rows = [row.replace('"', "") for row in numbered_rows(20)]
    rows[4] = '"' + rows[4]  # line 6 opens a quote...
    rows[9] = '", then what?",one,two,three,four,B,foundations\n'  # ...which line 11 happens to close cleanly
    path = tmp_path / "bank.csv"
    path.write_text(HEADER + "".join(rows))
    result = run(tmp_path / "ws", str(path), *MAP)
    assert_nothing_imported(result, tmp_path / "ws",
                            f"error: {path}:6: unclosed quote starting at line 6 (it runs to line 11); "
                            "nothing was imported from this file")


def test_a_malformed_row_on_one_line_is_rejected_and_the_import_goes_on(toy, tmp_path):
    rows = numbered_rows(3)
    rows[1] = '"Which option is number 2?" or not,one,two,three,four,B,foundations\n'  # line 3
    (tmp_path / "bank.csv").write_text(HEADER + "".join(rows))
    result = run(tmp_path / "ws", str(tmp_path / "bank.csv"), *MAP)
    assert result.exit_code == 0, result.output
    assert summary(result.output) == {"read": 3, "imported": 2, "duplicate": 0, "near-duplicate": 0, "rejected": 1}
    questions, (reject,), _ = bank(tmp_path / "ws")
    assert [q["source"]["line"] for q in questions] == [2, 4]
    assert reject["line"] == 3 and reject["reason"].startswith("not valid CSV: ',' expected after '\"'")
    assert reject["row"] == {"text": rows[1].rstrip("\n")}  # the line as it is, to fix


def test_a_cell_over_128_kib_rejects_its_row_and_the_import_goes_on(toy, tmp_path):
    rows = numbered_rows(3)
    rows[1] = '"' + "x" * 200_000 + '?",one,two,three,four,B,foundations\n'  # line 3
    (tmp_path / "bank.csv").write_text(HEADER + "".join(rows))
    result = run(tmp_path / "ws", str(tmp_path / "bank.csv"), *MAP)
    assert result.exit_code == 0, result.output
    assert summary(result.output) == {"read": 3, "imported": 2, "duplicate": 0, "near-duplicate": 0, "rejected": 1}
    questions, (reject,), _ = bank(tmp_path / "ws")
    assert [q["source"]["line"] for q in questions] == [2, 4]  # the row after it is read too
    assert reject["line"] == 3
    assert reject["reason"] == "column 'Question' holds 200,001 characters, more than the 131,072 a cell may have"


def test_a_cell_too_big_to_read_at_all_is_a_file_level_error(toy, tmp_path):
    rows = numbered_rows(3)
    rows[1] = '"' + "x" * (16 * 2**20 + 1) + '",one,two,three,four,B,foundations\n'  # line 3
    path = tmp_path / "bank.csv"
    path.write_text(HEADER + "".join(rows))
    result = run(tmp_path / "ws", str(path), *MAP)
    assert_nothing_imported(result, tmp_path / "ws",
                            f"error: {path}:3: a cell on line 3 holds more than 16,777,216 characters; "
                            "nothing was imported from this file")


@pytest.mark.parametrize("line", [3, 3000])
def test_a_wrong_encoding_is_reported_on_its_real_line_before_anything_is_imported(toy, tmp_path, line):
    rows = [row.encode() for row in numbered_rows(3000)]
    rows[line - 2] = rows[line - 2].replace(b"number", b"n\xfamber")  # latin-1, not UTF-8
    path = tmp_path / "bank.csv"
    path.write_bytes(HEADER.encode() + b"".join(rows))
    result = run(tmp_path / "ws", str(path), *MAP)
    assert result.exit_code == 1
    column = rows[line - 2].index(b"\xfa") + 1
    assert last_line(result) == (f"error: {path}:{line}: not valid utf-8-sig (byte 0xfa at column {column}); nothing was imported; "
                                 "pass --encoding, e.g. --encoding gbk")
    assert bank(tmp_path / "ws") == ([], [], [])


def test_a_wrong_encoding_in_json_lines_is_reported_on_its_line_before_anything_is_imported(toy, tmp_path):
    record = {"stem": "Which option is the second one?", "options": ["one", "two"], "key": "B", "type": "mcq", "topic": "foundations"}
    lines = [json.dumps({**record, "stem": f"Question {n}: which option is the second one?"}).encode() for n in range(1, 6)]
    lines[2] = lines[2].replace(b"Question", b"Questi\xf3n")
    path = tmp_path / "bank.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = run(tmp_path / "ws", str(path))
    assert result.exit_code == 1
    column = lines[2].index(b"\xf3") + 1
    assert last_line(result) == (f"error: {path}:3: not valid utf-8-sig (byte 0xf3 at column {column}); nothing was imported; "
                                 "pass --encoding, e.g. --encoding gbk")
    assert bank(tmp_path / "ws") == ([], [], [])


def test_control_characters_are_rejected_naming_the_field_and_the_character(toy, tmp_path):
    rows = numbered_rows(3)
    rows[1] = rows[1].replace("Which", "Wh\x00ich")  # line 3: a NUL in the stem
    rows[2] = rows[2].replace(",one,", ",o\x1bne,")  # line 4: an escape in option A
    (tmp_path / "bank.csv").write_text(HEADER + "".join(rows))
    result = run(tmp_path / "ws", str(tmp_path / "bank.csv"), *MAP)
    assert result.exit_code == 0, result.output
    assert summary(result.output) == {"read": 3, "imported": 1, "duplicate": 0, "near-duplicate": 0, "rejected": 2}
    questions, rejects, _ = bank(tmp_path / "ws")
    assert "\x00" not in json.dumps(questions)
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (3, "stem: contains a control character U+0000 at position 3"),
        (4, "options.A: contains a control character U+001B at position 2"),
    ]


def test_a_torn_last_line_in_the_bank_is_cut_off_by_the_next_import(toy, tmp_path):
    path, ws = tmp_path / "bank.csv", tmp_path / "ws"
    path.write_text(HEADER + ROWS[0] + ROWS[3])
    run(ws, str(path), *MAP)
    folder = ws / "toy" / "bank"
    for name in ("questions.jsonl", "rejects.jsonl"):
        with open(folder / name, "ab") as handle:  # a crash in the middle of an append
            handle.write(b'{"id": "0123456789abcdef", "subj')
    path.write_text(HEADER + "".join(ROWS))
    result = run(ws, str(path), *MAP)
    assert result.exit_code == 0, result.output
    assert summary(result.output) == {"read": 4, "imported": 1, "duplicate": 2, "near-duplicate": 0, "rejected": 1}
    questions, rejects, _ = bank(ws)  # every line parses: nothing was glued onto a fragment
    assert len(questions) == 2 and len(rejects) == 2
    validate = CliRunner().invoke(cli, ["--subject", "toy", "bank", "validate", str(folder)])
    assert validate.exit_code == 0, validate.output


def test_the_importer_repairs_every_file_it_appends_to(toy, tmp_path):
    """The scraper's path: Importer, fed records one at a time."""
    from tutor.collect import Importer, Mapping

    folder = tmp_path / "bank"
    folder.mkdir()
    for name in ("questions.jsonl", "rejects.jsonl", "near-duplicates.jsonl"):
        (folder / name).write_bytes(b'{"torn": ')
    stem = ("A trolley accelerates uniformly from rest along a straight level track for four seconds. "
            "Which option is the second one listed here?")
    options = {"A": "one", "B": "two", "C": "three", "D": "four"}
    with Importer(toy, folder, Mapping.build(defaults=["type=mcq", "topic=foundations"])) as importer:
        importer.add("http://127.0.0.1/q.html#1", {"stem": stem, "options": options, "key": "B"})
        importer.add("http://127.0.0.1/q.html#2", {"stem": stem.replace("four seconds", "five seconds"), "options": options, "key": "B"})
        importer.add("http://127.0.0.1/q.html#3", {"__error__": "no stem on the page"})
    assert (importer.report.imported, importer.report.near_duplicate, importer.report.rejected) == (2, 1, 1)
    assert [len(part) for part in bank_files(folder)] == [2, 1, 1]


def bank_files(folder):
    names = ("questions.jsonl", "rejects.jsonl", "near-duplicates.jsonl")
    return [[json.loads(line) for line in (folder / name).read_text().splitlines()] for name in names]


def test_rerunning_an_import_does_not_record_its_rejects_again(toy, tmp_path):
    (tmp_path / "bank.csv").write_text(HEADER + "".join(ROWS))
    run(tmp_path / "ws", str(tmp_path / "bank.csv"), *MAP)
    result = run(tmp_path / "ws", str(tmp_path / "bank.csv"), *MAP)
    assert summary(result.output) == {"read": 4, "imported": 0, "duplicate": 3, "near-duplicate": 0, "rejected": 1}
    folder = tmp_path / "ws" / "toy" / "bank"
    assert f"rejected rows, with reasons: {folder / 'rejects.jsonl'} (1 of the 1 already recorded there by an earlier run)" in result.output
    _, rejects, _ = bank(tmp_path / "ws")
    assert [r["line"] for r in rejects] == [6]


def test_a_failed_import_leaves_no_empty_bank_and_teach_says_to_import_first(toy, tmp_path):
    ws = tmp_path / "ws"
    path = tmp_path / "bank.csv"
    path.write_text(HEADER + '"Which one is it?,one,two,three,four,B,foundations\n' + "".join(numbered_rows(3)))
    assert run(ws, str(path), *MAP).exit_code == 1
    questions = ws / "toy" / "bank" / "questions.jsonl"
    assert not questions.exists()
    teach = ["--workspace", str(ws), "--subject", "toy", "teach", "answers", "--dry-run"]
    result = CliRunner().invoke(cli, teach)
    assert result.exit_code == 1 and "bring questions in first with `tutor --subject toy collect import FILE`" in result.output
    questions.write_text("\n  \n")  # an empty bank, e.g. from an older version
    result = CliRunner().invoke(cli, teach)
    assert result.exit_code == 1
    assert last_line(result) == (f"error: no questions to answer: {questions} has no questions yet; "
                                 "bring questions in first with `tutor --subject toy collect import FILE`")


# --- near duplicates: the MinHash index, pinned ------------------------------------------------------


def sample_questions() -> list[str]:
    """Every sample bank question as plain text, the way the importer indexes it."""
    import importlib.util
    from pathlib import Path

    from tutor.answers import question_text
    from tutor.jsonl import read_jsonl
    from tutor.models import Question

    texts = []
    for subject in ("physics", "chemistry", "economics"):
        package = Path(importlib.util.find_spec(f"tutor_{subject}").submodule_search_locations[0])
        texts += [question_text(q) for q in read_jsonl(package / "bank" / "questions.jsonl", Question)]
    return texts


def light_edits(text: str, kind: int) -> str:
    """A copy a person would call the same question: one word changed, a number changed, punctuation and case, a word added."""
    import re

    words = text.split(" ")
    middle = len(words) // 2
    if kind == 1 and (number := re.search(r"\d+(?:\.\d+)?", text)):
        return text[:number.start()] + str(int(float(number.group()) * 3 + 7)) + text[number.end():]
    if kind == 2:
        return text.replace(",", "").replace("?", ".").replace(":", " -").upper()
    if kind == 3:
        return " ".join([*words[:middle], "really", *words[middle:]])
    return " ".join([*words[:middle], "different", *words[middle + 1:]])


def test_the_near_duplicate_index_finds_light_edits_and_no_false_pairs():
    from tutor.neardup import jaccard, shingles

    originals = []  # 50 clearly different questions: no two share more than 30% of their word pairs
    for text in sample_questions():
        if len(text.split()) >= 25 and all(jaccard(shingles(text), shingles(o)) < 0.3 for o in originals):
            originals.append(text)
    originals = originals[:50]
    assert len(originals) == 50
    index = NearDuplicateIndex(0.8)
    assert [index.add(f"q{i}", text) for i, text in enumerate(originals)] == [[]] * 50  # no false pairs
    missed = []
    for i, text in enumerate(originals):
        copy = light_edits(text, i % 4)
        found = index.add(f"copy{i}", copy)
        if [d.old_id for d in found] != [f"q{i}"]:
            missed.append((i % 4, round(jaccard(shingles(text), shingles(copy)), 2), [d.old_id for d in found]))
        else:
            assert found[0].similarity == round(jaccard(shingles(copy), shingles(text)), 3)  # the exact figure, not the estimate
    assert missed == []  # recall 50 of 50 (the linear hash before splitmix64 missed pairs at Jaccard 0.97)


def test_a_question_becomes_plain_text_one_way_everywhere():
    """Near duplicates (collect), leakage probes (dataset) and novelty (rewards) read the same text."""
    from tutor import answers, collect, dataset
    from tutor.default_plugins import rewards
    from tutor.models import Question

    question = Question.model_validate({
        "subject": "toy", "type": "short", "topic": "foundations", "stem": "  A trolley rolls.\n", "marks": 3,
        "parts": [{"label": "a", "text": "State its speed.", "marks": 1}, {"label": "b(ii)", "text": "Explain why.", "marks": 2}],
        "mark_scheme": {"points": [{"part": "a", "text": "x"}, {"part": "b(ii)", "text": "y", "marks": 2}]}, "source": {"name": "test"},
    })
    assert answers.question_text(question) == "A trolley rolls.\n(a) State its speed.\n(b)(ii) Explain why."
    mcq = question.model_copy(update={"parts": [], "options": {"B": "two", "A": "one"}})
    assert answers.question_text(mcq) == "A trolley rolls.\nA one\nB two"
    assert collect.question_text is dataset.question_text is rewards.question_text is answers.question_text
