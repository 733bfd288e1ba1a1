"""`train --eval-every epoch`: validation questions answered and scored after each epoch, without changing what is trained.

The scoring is checked on hand-written replies with known scores; the callback on the tiny
random Llama (tests/tiny_model.py), where the replies are noise but the plumbing is real:
log.jsonl, loss.png, tutor-adapter.json, tokens/s, and weights equal to a run without it.
"""

import json
from pathlib import Path
from typing import get_args

import pytest

pytest.importorskip("trl")

from cli_runner import invoke  # noqa: E402
from tutor import runs  # noqa: E402
from tutor import train as tr  # noqa: E402
from tutor.bank import load_bank  # noqa: E402
from tutor.config import TrainConfig  # noqa: E402
from tutor.errors import TutorError  # noqa: E402
from tutor.models import Evaluator, QuestionFormat, Score  # noqa: E402
from tutor.registry import get_subject, registry  # noqa: E402
from tutor.workspace import Workspace  # noqa: E402

MCQ_KEY_C, MCQ_KEY_D = "2e1fe387d121c46d", "d33e62cca1a5ab74"  # physics sample bank: MCQs keyed C and D
CALCULATION = "e1c7c8849ba476b9"  # final answers 5.5 V, 0.45 Ω and 0.92


@pytest.fixture
def physics_bank():
    physics = get_subject("physics")
    return physics, load_bank(physics, physics.subject.bank)


@pytest.fixture
def form_ends_with_answer(monkeypatch):
    """A `form` evaluator written here (so the test does not hang on the core's rules): 1 when the reply ends with an Answer: line.

    It also draws from torch's random generator, as a sampling judge would: the epoch check must hide that from training.
    """
    import torch

    def score(question, reply):
        torch.rand(64)
        return Score(marks=float(reply.strip().splitlines()[-1].startswith("Answer:") if reply.strip() else 0), out_of=1)

    form = Evaluator(name="form", description="ends with an Answer: line", formats=list(get_args(QuestionFormat)), score=score)
    monkeypatch.setattr(registry(), "evaluators", {**registry().evaluators, "form": form})


def test_epoch_scores_are_means_over_the_questions_each_evaluator_judged(physics_bank, form_ends_with_answer):
    physics, bank = physics_bank
    by_id = {q.id: q for q in bank.questions}
    questions = [by_id[MCQ_KEY_C], by_id[MCQ_KEY_D], by_id[CALCULATION]]
    replies = ["The unit is kg m^-1 s^-2.\nAnswer: C", "Answer: A", "The terminal p.d. is 5.5 V and r = 0.45 Ω."]
    # mcq judges the two MCQs (right, wrong); final-answer the calculation (2 of its 3 answers); form all three.
    assert tr.epoch_scores(physics, questions, replies) == {"eval/mcq": 0.5, "eval/form": 0.6667, "eval/final-answer": 0.6667,
                                                            "eval/n": 3}
    assert tr.epoch_scores(physics, questions[:2], replies[:2]) == {"eval/mcq": 0.5, "eval/form": 1.0, "eval/n": 2}  # none judged: absent


def test_epoch_questions_are_the_validation_splits_bank_questions_once_each_in_order(physics_bank):
    _, bank = physics_bank
    rows = [{"kind": "answer", "question_id": CALCULATION}, {"kind": "identity", "question_id": ""},
            {"kind": "answer", "question_id": CALCULATION},  # a second gold answer to the same question
            {"kind": "answer", "question_id": "not-in-the-bank"}, {"kind": "answer", "question_id": MCQ_KEY_D},
            {"kind": "answer", "question_id": MCQ_KEY_C}]
    assert [q.id for q in tr.epoch_questions(bank, rows, 16)] == [CALCULATION, MCQ_KEY_D, MCQ_KEY_C]
    assert [q.id for q in tr.epoch_questions(bank, rows, 2)] == [CALCULATION, MCQ_KEY_D]


def test_epoch_checks_are_skipped_with_a_reason_where_they_cannot_run(physics_bank, tmp_path):
    physics, bank = physics_bank
    said = []
    meta = {"bank_path": str(physics.subject.bank)}
    data = {"validation": [{"kind": "answer", "question_id": MCQ_KEY_C}]}
    checked = TrainConfig(eval_every="epoch")
    ws = Workspace(tmp_path)
    assert tr._epoch_check_questions(physics, ws, "answer", TrainConfig(), data, meta, said.append) == [] and said == []
    assert [q.id for q in tr._epoch_check_questions(physics, ws, "answer", checked, data, meta, said.append)] == [MCQ_KEY_C]
    assert tr._epoch_check_questions(physics, ws, "diagram", checked, data, meta, said.append) == []
    assert tr._epoch_check_questions(physics, ws, "answer", checked, {"validation": []}, meta, said.append) == []
    assert said == ["eval_every: skipped for the diagram role (the epoch checks score answers to bank questions)",
                    "eval_every: skipped: the validation split holds no bank question (dataset build with validation > 0)"]


def test_eval_every_is_a_setting_of_train_and_an_sft_flag(tmp_path):
    physics = get_subject("physics")
    settings = tr.settings_for(physics, TrainConfig.model_validate({"eval_every": "epoch"}), {"eval_limit": 4})
    assert (settings.eval_every, settings.eval_limit, settings.eval_max_new_tokens) == ("epoch", 4, 256)
    with pytest.raises(TutorError, match=r"^the command line: eval_every: Input should be 'epoch'$"):
        tr.settings_for(physics, TrainConfig(), {"eval_every": "step"})
    code, out = invoke("--subject", "physics", "train", "--eval-every", "epoch", "grpo", workspace=tmp_path)
    assert code == 2 and "--eval-every belongs to SFT" in out


def test_loss_plot_draws_the_epoch_checks(tmp_path):
    log = tmp_path / "log.jsonl"
    rows = ([{"step": n, "loss": 2.0 - 0.1 * n} for n in range(1, 9)]
            + [{"step": 4, "eval/mcq": 0.25, "eval/n": 4}, {"step": 8, "eval/mcq": 0.5, "eval/final-answer": 1.0, "eval/n": 4}])
    log.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    assert tr.plot_losses(log, tmp_path / "loss.png", "t") == tmp_path / "loss.png"
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_eval_every_epoch_logs_plots_and_records_checks_and_trains_the_same_weights(tiny_model, tmp_path, form_ends_with_answer):
    import torch
    from safetensors.torch import load_file

    (tmp_path / "tutor.toml").write_text(f'[model]\nbase = "{tiny_model}"\n\n[train]\nmax_length = 384\nlearning_rate = 0.005\n'
                                         "logging_steps = 1\neval_max_new_tokens = 12\n", encoding="utf-8")
    assert invoke("--subject", "physics", "dataset", "build", "--role", "answer", workspace=tmp_path)[0] == 0
    trained = {}
    for name, flags in [("plain", []), ("checked", ["--eval-every", "epoch", "--eval-limit", "3"])]:
        code, out = invoke("--subject", "physics", "train", "--epochs", "2", "--batch-size", "8", *flags, workspace=tmp_path)
        assert code == 0, out
        trained[name] = runs.latest_adapter(Workspace(tmp_path), "physics", "answer"), out
    (plain, _), (run, out) = trained["plain"], trained["checked"]

    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    checks = [row for row in rows if "eval/n" in row]
    meta = runs.read_meta(run)
    steps = meta["metrics"]["steps"]
    assert [(row["step"], row["epoch"]) for row in checks] == [(steps // 2, 1.0), (steps, 2.0)]  # one per epoch, at its end
    for row in checks:
        assert row["eval/n"] == 3 and row["eval/form"] in (0.0, 0.3333, 0.6667, 1.0)  # the form evaluator judges every question
        assert set(row) >= {"step", "epoch", "seconds", "eval/form", "eval/n", "eval/runtime"}
        assert all(0 <= row[key] <= 1 for key in row if key.startswith("eval/") and key not in ("eval/n", "eval/runtime"))
    assert meta["metrics"]["epoch_evals"] == [{k: v for k, v in row.items() if k in ("step", "epoch") or k.startswith("eval/")}
                                              for row in checks]
    assert runs.read_meta(plain)["metrics"]["epoch_evals"] == []
    assert "epoch check" in out and "(3 questions, epoch 2)" in out
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # tokens/s leaves the checks out: training time is the trainer's runtime less every evaluation in it.
    runtime = next(row["train_runtime"] for row in rows if "train_loss" in row)  # the final row; loss rows carry the time so far
    during = [row for row in rows if row["step"] > 0]  # not the validation loss measured before training
    evaluating = sum(row.get("eval_runtime", 0) + row.get("eval/runtime", 0) for row in during)
    assert meta["metrics"]["training_seconds"] == pytest.approx(runtime - evaluating, abs=0.01)

    # The checks change nothing that is trained: the same losses, and the same weights to the bit.
    def losses(folder: Path):
        return [(row["step"], row["loss"]) for row in map(json.loads, (folder / "log.jsonl").read_text().splitlines()) if "loss" in row]

    assert losses(run) == losses(plain)
    with_checks, without = load_file(run / "adapter_model.safetensors"), load_file(plain / "adapter_model.safetensors")
    assert with_checks.keys() == without.keys() and all(torch.equal(with_checks[key], without[key]) for key in without)
