"""`tutor export`: a subject's adapter as peft, merged weights, GGUF and an Ollama model, checked before it ships.

    tutor --subject physics export --to exports/physics --format peft,merged,gguf,ollama

Layout of the export folder (written beside its final name, then renamed, so
a crash or a full disk never leaves a half export under that name):

    README.md                   the model card: subject, base, dataset, training, eval, use, limits, licence
    peft/                       the adapter as trained (adapter_config.json + safetensors), for peft or vLLM --lora-modules
    merged/                     base + adapter merged: safetensors, tokenizer, chat template, generation_config.json
    gguf/<subject>-f16.gguf     llama.cpp's own converter (gguf_tools), f16 and q8_0
    gguf/Modelfile              Ollama: FROM, TEMPLATE, every stop token, SYSTEM, sampling
    gguf/Modelfile.lora         (ollama-lora) FROM base-f16.gguf + ADAPTER <subject>-lora-f16.gguf: one base for every subject
    contract.json               what the contract check compared, and the round-trip figures

The contract check blocks the export when the exported model would talk
differently from the one trained and evaluated (the usual "never stops" or
garbled-reply reports against fine-tune exporters):
  - golden conversations render to the same prompt string through the
    template used in training (the adapter's tokenizer), the merged model's
    tokenizer, the GGUF's embedded template and the Modelfile's TEMPLATE;
  - the end-of-turn token the model was trained to emit is a stop token in
    every format;
  - round trip: greedy continuations of 3 prompts from the merged weights and
    from the f16 GGUF (loaded back by transformers) match the unmerged
    base + adapter for the first 20 tokens; the q8_0 GGUF's top-1 agreement
    with it, teacher-forced along those continuations, is at least 95%.

The gate: an adapter whose latest eval shows it significantly worse than its
base (eval.report.gate) is refused unless --force.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import runs
from .errors import TutorError
from .workspace import Workspace

FORMATS = ("peft", "merged", "gguf", "ollama", "ollama-lora")
QUANTS = ("f16", "q8_0")
ROUND_TRIP_TOKENS = 20
Q8_AGREEMENT = 0.95
PROMPTS = ["State Newton's second law and give its units.", "Explain why the sky is blue, in two sentences.",
           "Δv = 3 m s⁻¹ in 0.5 s: what is the acceleration?"]
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
              "special_tokens_map.json", runs.ADAPTER_META, runs.RUN_META, "loss.png")


@dataclass
class Exported:
    folder: Path
    files: dict[str, list[Path]] = field(default_factory=dict)  # format -> its files
    seconds: dict[str, float] = field(default_factory=dict)
    contract: dict = field(default_factory=dict)
    ollama_command: str | None = None


PUSH_IGNORED = ["logs/*"]  # the converter's logs stay local
REPO_ID = r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*"


def hub_token(repo: str) -> str:
    """The Hugging Face token for --push (HF_TOKEN, or the one `hf auth login` saved), checked before any work is done."""
    import re

    if not re.fullmatch(REPO_ID, repo):
        raise TutorError(f"--push {repo!r}: give a hub repository as owner/name")
    from huggingface_hub import get_token

    token = os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise TutorError(f"--push {repo} needs a Hugging Face token: set HF_TOKEN or run `hf auth login`")
    return token


def push_plan(folder: Path) -> list[str]:
    """The files --push uploads, relative to the export folder: everything but PUSH_IGNORED."""
    import fnmatch

    files = sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())
    return [f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in PUSH_IGNORED)]


def push(folder: Path, repo: str, token: str, *, private: bool = True, api=None, say: Callable[[str], None] = print) -> str:
    """Upload the export to the hub (a private repository unless told otherwise) in one commit; its URL. `api`: an HfApi,
    or a stand-in with its create_repo and upload_folder (the tests')."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    plan = push_plan(folder)
    say(f"uploading {len(plan)} files ({sum((Path(folder) / f).stat().st_size for f in plan) / 1e6:.0f} MB) to {repo}")
    api.create_repo(repo, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo, folder_path=str(folder), ignore_patterns=PUSH_IGNORED,
                      commit_message=f"tutor export of {Path(folder).name}")
    return f"https://huggingface.co/{repo}"


def parse_formats(text: str) -> list[str]:
    from .errors import UnknownName

    chosen = [part.strip() for part in text.split(",") if part.strip()]
    for name in chosen:
        if name not in FORMATS:
            raise UnknownName("export format", name, FORMATS)
    if "ollama" in chosen and "gguf" not in chosen:
        chosen.insert(chosen.index("ollama"), "gguf")  # the Modelfile's FROM is the GGUF
    if "ollama-lora" in chosen and "ollama" not in chosen:
        chosen += ["gguf", "ollama"]  # its contract is checked against the merged GGUF's
    return sorted(set(chosen), key=FORMATS.index)


def find_adapter(workspace: Workspace, subject: str, adapter: str) -> tuple[Path, dict]:
    """The adapter folder ('latest' or a folder) and its metadata; another subject's or role's, or a broken one: one line."""
    if adapter == "latest":
        folder = runs.latest_adapter(workspace, subject, "answer")
        if folder is None:
            raise TutorError(f"{subject} has no trained answer adapter: run `tutor --subject {subject} train` first, or give --adapter DIR")
    else:
        folder = Path(adapter)
        if not folder.is_dir():
            raise TutorError(f"--adapter {adapter}: no such folder (give 'latest' or a finished adapter run)")
    meta = runs.read_meta(folder)
    runs.check_bound(meta, subject, "answer", f"the adapter {folder}", f"export {subject} with it")
    weights = folder / "adapter_model.safetensors"
    try:
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as opened:
            opened.keys()
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same one line
        raise TutorError(f"{weights}: not a readable safetensors file ({type(err).__name__}: {str(err)[:120]})") from None
    return folder, meta


def gate_reasons(workspace: Workspace, subject: str, folder: Path) -> tuple[list[str], str | None]:
    """(why the adapter's newest eval fails the gate, that eval's folder); ([], None) when no eval has scored it."""
    from .eval import report

    evals = report.runs_dir(workspace, subject)
    candidates = sorted((p for p in evals.iterdir() if (p / "summary.json").is_file()), reverse=True) if evals.is_dir() else []
    for run in candidates:
        summary = report.read_summary(run)
        labels = [m.get("label") for m in summary.get("models", []) if m.get("adapter") and Path(m["adapter"]).name == folder.name]
        if labels:
            return [reason for reason in report.gate(summary) if any(reason.startswith(label) for label in labels)], str(run)
    return [], None


def export(workspace: Workspace, subject: str, to: Path, formats: list[str], *, adapter: str = "latest", quants=QUANTS,
           overwrite: bool = False, force: bool = False, say: Callable[[str], None] = print) -> Exported:
    from .registry import get_subject

    kit = get_subject(subject)
    formats = parse_formats(",".join(formats))
    folder, meta = find_adapter(workspace, subject, adapter)
    reasons, eval_run = gate_reasons(workspace, subject, folder)
    if reasons and not force:
        raise TutorError(f"the gate refuses {folder.name}: {reasons[0]} (eval {eval_run}); --force exports it anyway")
    if eval_run is None:
        say(f"no eval has scored {folder.name} yet: the gate cannot check it (`tutor --subject {subject} eval --gate`)")
    to = Path(to)
    if to.exists() and any(to.iterdir()) and not overwrite:
        raise TutorError(f"{to} already holds an export: give --overwrite to replace it, or another --to")
    staging = to.parent / f".{to.name}.partial-{os.getpid()}"
    _clear_stale(to)
    staging.mkdir(parents=True)
    result = Exported(folder=to)
    try:
        _build(kit, workspace, folder, meta, staging, formats, quants, result, say)
        _card(kit, workspace, folder, meta, staging, result, eval_run)
        (staging / "contract.json").write_text(json.dumps(result.contract, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise TutorError(f"writing the export failed ({err.strerror or err}): nothing was left in {to.parent}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if to.exists():
        aside = to.parent / f".{to.name}.old-{os.getpid()}"
        to.rename(aside)
        staging.rename(to)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        staging.rename(to)
    result.files = {name: [to / path.relative_to(staging) for path in paths] for name, paths in result.files.items()}
    if result.ollama_command:
        result.ollama_command = result.ollama_command.replace(str(staging), str(to))
    return result


def _clear_stale(to: Path) -> None:
    """Remove what an export killed mid-way (kill -9, power loss) left beside `to`: folders of processes no longer alive."""
    for left in to.parent.glob(f".{to.name}.partial-*") if to.parent.is_dir() else []:
        pid = left.name.rsplit("-", 1)[-1]
        try:
            os.kill(int(pid), 0)
            alive = int(pid) != os.getpid()
        except (ValueError, ProcessLookupError):
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            shutil.rmtree(left, ignore_errors=True)


def _build(kit, workspace: Workspace, folder: Path, meta: dict, out: Path, formats: list[str], quants, result: Exported, say) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    from .basemodels import load_model, resolve

    base = meta["base_model"]
    trained_tokenizer = AutoTokenizer.from_pretrained(folder)  # the template and EOS used in training, saved with the adapter
    if "peft" in formats:
        started = time.perf_counter()
        (out / "peft").mkdir()
        copied = []
        for name in PEFT_FILES:
            if (folder / name).is_file():
                shutil.copy2(folder / name, out / "peft" / name)
                copied.append(out / "peft" / name)
        # The adapter names its base by the folder it was trained from (a cache path on this machine); elsewhere peft and
        # vLLM need the base's hub id.
        hub_id = resolve(base, say=lambda _: None).hf_id
        config_path = out / "peft" / "adapter_config.json"
        if hub_id:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            config["base_model_name_or_path"] = hub_id
            config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        result.files["peft"], result.seconds["peft"] = copied, time.perf_counter() - started
    need_merged = bool({"merged", "gguf", "ollama"} & set(formats))
    merged_dir = out / "merged"
    if need_merged:
        started = time.perf_counter()
        say(f"merging {folder.name} into {base}")
        model = PeftModel.from_pretrained(load_model(base, dtype=torch.float32, say=say), str(folder)).eval()
        reference = _continuations(model, trained_tokenizer)  # the unmerged base + adapter: what every format must reproduce
        merged = model.merge_and_unload()  # in place: the LoRA deltas are added to the base weights, no second copy
        _stop_config(merged, trained_tokenizer)
        merged_dir.mkdir()
        merged.config.save_pretrained(merged_dir)
        merged.generation_config.save_pretrained(merged_dir)
        write_safetensors(merged.state_dict(), merged_dir / "model.safetensors")
        trained_tokenizer.save_pretrained(merged_dir)
        del merged, model
        gc.collect()
        result.files["merged"] = sorted(p for p in merged_dir.iterdir())
        result.seconds["merged"] = time.perf_counter() - started
        result.contract["round_trip"] = {"prompts": PROMPTS, "tokens": ROUND_TRIP_TOKENS, "merged": _agreement(merged_dir, None, reference,
                                                                                                                  trained_tokenizer)}
    if "gguf" in formats:
        from . import gguf_tools

        started = time.perf_counter()
        gguf_dir = out / "gguf"
        gguf_dir.mkdir()
        files = []
        for quant in quants:
            target = gguf_dir / f"{kit.name}-{quant}.gguf"
            gguf_tools.convert(merged_dir, target, quant, model_name=f"tutor-{kit.name}", log=out / "logs" / f"{target.name}.log", say=say)
            files.append(target)
            result.contract["round_trip"][f"gguf-{quant}"] = _agreement(gguf_dir, target.name, reference, trained_tokenizer)
        result.files["gguf"], result.seconds["gguf"] = files, time.perf_counter() - started
    if "ollama" in formats:
        started = time.perf_counter()
        result.files["ollama"] = [_modelfile(kit, workspace, out / "gguf", trained_tokenizer, result)]
        result.seconds["ollama"] = time.perf_counter() - started
    if "ollama-lora" in formats:
        started = time.perf_counter()
        result.files["ollama-lora"] = _lora_modelfile(kit, workspace, folder, base, out, trained_tokenizer, say)
        result.seconds["ollama-lora"] = time.perf_counter() - started
    result.contract["templates"] = _contract(kit, workspace, out, trained_tokenizer, formats)
    problems = _problems(result.contract)
    if problems:
        raise TutorError("the contract check failed, nothing was exported: " + "; ".join(problems[:3]))
    if not need_merged:
        return
    if "merged" not in formats:  # built only to convert from
        shutil.rmtree(merged_dir)
        result.files.pop("merged", None)


def write_safetensors(tensors: dict, path: Path) -> None:
    """A safetensors file written tensor by tensor, so memory holds the model once (safetensors' own save_file builds every
    tensor's bytes in memory first: a second copy of the model). Tensors sharing storage (tied embeddings) are written once,
    under their first name, as save_pretrained does."""
    import torch

    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32",
             torch.uint8: "U8", torch.bool: "BOOL"}
    chosen, seen = [], set()
    for name, tensor in tensors.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            chosen.append((name, tensor))
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, tensor in chosen:
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": names[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as out:
        out.write(len(encoded).to_bytes(8, "little"))
        out.write(encoded)
        for _, tensor in chosen:
            out.write(tensor.detach().contiguous().cpu().view(torch.uint8).numpy().data)


def _stop_config(model, tokenizer) -> None:
    """generation_config.json: every end-of-turn token the template uses is an EOS, so plain transformers stops where training did."""
    from .infer.generate import stop_ids

    ids = sorted(stop_ids(model, tokenizer))
    model.generation_config.eos_token_id = ids if len(ids) > 1 else ids[0]
    if model.generation_config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def _prompt_ids(tokenizer, text: str):
    import torch

    messages = [{"role": "user", "content": text}]
    return torch.tensor([tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)])


def _continuations(model, tokenizer) -> list[list[int]]:
    """Greedy continuations (ROUND_TRIP_TOKENS new tokens, no early stop) of PROMPTS: the reference every format is held to."""
    import torch

    out = []
    with torch.no_grad():
        for text in PROMPTS:
            ids = _prompt_ids(tokenizer, text)
            generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=ROUND_TRIP_TOKENS,
                                       min_new_tokens=ROUND_TRIP_TOKENS, do_sample=False, temperature=None, top_p=None, top_k=None,
                                       pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            out.append(generated[0, ids.shape[1]:].tolist())
    return out


def _agreement(folder: Path, gguf_file: str | None, reference: list[list[int]], tokenizer) -> dict:
    """Loaded back by plain transformers (from GGUF when gguf_file): how many leading greedy tokens match the reference, and the
    top-1 agreement teacher-forced along the reference continuations."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32).eval()
    leading, agree, total = [], 0, 0
    with torch.no_grad():
        for text, expected in zip(PROMPTS, reference):
            ids = _prompt_ids(tokenizer, text)
            got = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=ROUND_TRIP_TOKENS,
                                 min_new_tokens=ROUND_TRIP_TOKENS, do_sample=False, temperature=None, top_p=None, top_k=None,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)[0, ids.shape[1]:].tolist()
            leading.append(next((n for n, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected))))
            full = torch.cat([ids, torch.tensor([expected])], dim=1)
            logits = model(input_ids=full).logits[0, ids.shape[1] - 1:-1]
            agree += int((logits.argmax(-1) == torch.tensor(expected)).sum())
            total += len(expected)
    del model
    return {"matching_leading_tokens": leading, "top1_agreement": round(agree / total, 4)}


def _system_prompt(kit, workspace: Workspace) -> str:
    from . import dataset as ds

    return ds.tutor_system_prompt(kit, workspace.template_dirs(kit.name))


def _modelfile(kit, workspace: Workspace, gguf_dir: Path, tokenizer, result: Exported) -> Path:
    from . import ollama

    made = result.files["gguf"]  # the merged model's GGUFs, one per --quant: q8_0 when there is one (near-lossless, half of f16)
    chosen = next((p for p in made if p.name.endswith("-q8_0.gguf")), made[0])
    text = ollama.modelfile(chosen.name, tokenizer.chat_template, _eos_strings(tokenizer), _system_prompt(kit, workspace))
    path = gguf_dir / "Modelfile"
    path.write_text(text, encoding="utf-8")
    result.ollama_command = f"ollama create tutor-{kit.name} -f {path}"
    return path


def _lora_modelfile(kit, workspace: Workspace, folder: Path, base: str, out: Path, tokenizer, say) -> list[Path]:
    """The LoRA-only Ollama variant: the base as an f16 GGUF, the adapter as a GGUF adapter (convert_lora_to_gguf.py), and
    Modelfile.lora with FROM the base and ADAPTER: one base GGUF serves every subject's small adapter."""
    from . import gguf_tools, ollama
    from .basemodels import resolve

    location = Path(resolve(base, say=say).location)
    gguf_dir = out / "gguf"
    base_file = gguf_tools.convert(location, gguf_dir / "base-f16.gguf", "f16", log=out / "logs" / "base-f16.gguf.log", say=say)
    adapter_file = gguf_tools.convert_lora(folder, location, gguf_dir / f"{kit.name}-lora-f16.gguf", "f16",
                                           log=out / "logs" / f"{kit.name}-lora-f16.gguf.log", say=say)
    text = ollama.modelfile(base_file.name, tokenizer.chat_template, _eos_strings(tokenizer), _system_prompt(kit, workspace),
                            adapter=adapter_file.name)
    path = gguf_dir / "Modelfile.lora"
    path.write_text(text, encoding="utf-8")
    return [base_file, adapter_file, path]


def _eos_strings(tokenizer) -> list[str]:
    return [tokenizer.eos_token] if tokenizer.eos_token else []


def _contract(kit, workspace: Workspace, out: Path, trained, formats: list[str]) -> dict:
    """Golden conversations rendered by each format's template, and the trained EOS among each format's stop tokens."""
    from transformers import AutoTokenizer

    from . import ollama

    conversations = ollama.golden_conversations()

    def render_with(tokenizer):
        return lambda messages: tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    checks: dict = {"trained_eos": trained.eos_token, "conversations": len(conversations), "problems": []}
    expected = [render_with(trained)(c) for c in conversations]
    renderers, checked = {}, ["training"]
    if (out / "merged").is_dir():
        merged_tok = AutoTokenizer.from_pretrained(out / "merged")
        renderers["merged"] = render_with(merged_tok)
        config = json.loads((out / "merged" / "generation_config.json").read_text(encoding="utf-8"))
        eos = config.get("eos_token_id")
        eos = eos if isinstance(eos, list) else [eos]
        if trained.eos_token_id not in eos:
            checks["problems"].append(f"merged: generation_config.json's eos_token_id {eos} lacks the trained EOS {trained.eos_token!r}")
    for gguf in sorted((out / "gguf").glob("*.gguf")) if (out / "gguf").is_dir() else []:
        from . import gguf_tools

        meta = gguf_tools.gguf_metadata(gguf)
        if meta.get("type") == "adapter":  # a LoRA GGUF holds no tokenizer: its base GGUF's is checked
            continue
        if meta.get("chat_template") != trained.chat_template:
            checks["problems"].append(f"{gguf.name}: its embedded chat template differs from the one used in training")
        adds_bos = bool(trained("x")["input_ids"][:1] == [trained.bos_token_id]) if trained.bos_token_id is not None else False
        if bool(meta.get("fields", {}).get("tokenizer.ggml.add_bos_token", False)) != adds_bos:
            checks["problems"].append(f"{gguf.name}: tokenizer.ggml.add_bos_token is {not adds_bos} but training "
                                      f"{'added' if adds_bos else 'did not add'} a BOS: every prompt would start differently")
        stops = {meta.get("eos_token_id"), meta.get("eot_token_id")} - {None}
        if trained.eos_token_id not in stops:
            checks["problems"].append(f"{gguf.name}: the trained EOS {trained.eos_token!r} (id {trained.eos_token_id}) is not its "
                                      f"EOS or EOT ({sorted(stops)})")
        renderers[gguf.name] = render_with(AutoTokenizer.from_pretrained(out / "gguf", gguf_file=gguf.name))
    for name, render in renderers.items():
        for n, (conversation, want) in enumerate(zip(conversations, expected)):
            got = render(conversation)
            if got != want:
                checks["problems"].append(f"{name}: golden conversation {n + 1} renders differently ({_first_difference(want, got)})")
    for modelfile in (out / "gguf" / "Modelfile", out / "gguf" / "Modelfile.lora"):
        if not modelfile.is_file():
            continue
        commands = ollama.parse_modelfile(modelfile.read_text(encoding="utf-8"))  # the file as Ollama will read it
        written = dict(commands)
        family = ollama.template_family(trained.chat_template)
        for system in (None, written.get("system")):  # a conversation's own system message, and the Modelfile's SYSTEM
            found = ollama.check_contract(render_with(trained), written["template"], conversations, system, bos=ollama.runtime_bos(family))
            checks["problems"] += [f"{modelfile.name}: {p}" for p in found]
        stops = [value for key, value in commands if key == "stop"]
        if trained.eos_token not in stops:
            checks["problems"].append(f"{modelfile.name}: no PARAMETER stop for the trained EOS {trained.eos_token!r} (it has {stops})")
        checked.append(modelfile.name)
    checks["formats_checked"] = [*checked[:1], *renderers, *checked[1:]]
    return checks


def _first_difference(want: str, got: str) -> str:
    at = next((n for n, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
    return f"at character {at}: expected {want[max(0, at - 15):at + 15]!r}, got {got[max(0, at - 15):at + 15]!r}"


def _problems(contract: dict) -> list[str]:
    problems = list(contract.get("templates", {}).get("problems", []))
    for name, figures in contract.get("round_trip", {}).items():
        if not isinstance(figures, dict):
            continue
        if name == "gguf-q8_0":
            if figures["top1_agreement"] < Q8_AGREEMENT:
                problems.append(f"{name}: top-1 agreement {figures['top1_agreement']:.3f} < {Q8_AGREEMENT}")
        elif min(figures["matching_leading_tokens"]) < ROUND_TRIP_TOKENS:
            problems.append(f"{name}: greedy continuations match the unmerged model for {figures['matching_leading_tokens']} "
                            f"tokens, not {ROUND_TRIP_TOKENS}")
    return problems


def _hub_note(base: str) -> str:
    from .basemodels import resolve

    resolved = resolve(base, say=lambda _: None)
    return f", `{resolved.hf_id}` on the Hugging Face hub: the base `peft/` needs" if resolved.hf_id else ""


def _card(kit, workspace: Workspace, folder: Path, meta: dict, out: Path, result: Exported, eval_run: str | None) -> None:
    """README.md: what the model is, how it was made and measured, how to run each format, and its limits."""
    run = runs.read_meta(folder, runs.RUN_META)
    settings = run.get("settings", {})
    dataset = run.get("dataset", {})
    lines = [f"# tutor-{kit.name}", "",
             f"A {kit.name} tutor: `{meta['base_model']}` fine-tuned with LoRA ({run.get('method', 'sft')}) by tutor on "
             f"mark-scheme-grounded answers to exam questions.", "",
             "## Made from", "",
             f"- base model: `{meta['base_model']}`{_hub_note(meta['base_model'])} (its licence applies to every format here)",
             f"- adapter run: `{folder.name}` ({meta.get('backend', 'peft')}, finished {meta.get('finished', '?')})",
             f"- dataset: `{dataset.get('path', '?')}`, fingerprint `{dataset.get('fingerprint', '?')}`, examples "
             f"{meta.get('dataset', {}).get('examples', '?')}",
             f"- training: {settings.get('epochs')} epochs, batch {settings.get('batch_size')}, "
             f"learning rate {settings.get('learning_rate')}, "
             f"LoRA r={settings.get('lora_r')} alpha={settings.get('lora_alpha')} dropout={settings.get('lora_dropout')}, "
             f"train loss {meta.get('metrics', {}).get('train_loss', '?')}", ""]
    lines += ["## Evaluation", ""]
    if eval_run:
        from .eval import report

        headers, rows = report.show_rows(report.read_summary(Path(eval_run)))
        lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + ["| " + " | ".join(row) + " |" for row in rows]
        lines += ["", f"From `{eval_run}`."]
    else:
        lines.append(f"Not evaluated yet: `tutor --subject {kit.name} eval` scores it against its base.")
    lines += ["", "## Formats", ""]
    for name, paths in result.files.items():
        lines.append(f"- **{name}**: " + ", ".join(f"`{p.relative_to(out)}`" for p in paths if p.is_file()))
    if result.ollama_command:
        lines += ["", "```bash", f"cd gguf && ollama create tutor-{kit.name} -f Modelfile && ollama run tutor-{kit.name}", "```"]
    lines += ["", "## Intended use and limits", "",
              f"Practice answers, explanations and marking for {kit.name} at the level of its question bank, with a teacher checking.",
              "A small model: it can be wrong with confidence, its arithmetic is unreliable, and it knows only what its base and "
              "this bank taught it. Do not use its marks for grades that matter without a teacher's review.", ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
