"""`tutor eval` end to end on the tiny random model: base vs a trained adapter, every metric, the report, show and compare.

The tiny model answers nonsense, which is what these tests need: the numbers are
checked against the evaluators run by hand on the same replies, not against
hoped-for values. Real torch, peft, transformers and lm-evaluation-harness.
"""

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from cli_runner import invoke, tiny_workspace  # noqa: E402
from tutor import runs  # noqa: E402
from tutor.eval.results import ItemResult  # noqa: E402
from tutor.eval.scoring import score_reply  # noqa: E402
from tutor.jsonl import read_jsonl  # noqa: E402
from tutor.registry import get_subject  # noqa: E402
from tutor.workspace import Workspace  # noqa: E402


@pytest.fixture(scope="module")
def workspace(tiny_model, tmp_path_factory):
    """Physics datasets built and a 4-step answer adapter trained on the tiny model."""
    root = tiny_workspace(tmp_path_factory.mktemp("ws"), tiny_model, save_steps=50)
    for args in (["dataset", "build"], ["train", "--max-steps", "4"]):
        code, out = invoke("--subject", "physics", *args, workspace=root)
        assert code == 0, out
    return root


@pytest.fixture(scope="module")
def evaluated(workspace):
    code, out = invoke("--subject", "physics", "eval", "--models", "base,latest", "--max-new-tokens", "24", workspace=workspace)
    assert code == 0, out
    folder = Path(out.split("report: ")[1].split("\n")[0]).parent
    return folder, out


def test_eval_writes_the_report_folder_with_every_metric(evaluated, workspace):
    folder, out = evaluated
    assert folder.parent == workspace / "physics" / "evals"
    for name in ("report.md", "summary.json", "results.jsonl", "run.json"):
        assert (folder / name).is_file(), name
    for png in folder.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = read_jsonl(folder / "results.jsonl", ItemResult)
    adapter = runs.latest_adapter(Workspace(workspace), "physics", "answer")
    labels = {r.model for r in results}
    assert labels == {"base", f"latest ({adapter.name})"}
    summary = json.loads((folder / "summary.json").read_text())
    test_ids = {r["question_id"] for r in _split(workspace, "test")}
    for label in labels:
        questions = [r for r in results if r.model == label and r.kind == "question"]
        assert {r.item for r in questions} == test_ids  # the held-out split, every question once
    metrics = set(summary["metrics"])
    assert {"mark-points", "form", "loss"} <= metrics
    formats = {r.format for r in results if r.kind == "question"}
    if "mcq" in formats:
        assert {"mcq", "mcq-loglik"} <= metrics
    if "calculation" in formats:
        assert "final-answer" in metrics
    assert "base" in out and "report: " in out


def test_every_score_is_the_evaluators_own_on_the_saved_reply(evaluated):
    folder, _ = evaluated
    kit = get_subject("physics")
    from tutor import dataset as ds

    bank = {q.id: q for q in ds.choose_bank(kit, Workspace(folder.parents[2]))[0].questions}
    for result in read_jsonl(folder / "results.jsonl", ItemResult):
        if result.kind != "question":
            continue
        again = score_reply(kit, bank[result.item], result.output)
        assert {k: v.model_dump() for k, v in again.items()} == {k: v.model_dump() for k, v in result.scores.items() if k in again}


def test_mcq_loglik_picks_the_most_likely_letter_and_loss_is_per_token(evaluated):
    folder, _ = evaluated
    for result in read_jsonl(folder / "results.jsonl", ItemResult):
        if result.logliks:
            best = max(result.logliks, key=result.logliks.get)
            assert result.chosen["mcq-loglik"] == best and result.scores["mcq-loglik"].marks == float(best == result.gold)
        if result.loss:
            nll, tokens = result.loss
            assert tokens > 0 and nll > 0


def test_the_base_model_beside_an_adapter_answers_as_the_base_model_alone(evaluated, workspace):
    folder, _ = evaluated
    code, out = invoke("--subject", "physics", "eval", "--models", "base", "--max-new-tokens", "24", workspace=workspace)
    assert code == 0, out
    alone = Path(out.split("report: ")[1].split("\n")[0]).parent
    beside = {(r.item, r.kind): r.output for r in read_jsonl(folder / "results.jsonl", ItemResult) if r.model == "base"}
    assert {(r.item, r.kind): r.output for r in read_jsonl(alone / "results.jsonl", ItemResult)} == beside


def test_show_and_compare_read_saved_runs(evaluated, workspace):
    folder, _ = evaluated
    code, out = invoke("--subject", "physics", "eval", "show", workspace=workspace)
    assert code == 0 and ("mark-points" in out or "coverage" in out.lower()), out
    code, out = invoke("--subject", "physics", "eval", "show", folder.name, workspace=workspace)
    assert code == 0 and str(folder) in out
    code, out = invoke("--subject", "physics", "eval", "compare", folder.name, str(folder), workspace=workspace)
    assert code == 0 and ("mark-points" in out or "coverage" in out.lower()), out
    code, out = invoke("--subject", "physics", "eval", "show", "no-such-run", workspace=workspace)
    assert code == 2 and "no-such-run" in out  # an unknown name, listing the runs


def test_an_mcq_file_with_bad_rows_reports_them_and_scores_the_good_ones(workspace, tmp_path):
    mcq = tmp_path / "forces.csv"
    mcq.write_text("What is the SI unit of force?,newton,joule,watt,pascal,0\n"
                   "Which quantity is a vector?,mass,speed,velocity,energy,2\n"
                   "A broken row,only,three\n"
                   "Which is a scalar?,force,momentum,acceleration,work,9\n", encoding="utf-8")
    code, out = invoke("--subject", "physics", "eval", "--models", "base", "--mcq", str(mcq), "--max-new-tokens", "8",
                       workspace=workspace)
    assert code == 0, out
    assert f"{mcq}:3" in out and f"{mcq}:4" in out  # one line per bad row, with file and line
    folder = Path(out.split("report: ")[1].split("\n")[0]).parent
    results = read_jsonl(folder / "results.jsonl", ItemResult)
    assert sorted(r.item for r in results) == ["forces.csv:1", "forces.csv:2"]  # only the file: no split given
    assert all(r.set == "forces.csv" and "mcq-loglik" in r.scores and r.gold in "AC" for r in results)


def test_missing_dataset_adapter_and_another_subjects_adapter_are_one_line_each(workspace, tmp_path, tiny_model):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "tutor.toml").write_text(f'[model]\nbase = "{tiny_model}"\n', encoding="utf-8")
    code, out = invoke("--subject", "physics", "eval", "--models", "base", workspace=empty)
    assert code == 1 and out.strip().splitlines()[-1].startswith("error: no answer dataset for physics") and "dataset build" in out
    code, out = invoke("--subject", "physics", "eval", "--split", "bank", "--limit", "1", workspace=empty)
    assert code == 1 and "has no trained answer adapter: run `tutor --subject physics train`" in out
    adapter = runs.latest_adapter(Workspace(workspace), "physics", "answer")
    code, out = invoke("--subject", "economics", "eval", "--split", "bank", "--adapter", str(adapter), workspace=workspace)
    assert code == 1 and f"the adapter {adapter} belongs to 'physics', not 'economics'" in out


def test_types_and_limit_narrow_the_run(workspace):
    code, out = invoke("--subject", "physics", "eval", "--models", "base", "--split", "bank", "--types", "igcse-mcq", "--limit", "2",
                       "--max-new-tokens", "8", workspace=workspace)
    assert code == 0, out
    folder = Path(out.split("report: ")[1].split("\n")[0]).parent
    results = read_jsonl(folder / "results.jsonl", ItemResult)
    assert len(results) == 2 and {r.type for r in results} == {"igcse-mcq"}
    code, out = invoke("--subject", "physics", "eval", "--models", "base", "--types", "no-such-type", workspace=workspace)
    assert code == 2 and "no-such-type" in out and "igcse-mcq" in out


def _split(workspace: Path, name: str) -> list[dict]:
    from datasets import load_from_disk

    return [r for r in load_from_disk(str(workspace / "physics/datasets/answer"))[name] if r["kind"] == "answer"]


def test_the_vllm_engine_generates_through_the_server_and_scores_as_usual(workspace, monkeypatch):
    """vLLM is not installed here: the command it would run is swapped for the OpenAI-compatible test server,
    which answers /health like a ready vLLM and chat requests with a stock physics answer."""
    import sys

    from tutor.eval import vllm

    built, real = [], vllm.serve_command

    def serve_command(base, adapters, *, port, **kwargs):
        built.append((base, dict(adapters), real(base, adapters, port=port, **kwargs)))
        return [sys.executable, str(Path(__file__).parent / "openai_server.py"), "--port", str(port)]

    monkeypatch.setattr(vllm, "serve_command", serve_command)
    code, out = invoke("--subject", "physics", "eval", "--engine", "vllm", "--models", "base,latest", "--split", "bank",
                       "--types", "igcse-mcq", "--limit", "2", workspace=workspace)
    assert code == 0, out
    adapter = runs.latest_adapter(Workspace(workspace), "physics", "answer")
    [(base, adapters, command)] = built  # one server for the one base model, with the adapter as a LoRA module
    assert adapters == {f"answer-{adapter.name}": adapter} and command[:3] == ["vllm", "serve", base]
    folder = Path(out.split("report: ")[1].split("\n")[0]).parent
    results = read_jsonl(folder / "results.jsonl", ItemResult)
    # The test server's stock answer (the tiny model cannot write a sentence), scored by the evaluators as usual.
    assert len(results) == 4 and all("rate of change of its momentum" in r.output and "mcq" in r.scores for r in results)
    assert all("mcq-loglik" in r.scores for r in results)  # log-likelihoods still come from transformers
    assert (folder / "vllm.log").is_file()
