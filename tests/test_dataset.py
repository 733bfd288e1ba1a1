"""Datasets built from the physics sample bank: the split, the leakage check, identity, the card, both roles.

Real `datasets` and the real embedded tokenizer (materialised once per session,
like test_basemodels); the split and leakage logic are also tested without a
tokenizer, which is fast.
"""

import json
import random
import shutil

import pytest
from click.testing import CliRunner

pytest.importorskip("datasets")

from tutor import dataset as ds  # noqa: E402
from tutor.bank import Bank, load_bank  # noqa: E402
from tutor.cli import cli  # noqa: E402
from tutor.config import TrainConfig  # noqa: E402
from tutor.errors import TutorError  # noqa: E402
from tutor.jsonl import read_jsonl, write_jsonl  # noqa: E402
from tutor.models import GoldAnswer, Question  # noqa: E402
from tutor.registry import get_subject  # noqa: E402
from tutor.workspace import Workspace  # noqa: E402

DEFAULT = TrainConfig()


@pytest.fixture(scope="module")
def physics():
    return get_subject("physics")


@pytest.fixture(scope="module")
def bank(physics):
    return load_bank(physics, physics.subject.bank, require_answers=True)


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    """The embedded model's tokenizer; materialised into the same session cache test_basemodels uses."""
    pytest.importorskip("transformers")
    from tutor.basemodels import load_tokenizer, materialise_embedded

    patch = pytest.MonkeyPatch()
    patch.setenv("TUTOR_MODELS_DIR", str(tmp_path_factory.getbasetemp() / "tutor-models"))
    path = materialise_embedded(say=lambda _: None)
    yield load_tokenizer()
    patch.undo()
    shutil.rmtree(path, ignore_errors=True)  # 540 MB: pytest keeps the last three runs' temporary folders


def build(physics, bank, role="answer", settings=DEFAULT, **kwargs):
    return ds.build(physics, bank, role, settings, **kwargs)


def split_of(built):
    """question id -> split, for the exam examples of a build."""
    return {e.question_id: name for name, examples in built.splits.items() for e in examples if e.question_id}


# --- the split ---------------------------------------------------------------------------


def test_split_is_deterministic_and_independent_of_file_order(physics, bank):
    first = build(physics, bank)
    shuffled = Bank(random.Random(1).sample(bank.questions, len(bank.questions)), bank.answers[::-1], bank.diagrams[::-1])
    again = build(physics, shuffled)
    assert again.fingerprint == first.fingerprint
    assert {n: [e.id for e in v] for n, v in again.splits.items()} == {n: [e.id for e in v] for n, v in first.splits.items()}
    other_seed = build(physics, bank, settings=DEFAULT.model_copy(update={"seed": 7}))
    assert split_of(other_seed) != split_of(first) and other_seed.fingerprint != first.fingerprint


@pytest.mark.parametrize("validation,test", [(0.1, 0.1), (0.2, 0.2), (0.0, 0.25)])
def test_split_is_stratified_by_question_type(physics, bank, validation, test):
    settings = DEFAULT.model_copy(update={"validation": validation, "test": test})
    units = ds.bank_units(bank)
    plan = ds.plan_split(units, settings)
    # Question types, and for the diagrams of no question, their formats.
    assert set(plan.strata) == set(physics.types) | {"diagram/tikz", "diagram/circuitikz"}
    groups = sum(sum(counts.values()) for counts in plan.strata.values())
    total = {name: sum(counts[name] for counts in plan.strata.values()) for name in ds.SPLITS}
    assert total["validation"] + total["test"] == int(groups * (validation + test) + 0.5)  # the totals come out right
    assert abs(total["test"] - groups * test) <= 1 and abs(total["validation"] - groups * validation) <= 1
    for stratum, counts in plan.strata.items():
        size = sum(counts.values())
        held = counts["validation"] + counts["test"]
        assert counts["train"] >= 1, stratum  # every type is trained on
        assert abs(held - size * (validation + test)) < 1, (stratum, counts)  # and held out in proportion, within one
        if size * (validation + test) >= 1:
            assert held >= 1, (stratum, counts)
        if size * test >= 1:
            assert counts["test"] >= 1, (stratum, counts)


def test_a_type_with_one_question_stays_in_train(physics, bank):
    lonely = next(q for q in bank.questions if q.type == "alevel-planning")
    others = [q for q in bank.questions if q.type != "alevel-planning"]
    small = Bank([lonely, *others], bank.answers, bank.diagrams)
    plan = ds.plan_split(ds.bank_units(small), DEFAULT.model_copy(update={"validation": 0.4, "test": 0.4}))
    assert plan.split[lonely.id] == "train"


def test_near_duplicates_share_a_split_but_rubric_does_not_glue_a_type(physics, bank):
    original = next(q for q in bank.questions if q.type == "alevel-calculation")
    data = original.model_dump(mode="json", exclude={"id"})
    data["stem"] = data["stem"].replace(".", ",", 1) + " Give your answer to two significant figures."
    twin = Question.model_validate(data)
    gold = bank.answers_to(original.id)[0]
    twin_gold = GoldAnswer(question_id=twin.id, text=gold.text + "\nThe answer is given to two significant figures.", author="test")
    bigger = Bank([*bank.questions, twin], [*bank.answers, twin_gold], bank.diagrams)
    for seed in range(6):
        plan = ds.plan_split(ds.bank_units(bigger), DEFAULT.model_copy(update={"seed": seed, "validation": 0.3, "test": 0.3}))
        assert plan.split[twin.id] == plan.split[original.id]
        assert any({twin.id, original.id} <= set(group) for group in plan.groups)
    # The A-Level planning questions all end with the same rubric; they are still split.
    planning = {q.id for q in bank.questions if q.type == "alevel-planning"}
    plan = ds.plan_split(ds.bank_units(bank), DEFAULT)
    assert not any(planning <= set(group) for group in plan.groups)
    assert any("procedure to be followed" in " ".join(gram) for gram in plan.rubric)


# --- the leakage check -----------------------------------------------------------------------


def test_no_test_question_appears_in_train(physics, bank):
    for settings in (DEFAULT, DEFAULT.model_copy(update={"seed": 3, "validation": 0.2, "test": 0.3})):
        built = build(physics, bank, settings=settings)
        train_ids = {e.question_id for e in built.splits["train"]}
        held = {e.question_id for name in ("validation", "test") for e in built.splits[name]}
        assert held and not held & train_ids
        assert all(report["checked"] and not (report["exact"] or report["overlap"] or report["near"])
                   for report in built.meta["leakage"].values())
        # Without the rubric allowance, only questions that carry the exam's fixed wording overlap.
        rubric = ds.plan_split(ds.bank_units(bank), settings).rubric
        for name in ("validation", "test"):
            strict = ds.check_leakage(built.splits["train"], built.splits[name], rubric=set())
            assert not strict.exact and not strict.near
            for example in built.splits[name]:
                if example.id in strict.overlap:
                    assert ds.probe_grams(example.probe) & rubric


def test_check_leakage_finds_copies_overlaps_and_near_duplicates(physics, bank):
    built = build(physics, bank)
    train = built.splits["train"]
    source = next(e for e in train if e.kind == "answer" and len(ds.words(e.probe)) > 30 and " the " in e.probe)

    def held(probe):
        return ds.Example("answer", [{"role": "user", "content": probe}, {"role": "assistant", "content": "x"}], probe=probe)

    copy = held("  " + source.probe.upper().replace(" ", "   ") + " ")  # case and spacing do not hide a copy
    words = ds.words(source.probe)
    excerpt = held("Consider this. " + " ".join(words[5:18]) + " Then explain something else entirely, please.")
    near = held(source.probe.replace(" the ", " a ", 1) + " Explain.")  # one word changed, one added
    fresh = held("Describe an experiment, entirely unlike any in the bank, on the acoustics of a cathedral organ pipe.")
    report = ds.check_leakage(train, [copy, excerpt, near, fresh], rubric=set())
    assert report.checked == 4 and not report.clean
    assert copy.id in report.exact and copy.id in report.overlap and copy.id in report.near
    assert excerpt.id in report.overlap and excerpt.id not in report.exact
    assert near.id in report.near
    assert fresh.id not in report.exact + report.overlap + report.near
    # A gram that is rubric is not counted as overlap.
    rubric = ds.probe_grams(" ".join(words[5:18]))
    assert excerpt.id not in ds.check_leakage(train, [excerpt], rubric=rubric).overlap


def test_a_leaking_dataset_is_not_saved(physics, bank, tmp_path, monkeypatch):
    # Sabotage the grouping, so a twin of a train question lands in test: the check must catch it.
    original = next(q for q in bank.questions if q.type == "igcse-calculation")
    data = original.model_dump(mode="json", exclude={"id"})
    data["stem"] += " Show your working."
    twin = Question.model_validate(data)
    gold = bank.answers_to(original.id)[0]
    bigger = Bank([*bank.questions, twin], [*bank.answers, GoldAnswer(question_id=twin.id, text=gold.text, author="test")], bank.diagrams)
    monkeypatch.setattr(ds, "group_units", lambda units: ([[u] for u in units], set()))
    found_leak = False
    for seed in range(20):
        plan = ds.plan_split(ds.bank_units(bigger), DEFAULT.model_copy(update={"seed": seed}))
        if {plan.split[twin.id], plan.split[original.id]} & {"train"} and plan.split[twin.id] != plan.split[original.id]:
            with pytest.raises(TutorError, match="leakage check failed, nothing saved"):
                build(physics, bigger, settings=DEFAULT.model_copy(update={"seed": seed}), out=tmp_path / "answer")
            found_leak = True
            break
    assert found_leak and not (tmp_path / "answer").exists()


# --- identity examples ----------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.0, 0.05, 0.2, 0.5])
def test_identity_examples_are_mixed_in_at_the_ratio(physics, bank, ratio):
    settings = DEFAULT.model_copy(update={"identity_ratio": ratio, "identity_maker": "the Ridgeway School physics department"})
    built = build(physics, bank, settings=settings)
    train = built.splits["train"]
    identity = [e for e in train if e.kind == "identity"]
    assert abs(len(identity) - ratio * len(train)) <= 1
    assert len(identity) == ds.identity_count(len(train) - len(identity), ratio)
    assert not any(e.kind == "identity" for name in ("validation", "test") for e in built.splits[name])
    assert len({e.id for e in train}) == len(train)  # repeats of the pool still have their own ids
    if identity:
        system = ds.tutor_system_prompt(physics)
        assert all(e.messages[0] == {"role": "system", "content": system} for e in identity)
        replies = " ".join(e.messages[-1]["content"] for e in identity)
        assert "Physics" in replies and "{" not in replies
    if ratio == 0.5:  # more than the pool: every phrasing is used, then repeated
        assert {e.messages[1]["content"] for e in identity} == {q for q, _ in ds.IDENTITY}
        assert "the Ridgeway School physics department" in replies and "Physics Tutor" in replies


def test_identity_name_is_configurable(physics):
    settings = DEFAULT.model_copy(update={"identity_name": "Newton"})
    examples = ds.identity_examples(physics, len(ds.IDENTITY), settings, "system")
    who = next(e for e in examples if e.messages[1]["content"] == "Who are you?")
    assert who.messages[2]["content"].startswith("I am Newton, a tutor for Cambridge International AS & A Level Physics")


# --- examples longer than max_length --------------------------------------------------------


class WordTokenizer:
    """One token per word, through a plain chat template: enough to count lengths, and instant."""

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + ("\nassistant:" if add_generation_prompt else "")

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [text.split() for text in texts]}


def test_examples_longer_than_max_length_are_warned_about_with_their_ids(physics, bank, tmp_path, monkeypatch):
    lengths = sorted(n for n, _ in ds.token_lengths(WordTokenizer(), build(physics, bank).splits["train"]))
    limit = lengths[-5]  # the four longest train examples are over it, and maybe some held-out ones
    built = build(physics, bank, settings=DEFAULT.model_copy(update={"max_length": limit}), tokenizer=WordTokenizer())
    over = [e.id for name in ds.SPLITS for e, (n, _) in zip(built.splits[name], ds.token_lengths(WordTokenizer(), built.splits[name]))
            if n > limit]
    assert len(over) >= 4 and [i for name in ds.SPLITS for i in built.meta["tokens"][name]["over_max_length_ids"]] == over
    total = sum(len(v) for v in built.splits.values())
    assert ds.too_long_line(built) == (f"{len(over)} of {total} answer examples are longer than max_length = {limit} tokens "
                                       f"and will be cut in training: {', '.join(over[:3])} and {len(over) - 3} more "
                                       f"(raise [train] max_length; the card lists them all)")
    assert ds.too_long_line(build(physics, bank, tokenizer=WordTokenizer())) is None  # 2048: nothing is that long
    assert ds.too_long_line(build(physics, bank)) is None  # not counted without a tokenizer

    # `dataset build` says it, once, on stderr.
    import tutor.basemodels

    monkeypatch.setattr(tutor.basemodels, "load_tokenizer", lambda *a, **k: WordTokenizer())
    (tmp_path / "tutor.toml").write_text(f"[train]\nmax_length = {limit}\n")
    result = CliRunner().invoke(cli, ["--subject", "physics", "--workspace", str(tmp_path), "dataset", "build", "--role", "answer"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {ds.too_long_line(built)}"]


# --- what the examples hold -----------------------------------------------------------------


def test_answer_examples_are_the_tutor_prompt_and_the_gold_answer(physics, bank):
    built = build(physics, bank)
    by_question = {q.id: q for q in bank.questions}
    exam = [e for examples in built.splits.values() for e in examples if e.kind == "answer"]
    assert len(exam) == len(bank.answers)
    for example in exam:
        question = by_question[example.question_id]
        system, user, assistant = example.messages
        assert system == {"role": "system", "content": ds.tutor_system_prompt(physics)}
        assert system["content"].startswith("You are an expert Physics teacher and examiner")
        assert user["content"].startswith(f"Answer this {physics.types[question.type].name} question.\n\n")
        assert f"[Total: {question.marks} mark" in user["content"] and question.stem.split("\n")[0] in user["content"]
        assert assistant == {"role": "assistant", "content": bank.answers_to(question.id)[0].text.strip()}
        assert (example.type, example.marks, example.topic) == (question.type, question.marks, question.topic)
        for letter, option in question.options.items():
            assert f"{letter}  {option}" in user["content"]
    with_diagrams = [e for e in exam if "(DIAGRAM:" in e.messages[-1]["content"]]
    assert len(with_diagrams) == sum(1 for a in bank.answers if a.diagrams)


def test_diagram_examples_follow_their_questions_split(physics, bank):
    answer = build(physics, bank, "answer")
    diagram = build(physics, bank, "diagram")
    assert sum(len(v) for v in diagram.splits.values()) == len(bank.diagrams)
    where = split_of(answer)
    by_description = {d.description: d for d in bank.diagrams}
    for name, examples in diagram.splits.items():
        for example in examples:
            source = by_description[example.probe]
            if source.question_id:
                assert where[source.question_id] == name  # a test question's diagrams are test diagrams
            system, user, assistant = example.messages
            assert example.kind == "diagram" and example.format == source.format
            assert source.description in user["content"] and physics.format(source.format).title in system["content"]
            assert assistant["content"].startswith("```latex\n") and assistant["content"].endswith("\n```")
            assert physics.format(source.format).extract(assistant["content"]) == source.code.strip()
    assert diagram.meta["counts"].keys() == {"tikz", "circuitikz"}
    assert diagram.splits["test"], "the physics sample's test questions have diagrams"


def test_workspace_templates_change_the_prompts(physics, bank, tmp_path):
    (tmp_path / "_tutor.j2").write_text("You are the {{ subject.title }} tutor of Ridgeway School.")
    built = build(physics, bank, user_dirs=[tmp_path])
    assert {e.messages[0]["content"] for v in built.splits.values() for e in v} == {"You are the Physics tutor of Ridgeway School."}
    assert built.fingerprint != build(physics, bank).fingerprint


# --- saved, with a card, through the CLI --------------------------------------------------------


@pytest.mark.slow
def test_saved_dataset_card_and_tokens(physics, bank, tokenizer, tmp_path):
    from datasets import load_from_disk

    workspace = Workspace(tmp_path)
    target = ds.dataset_dir(workspace, "physics", "answer")
    built = build(physics, bank, tokenizer=tokenizer, tokenizer_name="smollm2-135m", bank_label="the sample bank", out=target)
    saved = load_from_disk(str(target))
    assert {name: len(saved[name]) for name in ds.SPLITS} == {name: len(v) for name, v in built.splits.items()}
    row = saved["train"][0]
    assert row["subject"] == "physics" and [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert set(saved["train"].column_names) == {"id", "subject", "kind", "question_id", "type", "topic", "marks", "format", "messages"}

    meta = json.loads((target / ds.META).read_text())
    assert meta["fingerprint"] == built.fingerprint and meta["subject"] == "physics" and meta["role"] == "answer"
    tokens = meta["tokens"]["train"]
    lengths = ds.token_lengths(tokenizer, built.splits["train"])
    assert tokens["tokens"] == sum(n for n, _ in lengths) and tokens["max"] == max(n for n, _ in lengths)
    assert all(0 < reply < total for total, reply in lengths)
    rendered = tokenizer.apply_chat_template(built.splits["train"][0].messages, tokenize=True)
    rendered = rendered["input_ids"] if hasattr(rendered, "keys") else rendered
    assert lengths[0][0] == len(rendered)

    card = (target / ds.CARD).read_text()
    assert f"Fingerprint: `{built.fingerprint}`" in card
    for qtype, counts in meta["counts"].items():
        assert f"| {qtype} | {counts['train']} | {counts['validation']} | {counts['test']} | {sum(counts.values())} |" in card
    assert "| alevel-mcq |" in card and "| identity |" in card
    assert "## Tokens" in card and "smollm2-135m" in card and f"| train | {tokens['examples']} | {tokens['tokens']} |" in card
    assert "## Leakage check" in card and "**Passed**" in card and "13-gram overlaps" in card
    assert "exam's fixed wording" in card  # the planning rubric, reported

    loaded, loaded_meta = ds.load(workspace, "physics", "answer")
    assert loaded_meta["fingerprint"] == built.fingerprint and len(loaded["test"]) == len(built.splits["test"])
    # A dataset is bound to its subject: economics must not be taught from physics' data.
    shutil.copytree(target, ds.dataset_dir(workspace, "economics", "answer"))
    with pytest.raises(TutorError, match="belongs to 'physics', not 'economics': refusing to train economics on it"):
        ds.load(workspace, "economics", "answer")
    with pytest.raises(TutorError, match="no diagram dataset for physics"):
        ds.load(workspace, "physics", "diagram")


@pytest.mark.slow
def test_cli_builds_both_roles_from_the_bundled_bank(tokenizer, tmp_path):
    result = CliRunner().invoke(cli, ["--subject", "physics", "--workspace", str(tmp_path), "dataset", "build"])
    assert result.exit_code == 0, result.output
    assert "bank: the bundled sample bank of tutor-physics (the workspace has no bank): 65 questions" in result.output
    for role in ds.ROLES:
        folder = tmp_path / "physics" / "datasets" / role
        assert f"\n{role}: {folder}  (fingerprint " in result.output
        assert (folder / ds.CARD).is_file() and (folder / "dataset_dict.json").is_file()
    assert result.output.count("leakage check passed") == 2
    again = CliRunner().invoke(cli, ["--subject", "physics", "--workspace", str(tmp_path), "dataset", "build", "--role", "answer"])
    assert again.exit_code == 0 and "diagram:" not in again.output
    assert again.output.split("fingerprint ")[1][:16] == result.output.split("fingerprint ")[1][:16]  # rebuilt the same


@pytest.mark.slow
def test_cli_prefers_the_workspace_bank_when_it_has_gold_answers(physics, tokenizer, tmp_path):
    bank_dir = tmp_path / "physics" / "bank"
    questions = read_jsonl(physics.subject.bank / "questions.jsonl", Question)
    write_jsonl(bank_dir / "questions.jsonl", questions[:30])
    run = ["--subject", "physics", "--workspace", str(tmp_path), "dataset", "build"]
    result = CliRunner().invoke(cli, run)
    assert "the bundled sample bank of tutor-physics (the workspace bank has no gold answers yet)" in result.output
    answers = read_jsonl(physics.subject.bank / "answers.jsonl", GoldAnswer)
    write_jsonl(bank_dir / "answers.jsonl", [a for a in answers if a.question_id in {q.id for q in questions[:20]}])
    result = CliRunner().invoke(cli, run)
    assert result.exit_code == 0, result.output
    assert f"bank: the workspace bank {bank_dir}: 30 questions, 20 gold answers, 0 diagrams" in result.output
    assert "diagram: skipped, the bank has no diagrams" in result.output
    meta = json.loads((tmp_path / "physics" / "datasets" / "answer" / ds.META).read_text())
    assert meta["skipped"]["questions_without_gold_answer"] == 10
    assert sum(sum(c.values()) for t, c in meta["counts"].items() if t != "identity") == 20
    result = CliRunner().invoke(cli, [*run, "--role", "diagram"])
    assert result.exit_code == 1 and "error: the bank has no diagrams: nothing to build the diagram dataset from" in result.output


def test_cli_rejects_bad_settings_in_one_line(tmp_path):
    (tmp_path / "tutor.toml").write_text("[train]\nvalidation = 0.6\n")
    result = CliRunner().invoke(cli, ["--subject", "physics", "--workspace", str(tmp_path), "dataset", "build", "--test", "0.5"])
    assert result.exit_code == 1 and result.output == "error: validation + test is 1.1: nothing would be left to train on\n"
    result = CliRunner().invoke(cli, ["--subject", "physics", "--workspace", str(tmp_path), "dataset", "build", "--role", "poem"])
    assert result.exit_code == 2 and "'poem' is not one of 'answer', 'diagram', 'all'" in result.output
