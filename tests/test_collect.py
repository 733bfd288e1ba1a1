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
    read = lambda name: [json.loads(line) for line in (path / name).read_text(encoding="utf-8").splitlines()] if (path / name).exists() else []  # noqa: E731
    return read("questions.jsonl"), read("rejects.jsonl"), read("near-duplicates.jsonl")


def summary(output):
    lines = output.splitlines()
    return dict(zip(lines[0].split(), map(int, lines[2].split())))


@pytest.mark.parametrize("variant", ["comma", "semicolon", "bom", "gbk"])
def test_csv_variants_import_the_same_questions(toy, tmp_path, variant):
    text = HEADER + "".join(ROWS)
    if variant == "semicolon":
        text = text.replace(",", ";")
    data = {"gbk": text.replace("second one", "第二个 one").encode("gbk"), "bom": "\ufeff".encode() + text.encode()}.get(variant, text.encode())
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
    assert "bank.csv:1: not valid utf-8-sig" in result.output and "--encoding gbk" in result.output
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
    (tmp_path / "map.toml").write_text('[columns]\nstem = "q"\noptions = "choices"\nkey = "answer"\n[defaults]\ntype = "mcq"\ntopic = "foundations"\n')
    stem = "A trolley accelerates uniformly from rest along a straight level track for four seconds. Which option is the second one listed here?"
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
        '"This sample question shows parts.","[{""label"": ""a"", ""text"": ""State it."", ""marks"": 1}, {""label"": ""b"", ""text"": ""Explain it."", ""marks"": 2}]",'
        '3 marks,"(a) a statement; (b) a reason [2]"\n'
    )
    result = run(tmp_path / "ws", str(tmp_path / "bank.csv"), "--column", "mark_scheme=scheme", "--default", "type=short", "--default", "topic=applications")
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
