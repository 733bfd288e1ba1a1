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
    "key not an option": (0, lambda r: r.update(key="E"), True,
                          "questions.jsonl:1: key 'E' is not one of the options ['A', 'B', 'C', 'D']"),
    "part marks": (1, lambda r: r.update(marks=4), True, "questions.jsonl:2: part marks add up to 3, but the question has 4 marks"),
    "unknown type": (0, lambda r: r.update(type="essay"), False,
                     "questions.jsonl:1: type: unknown question type 'essay'; valid: mcq, short"),
    "control character": (0, lambda r: r.update(stem="Wh\x00" + r["stem"]), False,
                          "questions.jsonl:1: stem: contains a control character U+0000 at position 3"),
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


HEAVY = ("torch", "transformers", "datasets", "huggingface_hub", "jinja2", "openai", "numpy", "bs4", "selenium", "rich",
         "tutor.models", "pydantic")


def test_plugin_new_writes_a_subject_by_convention_with_a_gitignore(tmp_path):
    assert run("plugin", "new", "geo", "--path", str(tmp_path)).exit_code == 0
    root = tmp_path / "tutor-geo"
    assert {"__pycache__/", "*.egg-info/", "dist/", ".venv/"} <= set((root / ".gitignore").read_text().splitlines())
    assert (root / "tutor_geo" / "subject.toml").is_file() and (root / "tutor_geo" / "types.toml").is_file()
    assert "hookimpl" not in (root / "tutor_geo" / "__init__.py").read_text()  # the files are the plugin


def test_help_does_not_import_torch_or_load_heavy_modules():
    # Every installed plugin is loaded to list its commands, so neither a plugin module nor the core's
    # default plugins may build models at import: the models (and pydantic) load when a command needs them.
    code = (
        "import sys\n"
        "from tutor.cli import cli\n"
        "try:\n    cli(['--help'], prog_name='tutor')\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out and "Commands:" in out and "geography-topics" in out  # a plugin's command is listed


@pytest.mark.parametrize("module", ["tutor.default_plugins.formats", "tutor.default_plugins.sources", "tutor.default_plugins.templates",
                                    "tutor_physics", "tutor_economics", "tutor_chemistry", "tutor_geography", "tutor.plugins"])
def test_plugin_modules_import_without_the_models(module):
    code = f"import sys, {module}\nprint(sorted(m for m in ('tutor.models', 'pydantic') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


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
    assert result.output == f"error: {tmp_path / 'tutor.toml'}: templtes: Extra inputs are not permitted; did you mean 'templates'?\n"
    (tmp_path / "tutor.toml").write_text('templates = \n')
    assert "Invalid value (at line 1, column 13)" in run("--workspace", str(tmp_path), "config").output


def test_workspace_templates_override_the_subject(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("TUTOR_WORKSPACE", str(tmp_path))
    (tmp_path / "toy" / "templates").mkdir(parents=True)
    (tmp_path / "toy" / "templates" / "_tutor.j2").write_text("WORKSPACE TUTOR")
    result = run("--subject", "toy", "prompts", "render", "explain")
    assert result.output.startswith("=== system ===\nWORKSPACE TUTOR"), result.output


def test_broken_types_file_is_reported_with_line_and_field(toy_root, tmp_path):
    from tutor.errors import ValidationFailed
    from tutor.package import read_question_types, read_subject

    types = tmp_path / "types.toml"
    text = (toy_root / "tutor_toy" / "types.toml").read_text()
    text = text.replace('level = "A-Level"', 'level = "GCSE"', 2).replace('format = "structured"', 'format = "essayy"')
    types.write_text(text.replace("marks = 1", "marks = 1\nmarkign = 'points'"))
    text = types.read_text()
    with pytest.raises(ValidationFailed) as info:
        read_question_types(types, read_subject(toy_root / "tutor_toy" / "subject.toml"))  # with the subject: its levels
    first_table = text.splitlines().index("[[types]]") + 1
    second_table = text.splitlines().index("[[types]]", first_table) + 1
    assert [str(p) for p in info.value.problems] == [
        f"{types}:{first_table}: types[0] (mcq).level: level 'GCSE' is not one of toy's levels; valid: A-Level",
        f"{types}:{first_table}: types[0] (mcq).markign: Extra inputs are not permitted; did you mean 'marking'?",
        f"{types}:{second_table}: types[1] (short).level: level 'GCSE' is not one of toy's levels; valid: A-Level",
        f"{types}:{second_table}: types[1] (short).format: "
        "Input should be 'mcq', 'structured', 'essay', 'data-response', 'calculation' or 'practical'",
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


# --- a subject whose plugin failed ------------------------------------------------------------


def test_a_subject_whose_plugin_failed_exits_with_the_plugins_error(toy_root, subject_package):
    """A broken types.toml used to leave an empty `types` table (exit 0) and a bank of "unknown type ...; valid: " lines."""
    files = {name: (toy_root / "tutor_toy" / name).read_text().replace('"toy"', '"biology"') for name in ("subject.toml", "types.toml")}
    broken = files["types.toml"].replace('format = "mcq"', 'format = "multiple-choice"')
    package = subject_package("biology", {**files, "types.toml": broken})
    for command in (["types"], ["bank", "validate", str(toy_root / "tutor_toy" / "bank")]):
        result = run("--subject", "biology", *command)
        assert result.exit_code == 1, result.output
        error = result.output[result.output.index("error: "):]  # after the warning the registry gave as it was built
        assert error.startswith("error: subject 'biology' cannot be used: plugin 'biology' failed in register_question_types:\n")
        assert f"{package / 'types.toml'}:3: types[0] (mcq).format: Input should be 'mcq'" in error
    listed = {line.split()[0]: line for line in run("subjects").stdout.splitlines()[2:]}
    assert "plugin failed" in listed["biology"] and "plugin failed" not in listed["physics"]  # listing works, and says which


def test_a_subject_whose_subject_toml_is_broken_is_named_not_unknown(subject_package):
    subject_package("biology", {"subject.toml": 'title = "Biology"\nsyllabus = "9700"\ntopics = ["Cells"]\n', "types.toml": ""})
    result = run("--subject", "biology", "types")
    assert result.exit_code == 1
    assert "error: subject 'biology' cannot be used: plugin 'biology' failed in register_subjects:" in result.output
    assert "subject.toml:3: topics: topic 'Cells' must be a lowercase slug" in result.output[result.output.index("error: "):]


# --- formats, evaluators, rewards ---------------------------------------------------------------


def test_formats_evaluators_and_rewards_are_listed_with_where_they_come_from(toy):
    lines = run("formats").output.splitlines()
    assert lines[0].split() == ["format", "title", "body", "needs", "subjects", "from"]
    tikz = next(line for line in lines if line.startswith("tikz "))
    assert "\\begin{tikzpicture}" in tikz and "toy" in tikz and tikz.split()[-1] == "tutor"
    assert run("formats", "--preamble", "tikz").output.startswith("\\usepackage{amsmath}\n\\usepackage{tikz}")
    result = run("formats", "--preamble", "tikzz")
    assert result.exit_code == 2 and "unknown diagram format 'tikzz'; valid: " in result.output
    evaluators = {line.split()[0]: line for line in run("evaluators").output.splitlines()[2:]}
    assert {"mcq", "final-answer"} <= set(evaluators) and evaluators["final-answer"].split()[1:3] == ["calculation", "tutor"]
    rewards = {line.split()[0]: line.split()[1:5] for line in run("--subject", "toy", "rewards").output.splitlines()[2:]}
    assert rewards["mcq-correct"] == ["answer", "1", "all", "tutor"] and "diagram-compiles" in rewards


def test_rewards_for_a_subject_leave_out_other_subjects_rewards(toy, subject_package):
    subject_package("geo2", {"subject.toml": 'title = "G"\nsyllabus = "s"\ntopics = ["t"]\n', "types.toml": "", "__init__.py": """
        from tutor import hookimpl

        @hookimpl
        def register_rewards(register):
            from tutor import Reward
            register(Reward(name="geo2-only", description="d", task="answer", subjects=["geo2"], score=lambda batch: [0.0] * len(batch)))
    """})
    assert "geo2-only" not in run("--subject", "toy", "rewards").output
    assert "geo2-only" in run("rewards").output


# --- root causes first --------------------------------------------------------------------------


def test_a_changed_part_mark_is_reported_not_the_ids_that_follow_from_it(toy_bank):
    _edit(toy_bank / "questions.jsonl", lambda r: r["parts"][1].update(marks=3), line=1)  # parts 1 + 3, question 3
    result = run("--subject", "toy", "bank", "validate", str(toy_bank))
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{toy_bank / 'questions.jsonl'}:2: part marks add up to 4, but the question has 3 marks",
        "error: 1 problem",
    ]


def test_an_unclosed_marker_blames_the_answer_not_its_diagram(toy_bank):
    _edit(toy_bank / "answers.jsonl", lambda r: r.update(text=r["text"].rstrip(")")), line=1)
    result = run("--subject", "toy", "bank", "validate", str(toy_bank))
    assert result.output.splitlines() == [
        f"{toy_bank / 'answers.jsonl'}:2: text: line 3: '(DIAGRAM:' is never closed",
        "error: 1 problem",
    ]


# --- bank ids: the authoring aid ---------------------------------------------------------------


def test_bank_ids_fills_ids_and_links_by_prefix_and_by_old_id(toy_bank):
    questions, answers, diagrams = (toy_bank / name for name in ("questions.jsonl", "answers.jsonl", "diagrams.jsonl"))
    records = {path: [json.loads(line) for line in path.read_text().splitlines()] for path in (questions, answers, diagrams)}
    short_id = records[questions][1]["id"]
    # Hand-written: answers and diagrams without ids, an answer pointing at its question by a prefix...
    for record in records[answers] + records[diagrams] + records[questions][:1]:
        record.pop("id")
    records[answers][0]["question_id"] = records[answers][0]["question_id"][:6]
    # ...and the short question's stem edited: its id, and the records pointing at it, are now stale.
    records[questions][1]["stem"] += " Edited."
    for path, rows in records.items():
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    before = {path: path.read_text() for path in records}

    check = run("--subject", "toy", "bank", "ids", str(toy_bank))
    assert check.exit_code == 1, check.output
    assert {path: path.read_text() for path in records} == before  # without --write nothing changes
    assert run("--subject", "toy", "bank", "ids", str(toy_bank), "--write").exit_code == 0
    new_short = json.loads(questions.read_text().splitlines()[1])["id"]
    assert f"{answers}:2: question_id: {short_id} -> {new_short}" in check.stdout
    assert f"{diagrams}:1: question_id: {short_id} -> {new_short}" in check.stdout
    assert f"{answers}:1: question_id: {records[answers][0]['question_id']} -> " in check.stdout
    assert "8 to change; --write makes them" in check.stderr  # 3 ids filled, 2 made current, 3 links
    validate = run("--subject", "toy", "bank", "validate", str(toy_bank))
    assert validate.exit_code == 0, validate.output
    again = run("--subject", "toy", "bank", "ids", str(toy_bank))
    assert again.exit_code == 0 and again.stdout == "" and "every id and link is right" in again.stderr
    assert list(json.loads(questions.read_text().splitlines()[0]))[0] == "id"  # ids lead their records


def test_bank_ids_reports_links_it_cannot_resolve(toy_bank):
    _edit(toy_bank / "answers.jsonl", lambda r: r.update(question_id="feed"), keep_id=False)
    result = run("--subject", "toy", "bank", "ids", str(toy_bank), "--write")
    assert result.exit_code == 1
    assert f"{toy_bank / 'answers.jsonl'}:1: question_id: no question with id 'feed'" in result.output
