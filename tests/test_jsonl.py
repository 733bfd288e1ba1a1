import json

import pytest
from tutor.errors import ValidationFailed
from tutor.jsonl import append_jsonl, read_jsonl, write_jsonl
from tutor.models import Diagram


def diagram(n):
    return Diagram(description=f"d{n}", format="tikz", code="c", author="test")


def problems(path):
    with pytest.raises(ValidationFailed) as info:
        read_jsonl(path, Diagram)
    return [str(p) for p in info.value.problems]


def test_round_trip(tmp_path):
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [diagram(1), diagram(2)])
    assert read_jsonl(path, Diagram) == [diagram(1), diagram(2)]


def test_every_problem_is_reported_with_file_line_and_field(tmp_path):
    path = tmp_path / "d.jsonl"
    good = json.dumps(diagram(1).model_dump())
    path.write_bytes(
        good.encode() + b"\n"
        + b"\n"  # blank lines are allowed
        + b'{"description": "x", "format": "tikz", "author": "a"}\n'
        + b"not json\n"
        + b'{"description": "caf\xe9"}\n'
        + good.encode() + b"\n"
        + b"[1, 2]\n"
    )
    assert problems(path) == [
        f"{path}:3: code: Field required",
        f"{path}:4: not valid JSON: Expecting value at column 1",
        f"{path}:5: not valid UTF-8 (byte 0xe9 at column 21)",
        f"{path}:6: id: duplicate id {diagram(1).id!r}, first on line 1",
        f"{path}:7: expected a JSON object, got list",
    ]


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    assert problems(path) == [f"{path}: file is empty"]


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path):
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [diagram(1)])

    def records():
        yield diagram(2)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_jsonl(path, records())
    assert read_jsonl(path, Diagram) == [diagram(1)]
    assert [p.name for p in tmp_path.iterdir()] == ["d.jsonl"]  # no temp file left behind


def test_append(tmp_path):
    path = tmp_path / "sub" / "d.jsonl"
    append_jsonl(path, [diagram(1)])
    append_jsonl(path, [diagram(2)])
    assert [d.description for d in read_jsonl(path, Diagram)] == ["d1", "d2"]


def test_a_torn_last_line_says_what_it_is_and_what_removes_it(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(diagram(1).model_dump()).encode() + b'\n{"description": "d2", "form')  # a crash mid-append
    assert problems(path) == [
        f"{path}:2: a torn last line (no newline, not valid JSON): a write was interrupted; "
        "the next `collect import` or `teach` run that writes this file removes it"
    ]


def test_appending_nothing_creates_nothing(tmp_path):
    append_jsonl(tmp_path / "d.jsonl", [])
    assert not (tmp_path / "d.jsonl").exists()


# --- the one reader's other modes ------------------------------------------------------------------


def test_iter_dicts_skips_what_a_crash_or_a_stray_byte_leaves(tmp_path):
    from tutor.jsonl import field_counts, iter_dicts

    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"id": "a", "ok": true}\n\nnot json\n[1]\n{"id": "caf\xe9"}\n{"id": "b", "ok": false}\n{"id": "a", "ok": tr')
    assert [(n, d["id"]) for n, d in iter_dicts(path)] == [(1, "a"), (6, "b")]
    assert field_counts(path, "id") == {"a": 1, "b": 1}
    assert field_counts(path, "id", where=lambda record: record["ok"]) == {"a": 1}
    assert list(iter_dicts(tmp_path / "missing.jsonl")) == [] and field_counts(tmp_path / "missing.jsonl", "id") == {}


def test_import_dicts_checks_the_whole_encoding_before_the_first_record(tmp_path):
    from tutor.errors import TutorError
    from tutor.jsonl import import_dicts

    path = tmp_path / "bank.jsonl"
    path.write_bytes('{"stem": "第二个"}\n[1]\nnot json\n'.encode("gbk"))
    assert [(n, d, why) for n, d, why in import_dicts(path, "gbk")] == [
        (1, {"stem": "第二个"}, ""), (2, None, "expected a JSON object, got list"),
        (3, None, "not valid JSON: Expecting value at column 1")]
    records = import_dicts(path, "utf-8")
    with pytest.raises(TutorError, match=r"bank.jsonl:1: not valid utf-8 \(byte 0xb5 at column 11\)"):
        next(records)  # nothing is yielded from a file in another encoding, not even the lines that decode


def test_every_stage_reads_json_lines_through_jsonl():
    """No core module splits a JSON Lines file into lines and parses them itself (train's log is train's to move)."""
    import re
    from pathlib import Path

    import tutor
    from tutor import collect, jsonl, teach

    assert teach.field_counts is jsonl.field_counts and collect.import_dicts is jsonl.import_dicts
    own = re.compile(r"json\.loads\((line|raw|entry)\b")
    core = Path(tutor.__file__).parent
    readers = [str(p.relative_to(core)) for p in core.rglob("*.py") if p.name not in ("jsonl.py", "train.py") and own.search(p.read_text())]
    assert readers == []


def test_a_json_error_names_its_column_once():
    from tutor.jsonl import parse_object

    data, why = parse_object('{"question": "a\tb"}')  # a raw tab inside a string: json's "Invalid control character at"
    assert data is None and why == "not valid JSON: Invalid control character at column 16"
