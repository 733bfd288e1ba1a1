import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tutor.cli import cli


def run(*args, **kwargs):
    return CliRunner().invoke(cli, list(args), **kwargs)


def test_unknown_subject_exits_2_and_lists_installed(toy):
    result = run("--subject", "biologee", "types")
    assert result.exit_code == 2
    assert result.output.startswith("error: unknown subject 'biologee'; valid: ")
    assert "toy" in result.output and len(result.output.strip().splitlines()) == 1


def test_missing_subject_says_how_to_give_one(toy):
    result = run("types")
    assert result.exit_code == 2 and "use --subject" in result.output


def test_subjects_and_types_tables(toy):
    assert "toy" in run("subjects").output
    result = run("--subject", "toy", "types")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["id", "name", "level", "format", "marks", "diagrams"]
    assert lines[2].split()[:2] == ["mcq", "Multiple"] and "optional (tikz)" in lines[3]


def test_plugins_prints_json_with_hooks(toy):
    plugins = {p["name"]: p for p in json.loads(run("plugins").output)}
    assert plugins["toy"]["hooks"] == ["register_prompt_templates", "register_question_types", "register_subjects"]
    assert plugins["tutor.default_plugins.formats"] == {
        "name": "tutor.default_plugins.formats", "distribution": "tutor", "version": plugins["tutor.default_plugins.formats"]["version"],
        "hooks": ["register_diagram_formats"],
    }


def test_bundled_bank_validates(toy):
    result = run("--subject", "toy", "bank", "validate")
    assert result.exit_code == 0, result.output
    assert "ok: 2 questions, 2 gold answers, 1 diagrams" in result.output


def _edit(path, change, line=0, keep_id=True):
    lines = path.read_text().splitlines()
    record = json.loads(lines[line])
    change(record)
    if not keep_id:
        record.pop("id")  # the content changed, so its old id would be reported too
    lines[line] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")


BAD_QUESTIONS = {  # case: (line, change, keep id, expected problem)
    "no mark scheme": (0, lambda r: r.pop("mark_scheme"), True, "questions.jsonl:1: mark_scheme: Field required"),
    "key not an option": (0, lambda r: r.update(key="E"), True, "questions.jsonl:1: key 'E' is not one of the options ['A', 'B', 'C', 'D']"),
    "part marks": (1, lambda r: r.update(marks=4), True, "questions.jsonl:2: part marks add up to 3, but the question has 4 marks"),
    "unknown type": (0, lambda r: r.update(type="essay"), False, "questions.jsonl:1: type: unknown question type 'essay'; valid: mcq, short"),
    "control character": (0, lambda r: r.update(stem="Wh\x00" + r["stem"]), False, "questions.jsonl:1: stem: contains a control character U+0000 at position 3"),
}


@pytest.mark.parametrize("case", BAD_QUESTIONS)
def test_bad_questions_are_reported_with_file_line_and_nothing_is_written(toy_bank, case):
    line, change, keep_id, expected = BAD_QUESTIONS[case]
    _edit(toy_bank / "questions.jsonl", change, line, keep_id)
    before = {p.name: p.read_bytes() for p in toy_bank.iterdir()}
    result = run("--subject", "toy", "bank", "validate", str(toy_bank))
    assert result.exit_code == 1
    assert any(out.endswith(expected) for out in result.output.splitlines()), result.output
    assert result.output.splitlines()[-1].startswith("error: ")
    assert {p.name: p.read_bytes() for p in toy_bank.iterdir()} == before


def test_invalid_utf8_duplicates_and_empty_file(toy_bank):
    questions = toy_bank / "questions.jsonl"
    first = questions.read_bytes().splitlines()[0]
    questions.write_bytes(first + b"\n" + first + b"\n" + first.replace(b"Which", b"Wh\xffich") + b"\n")
    result = run("--subject", "toy", "bank", "validate", str(questions))
    assert result.exit_code == 1
    assert f"{questions}:2: id: duplicate id" in result.output
    assert f"{questions}:3: not valid UTF-8 (byte 0xff" in result.output
    questions.write_bytes(b"")
    result = run("--subject", "toy", "bank", "validate", str(questions))
    assert result.exit_code == 1 and f"{questions}: file is empty" in result.output


def test_gold_answer_checks(toy_bank):
    answers = toy_bank / "answers.jsonl"
    _edit(answers, lambda r: r.update(text="I am not sure.\nAnswer: C"), keep_id=False)
    result = run("--subject", "toy", "bank", "validate", str(toy_bank))
    assert "answers.jsonl:1: text: the MCQ gold answer does not commit to the key (chose C; key B)" in result.output


def test_missing_bank_path(toy, tmp_path):
    result = run("--subject", "toy", "bank", "validate", str(tmp_path / "nope"))
    assert result.exit_code == 1 and "no such file" in result.output


def test_prompts_render_answer_for_a_question_prefix(toy):
    from tutor.bank import load_bank

    question = load_bank(toy, toy.subject.bank).questions[1]
    result = run("--subject", "toy", "prompts", "render", "answer", "--question", question.id[:6])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("=== system ===\nYou are an expert Toy teacher")  # the toy's own _tutor.j2
    assert "(a) State what a marking point is. [1]" in result.output
    assert "- (b) so examiners credit any valid point, up to the maximum [1]" in result.output
    assert "(DIAGRAM:" in result.output and "Short structured question" in result.output


def test_prompts_render_json_and_every_kind(toy):
    for kind in ["answer", "explain", "set", "mark", "diagram"]:
        result = run("--subject", "toy", "prompts", "render", kind, "--json")
        assert result.exit_code == 0, (kind, result.output)
        assert [m["role"] for m in json.loads(result.output)] == ["system", "user"]


def test_unknown_prompt_kind_and_question(toy):
    result = run("--subject", "toy", "prompts", "render", "poem")
    assert result.exit_code == 2 and "unknown prompt kind 'poem'; valid: answer, diagram, explain, mark, set" in result.output
    result = run("--subject", "toy", "prompts", "render", "answer", "--question", "zzz")
    assert result.exit_code == 2 and "unknown question id 'zzz'" in result.output


def test_plugin_new_refuses_bad_names_and_existing_folders(tmp_path):
    result = run("plugin", "new", "Bad-Name", "--path", str(tmp_path))
    assert result.exit_code == 1 and "must be lowercase letters" in result.output
    assert run("plugin", "new", "geo", "--path", str(tmp_path)).exit_code == 0
    result = run("plugin", "new", "geo", "--path", str(tmp_path))
    assert result.exit_code == 1 and "already exists" in result.output


def test_help_does_not_import_torch_or_load_heavy_modules():
    code = (
        "import sys\n"
        "from tutor.cli import cli\n"
        "try:\n    cli(['--help'], prog_name='tutor')\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'datasets', 'huggingface_hub', 'jinja2', 'openai', 'numpy', 'bs4', 'selenium', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out and "Commands:" in out


def test_config_defaults_and_validation(tmp_path):
    result = run("--workspace", str(tmp_path), "config")
    config = json.loads(result.output)["config"]
    assert result.exit_code == 0 and config["templates"] is None and config["teacher"]["preset"] == "deepseek-reasoner"
    (tmp_path / "tutor.toml").write_text('templates = "my-prompts"\n[teacher]\npreset = "local"\n')
    config = json.loads(run("--workspace", str(tmp_path), "config").output)["config"]
    assert (config["templates"], config["teacher"]["preset"]) == ("my-prompts", "local")
    (tmp_path / "tutor.toml").write_text('templtes = "typo"\n')
    result = run("--workspace", str(tmp_path), "config")
    assert result.exit_code == 1
    assert result.output == f"error: {tmp_path / 'tutor.toml'}: templtes: Extra inputs are not permitted\n"
    (tmp_path / "tutor.toml").write_text('templates = \n')
    assert "Invalid value (at line 1, column 13)" in run("--workspace", str(tmp_path), "config").output


def test_workspace_templates_override_the_subject(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("TUTOR_WORKSPACE", str(tmp_path))
    (tmp_path / "toy" / "templates").mkdir(parents=True)
    (tmp_path / "toy" / "templates" / "_tutor.j2").write_text("WORKSPACE TUTOR")
    result = run("--subject", "toy", "prompts", "render", "explain")
    assert result.output.startswith("=== system ===\nWORKSPACE TUTOR"), result.output


def test_broken_types_file_is_reported_with_line_and_field(toy_root, tmp_path):
    from tutor.bank import read_question_types
    from tutor.errors import ValidationFailed

    types = tmp_path / "types.toml"
    text = (toy_root / "tutor_toy" / "types.toml").read_text()
    types.write_text(text.replace('level = "A-Level"', 'level = "GCSE"', 2).replace('format = "structured"', 'format = "essayy"'))
    with pytest.raises(ValidationFailed) as info:
        read_question_types(types, "toy")
    first_table = text.splitlines().index("[[types]]") + 1
    second_table = text.splitlines().index("[[types]]", first_table) + 1
    assert [str(p) for p in info.value.problems] == [
        f"{types}:{first_table}: types[0] (mcq).level: Input should be 'A-Level' or 'IGCSE'",
        f"{types}:{second_table}: types[1] (short).level: Input should be 'A-Level' or 'IGCSE'",
        f"{types}:{second_table}: types[1] (short).format: Input should be 'mcq', 'structured', 'essay', 'data-response', 'calculation' or 'practical'",
    ]


def test_bank_list_shows_ids_and_filters_by_type(toy):
    result = run("--subject", "toy", "bank", "list", "--type", "short")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["id", "type", "topic", "marks", "stem"] and len(lines) == 3
    assert lines[2].split()[1:4] == ["short", "applications", "3"]
    assert run("--subject", "toy", "bank", "list", "--type", "nope").exit_code == 2


def test_bank_stats(toy):
    result = run("--subject", "toy", "bank", "stats", "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["per_type"] == {"mcq": 1, "short": 1} and stats["per_topic"] == {"foundations": 1, "applications": 1}
    assert stats["per_level"] == {"A-Level": 2} and stats["mcq_keys"] == {"A": 0, "B": 1, "C": 0, "D": 0}
    assert stats["with_diagram"] == {"mcq": [0, 1], "short": [1, 1]} and stats["diagram_share"] == 0.5
    text = run("--subject", "toy", "bank", "stats").output
    assert "gold answers with a (DIAGRAM: ...) marker: 50%" in text and "toy: 2 questions, 2 gold answers, 1 diagrams" in text


def test_gold_answer_length_must_fit_its_type(toy_bank):
    _edit(toy_bank / "answers.jsonl", lambda r: r.update(text="B.\n" + "word " * 200 + "\nAnswer: B"), keep_id=False)
    result = run("--subject", "toy", "bank", "validate", str(toy_bank))
    assert "answers.jsonl:1: text: 203 words; a mcq answer has 15 to 120 (diagram descriptions not counted)" in result.output


def test_bank_commands_read_the_workspace_bank_and_say_which(toy, tmp_path):
    folder = tmp_path / "ws" / "toy" / "bank"
    folder.mkdir(parents=True)
    first = (toy.subject.bank / "questions.jsonl").read_text().splitlines()[0]
    (folder / "questions.jsonl").write_text(first + "\n")  # what `collect import` brought in: one question, no answers yet
    ws = ["--workspace", str(tmp_path / "ws"), "--subject", "toy", "bank"]
    validate = run(*ws, "validate")
    assert validate.exit_code == 0, validate.output
    assert validate.stdout == f"toy: {folder}: ok: 1 questions, 0 gold answers, 0 diagrams\n"
    assert json.loads(run(*ws, "stats", "--json").stdout)["questions"] == 1
    assert len(run(*ws, "list").stdout.splitlines()) == 3
    for command in (["validate"], ["stats"], ["list"]):
        assert run(*ws, *command).stderr == f"bank: {folder} (the workspace's)\n"
    # No bank in the workspace yet: the subject's sample bank, and it says so.
    result = run("--workspace", str(tmp_path / "other"), "--subject", "toy", "bank", "list")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 4
    assert result.stderr == f"bank: {toy.subject.bank} (the subject's sample bank)\n"
