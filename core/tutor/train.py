"""The train stage: one LoRA adapter per subject and role, by SFT, then GRPO with the plugins' rewards.

Backends, chosen per run: Unsloth when a CUDA GPU and unsloth are present
(`import unsloth` fails without a GPU, so it is imported only then), else
transformers + peft + trl, on a CPU or a GPU. Under `torchrun` or
`accelerate launch` the same code trains data-parallel: rank 0 names the run
and writes the files.

Every run is a folder; the newest finished one is what `ask` loads:

  <workspace>/<subject>/adapters/<role>/<run>/     run = <UTC time>-<sft|grpo>
    tutor-run.json        what it was started with (written first: --resume reads it)
    checkpoints/          the trainer's checkpoints, for --resume
    log.jsonl             one line per logged step and evaluation (append-only)
    adapter_config.json, adapter_model.safetensors, tokenizer files
    loss.png              the loss curve
    tutor-adapter.json    metadata, written last: a run without it is unfinished

An adapter is bound to its subject and role. Training refuses a dataset,
a checkpoint or a starting adapter of another subject: physics must not be
taught by the economics teacher.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import TutorError
from .registry import SubjectKit
from .workspace import TrainConfig, Workspace

RUN_META = "tutor-run.json"
ADAPTER_META = "tutor-adapter.json"
LOG = "log.jsonl"
PLOT = "loss.png"
CHECKPOINTS = "checkpoints"
METHODS = ("sft", "grpo")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- settings ---------------------------------------------------------------------


def settings_for(kit: SubjectKit, config: TrainConfig, flags: dict[str, Any] | None = None) -> TrainConfig:
    """Hyper-parameters: defaults < the subject's `train` < tutor.toml's [train] < flags."""
    layers = [("the subject's training defaults", kit.subject.train),
              ("tutor.toml [train]", config.model_dump(exclude_unset=True)),
              ("the command line", {k: v for k, v in (flags or {}).items() if v is not None})]
    merged: dict[str, Any] = {}
    for where, layer in layers:
        for key, value in layer.items():
            if key == "grpo" and isinstance(value, dict):
                merged["grpo"] = {**merged.get("grpo", {}), **value}
            else:
                merged[key] = value
        try:
            TrainConfig.model_validate(merged)
        except ValidationError as err:
            first = err.errors()[0]
            raise TutorError(f"{where}: {'.'.join(map(str, first['loc']))}: {first['msg'].removeprefix('Value error, ')}") from None
    return TrainConfig.model_validate(merged)


def choose_backend(wanted: str = "auto") -> str:
    """'unsloth' or 'peft'. Never imports unsloth (that fails without a GPU)."""
    import importlib.util

    import torch

    has_unsloth = importlib.util.find_spec("unsloth") is not None
    if wanted == "unsloth":
        if not torch.cuda.is_available():
            raise TutorError("backend unsloth needs a CUDA GPU, and torch sees none; use backend peft (or auto)")
        if not has_unsloth:
            raise TutorError("backend unsloth: unsloth is not installed (pip install 'tutor[gpu]')")
        return "unsloth"
    if wanted == "peft":
        return "peft"
    return "unsloth" if torch.cuda.is_available() and has_unsloth else "peft"


# --- runs and adapters --------------------------------------------------------------


def adapters_dir(workspace: Workspace, subject: str, role: str) -> Path:
    return workspace.subject_dir(subject) / "adapters" / role


def runs(workspace: Workspace, subject: str, role: str) -> list[Path]:
    """Every run of a subject's role, oldest first (names start with their UTC time)."""
    folder = adapters_dir(workspace, subject, role)
    return sorted(p for p in folder.iterdir() if (p / RUN_META).is_file()) if folder.is_dir() else []


def latest_adapter(workspace: Workspace, subject: str, role: str) -> Path | None:
    """The newest finished adapter of the subject's role, SFT or GRPO."""
    done = [p for p in runs(workspace, subject, role) if (p / ADAPTER_META).is_file()]
    return done[-1] if done else None


def read_meta(path: Path, name: str = ADAPTER_META) -> dict[str, Any]:
    try:
        return json.loads((Path(path) / name).read_text(encoding="utf-8"))
    except FileNotFoundError:
        what = "a finished tutor adapter" if name == ADAPTER_META else "a tutor training run"
        raise TutorError(f"{path}: not {what} (no {name})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TutorError(f"{Path(path) / name}: unreadable ({err})") from None


def check_bound(meta: dict[str, Any], subject: str, role: str, what: str) -> None:
    """Refuse an adapter, run or dataset of another subject (or role)."""
    if meta.get("subject") != subject:
        raise TutorError(f"{what} belongs to {meta.get('subject')!r}, not {subject!r}: refusing to train {subject} from it "
                         f"(physics must not be taught by the economics teacher)")
    if meta.get("role") != role:
        raise TutorError(f"{what} is the {meta.get('role')} role's, not the {role} role's")


def _new_run(workspace: Workspace, subject: str, role: str, method: str) -> Path:
    """A fresh run folder, named by rank 0 and shared with the other ranks."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState()
    name = [time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{method}"]
    if state.num_processes > 1:
        broadcast_object_list(name, from_process=0)
    path = adapters_dir(workspace, subject, role) / name[0]
    if state.is_main_process:
        suffix = 1
        while path.exists():  # two runs in one second: keep both
            suffix += 1
            path = path.with_name(f"{name[0]}-{suffix}")
        path.mkdir(parents=True)
    if state.num_processes > 1:
        shared = [path.name]
        broadcast_object_list(shared, from_process=0)
        path = path.with_name(shared[0])
    return path


def _unfinished(workspace: Workspace, subject: str, role: str, method: str) -> Path:
    for run in reversed(runs(workspace, subject, role)):
        if not (run / ADAPTER_META).is_file() and read_meta(run, RUN_META).get("method") == method:
            return run
    raise TutorError(f"nothing to resume: {subject} has no unfinished {method} run of the {role} role under {adapters_dir(workspace, subject, role)}")


def _last_checkpoint(run: Path) -> str | None:
    found = sorted((run / CHECKPOINTS).glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    return str(found[-1]) if found else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from .jsonl import write_atomic

    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# --- model loading ----------------------------------------------------------------------


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    backend: str
    base: str  # the base model's name as resolved (preset name, hub id or folder)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def load_base(base: str, settings: TrainConfig, *, backend: str, say: Callable[[str], None] = _say) -> Loaded:
    """The base model and tokenizer, from the backend that will train them."""
    from .basemodels import load_model, load_tokenizer, resolve

    ref = resolve(base, say=say)
    four_bit = settings.load_in_4bit if settings.load_in_4bit is not None else "bnb-4bit" in ref.location.lower()
    if backend == "unsloth":
        from unsloth import FastLanguageModel  # noqa: I001 - unsloth patches transformers when imported, so first

        model, tokenizer = FastLanguageModel.from_pretrained(model_name=ref.location, max_seq_length=settings.max_length,
                                                             load_in_4bit=four_bit, dtype=None)
        return Loaded(model, tokenizer, backend, ref.name)
    import torch

    tokenizer = load_tokenizer(base, say=say)
    kwargs: dict[str, Any] = {}
    if four_bit:
        if not _cuda():
            raise TutorError(f"{ref.name} is 4-bit (bitsandbytes), which needs a CUDA GPU; pick a full-precision model on a CPU")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)
    # float32 on a CPU (bf16 matmuls are slow there); bf16 on a GPU that has it.
    dtype = torch.bfloat16 if _cuda() and torch.cuda.is_bf16_supported() else torch.float32
    model = load_model(base, dtype=dtype, say=say, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Loaded(model, tokenizer, backend, ref.name)


def _targets(settings: TrainConfig, base: str) -> list[str]:
    from .basemodels import LLAMA_LINEAR, PRESETS

    if settings.lora_targets:
        return settings.lora_targets
    preset = PRESETS.get(base)
    return list(preset.lora_targets if preset else LLAMA_LINEAR)


def add_lora(loaded: Loaded, settings: TrainConfig, start_from: Path | None = None):
    """Wrap the model with a trainable LoRA adapter: new, or continued from `start_from`."""
    if start_from is not None:
        from peft import PeftModel

        return PeftModel.from_pretrained(loaded.model, str(start_from), is_trainable=True)
    if loaded.backend == "unsloth":
        from unsloth import FastLanguageModel

        return FastLanguageModel.get_peft_model(loaded.model, r=settings.lora_r, lora_alpha=settings.lora_alpha,
                                                lora_dropout=settings.lora_dropout, target_modules=_targets(settings, loaded.base),
                                                use_gradient_checkpointing="unsloth", random_state=settings.seed)
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                        target_modules=_targets(settings, loaded.base), task_type="CAUSAL_LM")
    return get_peft_model(loaded.model, config)


# --- data ------------------------------------------------------------------------------


def prompt_completion(split):
    """Chat examples -> prompt (system + user) and completion (the assistant turn).

    TRL then computes the loss on the completion only, with any chat template:
    no `{% generation %}` markers needed (SmolLM2's template has none).
    """
    return split.map(lambda row: {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]},
                     remove_columns=split.column_names)


# --- callbacks ------------------------------------------------------------------------


def _callbacks(run: Path, settings: TrainConfig, started: float):
    from transformers import TrainerCallback
    from transformers.trainer_callback import ProgressCallback

    class LogFile(TrainerCallback):
        """Every logged step and evaluation, appended to log.jsonl as it happens (rank 0)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                from .jsonl import append_lines

                append_lines(run / LOG, [json.dumps({"step": state.global_step, "epoch": round(state.epoch or 0, 4),
                                                     "seconds": round(time.monotonic() - started, 2), **logs})])

    class TimeBudget(TrainerCallback):
        """Stop after max_minutes of training, saving a checkpoint first."""

        def on_step_end(self, args, state, control, **kwargs):
            if settings.max_minutes and time.monotonic() - started > settings.max_minutes * 60:
                control.should_training_stop = True
                control.should_save = True

    class Bar(ProgressCallback):
        """The trainer's progress bar, with the loss on it instead of a dict printed per step."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
                self.training_bar.set_postfix(loss=f"{logs['loss']:.3f}", refresh=False)

    return [LogFile(), TimeBudget()], Bar


def _use_bar(trainer, bar_class) -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(bar_class)


def _common_args(run: Path, settings: TrainConfig) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "output_dir": str(run / CHECKPOINTS), "seed": settings.seed, "report_to": [], "save_strategy": "steps",
        "save_total_limit": 2, "logging_steps": settings.logging_steps, "disable_tqdm": False,
        "use_cpu": not cuda, "bf16": cuda and torch.cuda.is_bf16_supported(), "dataloader_num_workers": 0,
        # DDP over gloo on CPUs: LoRA leaves most parameters frozen, which DDP must be told about.
        "ddp_find_unused_parameters": False,
    }


# --- SFT ------------------------------------------------------------------------------


@dataclass
class Result:
    run: Path
    meta: dict[str, Any]


def sft(kit: SubjectKit, workspace: Workspace, role: str, settings: TrainConfig, *, base: str, resume: bool = False,
        start_from: Path | None = None, dataset_path: Path | None = None, say: Callable[[str], None] = _say) -> Result:
    """LoRA SFT of the subject's `role` adapter on its dataset; returns the finished run."""
    from . import dataset as ds

    data, data_meta = ds.load(workspace, kit.name, role, dataset_path)
    if start_from is not None:
        parent = read_meta(start_from)
        check_bound(parent, kit.name, role, f"the adapter {start_from}")
        base = parent["base_model"]
    if resume:
        run = _unfinished(workspace, kit.name, role, "sft")
        started_with = read_meta(run, RUN_META)
        check_bound(started_with, kit.name, role, f"the run {run}")
        if started_with["dataset"]["fingerprint"] != data_meta["fingerprint"]:
            raise TutorError(f"the {role} dataset changed since {run.name} started (fingerprint {started_with['dataset']['fingerprint']} -> "
                             f"{data_meta['fingerprint']}): start a new run instead of --resume")
        settings = TrainConfig.model_validate(started_with["settings"])
        base = started_with["base_model"]
        start_from = Path(started_with["start_from"]) if started_with.get("start_from") else None
        say(f"resuming {run}")
    backend = choose_backend(settings.backend)
    if not resume:
        run = _new_run(workspace, kit.name, role, "sft")
    say(f"training the {kit.name} {role} adapter ({backend}) from {base}: {len(data['train'])} train / "
        f"{len(data['validation'])} validation examples -> {run}")
    loaded = load_base(base, settings, backend=backend, say=say)
    started_with = {"subject": kit.name, "role": role, "method": "sft", "base_model": loaded.base, "backend": backend,
                    "start_from": str(start_from) if start_from else None, "settings": settings.model_dump(mode="json"),
                    "dataset": {"path": str(dataset_path or ds.dataset_dir(workspace, kit.name, role)), "fingerprint": data_meta["fingerprint"]}}
    if _main_process() and not resume:
        _write_json(run / RUN_META, started_with)
    model = add_lora(loaded, settings, start_from)
    trainer = _sft_trainer(model, loaded.tokenizer, run, settings, data)
    started = time.monotonic()
    extra, bar = _callbacks(run, settings, started)
    for callback in extra:
        trainer.add_callback(callback)
    _use_bar(trainer, bar)
    evaluate = len(data["validation"]) > 0
    before = trainer.evaluate()["eval_loss"] if evaluate and not resume else None
    checkpoint = _last_checkpoint(run) if resume else None
    output = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.monotonic() - started
    after = trainer.evaluate()["eval_loss"] if evaluate else None
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    metrics = {
        "train_loss": round(output.training_loss, 4), "eval_loss_before": _round(before), "eval_loss_after": _round(after),
        "steps": trainer.state.global_step, "epochs": round(trainer.state.epoch or 0, 3), "seconds": round(seconds, 1),
        "tokens_per_second": round(tokens * (trainer.state.epoch or 0) / max(output.metrics["train_runtime"], 1e-9), 1),
        "train_tokens_per_epoch": tokens, "peak_rss_mb": peak_rss_mb(), "processes": trainer.args.world_size,
        "stopped_by_time_budget": bool(settings.max_minutes and seconds > settings.max_minutes * 60),
    }
    return _finish(trainer, model, loaded.tokenizer, run, started_with, metrics, data_meta)


def _sft_trainer(model, tokenizer, run: Path, settings: TrainConfig, data):
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        **_common_args(run, settings),
        per_device_train_batch_size=settings.batch_size, per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum, learning_rate=settings.learning_rate, num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1, lr_scheduler_type="cosine", warmup_steps=settings.warmup_ratio,  # a float below 1 is a share of the steps
        save_steps=settings.save_steps, eval_strategy="no", max_length=settings.max_length,
        # Packing: best-fit rows with position ids that restart per example, no padding at all;
        # transformers turns restarting position ids into a block-diagonal mask, so examples never see each other.
        packing=settings.packing, packing_strategy="bfd", padding_free=settings.packing, completion_only_loss=True,
        dataset_num_proc=None, remove_unused_columns=True,
    )
    validation = prompt_completion(data["validation"]) if len(data["validation"]) else None
    return _quiet(lambda: SFTTrainer(model=model, args=args, train_dataset=prompt_completion(data["train"]), eval_dataset=validation,
                                     processing_class=tokenizer))


def _quiet(make):
    """Build a trainer without the datasets library's per-map progress bars (they flash for milliseconds)."""
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    bars = is_progress_bar_enabled()
    disable_progress_bar()
    try:
        return make()
    finally:
        if bars:
            enable_progress_bar()


def _main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def _round(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 4)


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _finish(trainer, model, tokenizer, run: Path, started_with: dict, metrics: dict, data_meta: dict) -> Result:
    """Save the adapter, the plot and the metadata (rank 0); metadata last, so a crash leaves the run unfinished."""
    meta = {**started_with, "dataset": {**started_with["dataset"], "examples": {k: v for k, v in _split_sizes(data_meta).items()}},
            "metrics": metrics, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if trainer.is_world_process_zero():
        model.save_pretrained(str(run))
        tokenizer.save_pretrained(str(run))
        plot_losses(run / LOG, run / PLOT, title=f"{started_with['subject']} {started_with['role']} adapter ({started_with['method']})")
        _write_json(run / ADAPTER_META, meta)
    trainer.accelerator.wait_for_everyone()
    return Result(run, meta)


def _split_sizes(data_meta: dict) -> dict[str, int]:
    return {split: sum(counts[split] for counts in data_meta["counts"].values()) for split in ("train", "validation", "test")}


# --- the loss curve -----------------------------------------------------------------------


def plot_losses(log: Path, out: Path, title: str) -> Path | None:
    """loss.png from log.jsonl: training loss per step, validation loss where measured, reward for GRPO."""
    if not log.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    curves = {"training loss": [(r["step"], r["loss"]) for r in rows if "loss" in r],
              "validation loss": [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r],
              "mean reward": [(r["step"], r["reward"]) for r in rows if "reward" in r]}
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for label, points in curves.items():
        if points:
            style = "o-" if len(points) < 3 else "-"
            ax.plot(*zip(*points), style, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss / reward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out


# --- inference (ask) ----------------------------------------------------------------------------


def load_for_inference(workspace: Workspace, subject: str, role: str, *, adapter: Path | None = None, base_only: bool = False,
                       base: str | None = None, say: Callable[[str], None] = _say):
    """(model, tokenizer, adapter folder or None): the base model plus the subject's latest adapter of `role`."""
    from .basemodels import load_model, load_tokenizer

    if not base_only:
        adapter = adapter or latest_adapter(workspace, subject, role)
        if adapter is None:
            raise TutorError(f"{subject} has no trained {role} adapter yet: run `tutor --subject {subject} train --role {role}` "
                             f"(or ask with --base for the untrained model)")
        meta = read_meta(adapter)
        if meta.get("subject") != subject:
            raise TutorError(f"the adapter {adapter} belongs to {meta.get('subject')!r}: refusing to answer {subject} with it")
        base = meta["base_model"]
    model = load_model(base, say=say)
    tokenizer = load_tokenizer(base, say=say)
    if not base_only:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    return model, tokenizer, None if base_only else adapter


def generate(model, tokenizer, messages: list[dict[str, str]], *, max_new_tokens: int = 384, stream: Callable[[str], None] | None = None) -> str:
    """Greedy decoding of the assistant's reply (deterministic: the same adapter answers the same way)."""
    import torch
    from transformers import TextIteratorStreamer

    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    kwargs = {**inputs, "max_new_tokens": max_new_tokens, "do_sample": False, "repetition_penalty": 1.1,
              "pad_token_id": tokenizer.pad_token_id or tokenizer.eos_token_id}
    if stream is None:
        with torch.no_grad():
            out = model.generate(**kwargs)
        return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    import threading

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    worker = threading.Thread(target=lambda: torch.no_grad()(model.generate)(**kwargs, streamer=streamer))
    worker.start()
    pieces = []
    for piece in streamer:
        pieces.append(piece)
        stream(piece)
    worker.join()
    return "".join(pieces).strip()
