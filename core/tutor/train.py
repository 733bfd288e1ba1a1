"""The train stage: one LoRA adapter per subject and role, by SFT, then GRPO with the plugins' rewards.

Backends, chosen per run: Unsloth when a CUDA GPU and unsloth are present
(`import unsloth` fails without a GPU, so it is imported only then), else
transformers + peft + trl, on a CPU or a GPU. Under `torchrun` or
`accelerate launch` the same code trains data-parallel: rank 0 names the run
and writes the files.

SFT and GRPO are one skeleton (`_train`: base model + LoRA, run folder and
metadata, callbacks, train, plot, save) with two fillings: the trainer each
builds and the metrics each reports. The run layout, the newest-run lookup
and the subject/role binding live in runs.py: an adapter is bound to its
subject and role, and training refuses a dataset, a checkpoint or a starting
adapter of another subject.

With eval_every = "epoch", SFT of the answer role also answers up to eval_limit
validation questions after each epoch and scores them with the rule-based
evaluators (the epoch checks): logged, plotted and recorded with the adapter,
and kept out of both the trained weights and tokens/s.

Nothing here reads a private field (a name starting with `_`) of torch,
transformers or trl: test_train.py checks it, so a library upgrade cannot
silently break what those fields meant.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from . import runs
from .config import TrainConfig
from .console import say as _say  # the default for `say`: a status line on stderr
from .errors import TutorError
from .registry import SubjectKit
from .runs import ADAPTER_META, CHECKPOINTS, LOG, PLOT, RUN_META
from .workspace import Workspace

if TYPE_CHECKING:
    from .models import Question

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


# --- the hardware plan --------------------------------------------------------------


@dataclass(frozen=True)
class HardwarePlan:
    """What this machine runs: the 'auto' settings made concrete. Recorded in tutor-adapter.json as `plan` (asdict)."""

    device: Literal["cpu", "cuda"]
    bf16: bool  # bf16 autocast (fp32 weights on a CPU, bf16 weights on a GPU)
    packing: bool  # padding-free packed rows
    flash_attention: bool
    gradient_checkpointing: bool
    fused_loss: bool  # TRL's fused LM head, which never builds the full logits
    micro_batch: int  # examples per forward pass; the rest of batch_size is gradient accumulation


def hardware_plan(settings: TrainConfig, backend: str) -> HardwarePlan:
    """The plan for this machine and these settings.

    Measured on the 2-core CPU (SmolLM2-135M, LoRA r16, fwd+bwd): bf16 autocast on AMX
    2.5x fp32; one example per forward pass as fast per token as four padded ones, at
    a third of the memory (no padding, so no attention mask and sdpa's causal kernel);
    packed rows 0.6x (sdpa has no varlen kernel on a CPU, so a packed row costs its
    full square of attention); gradient checkpointing 0.85x. Without bf16 in hardware
    (AVX2 only) bf16 is emulated: 6x slower than fp32 per layer, measured with the ISA
    capped to AVX2, so fp32; and in fp32 the same choices win (bench/train.py --plans
    --precision fp32, ISA capped to AVX2: padded batches of 4 0.57x, at 4x the memory;
    checkpointing 0.71x; packing 0.79x). On a GPU with a varlen kernel, packing wins instead.
    """
    import importlib.util

    import torch

    cuda = torch.cuda.is_available()
    if settings.precision == "auto":
        bf16 = torch.cuda.is_bf16_supported() if cuda else cpu_has_native_bf16()
    else:
        bf16 = settings.precision == "bf16"
    varlen = backend == "unsloth" or (cuda and importlib.util.find_spec("flash_attn") is not None)
    return HardwarePlan(
        device="cuda" if cuda else "cpu", bf16=bf16,
        packing=varlen if settings.packing is None else settings.packing,
        flash_attention=varlen and backend != "unsloth",
        gradient_checkpointing=cuda if settings.gradient_checkpointing is None else settings.gradient_checkpointing,
        # A memory win on a GPU with a big vocabulary, but measured 1.15-1.5x slower than the model's own loss on a CPU.
        fused_loss=cuda,
        micro_batch=min(settings.micro_batch or (settings.batch_size if cuda else 1), settings.batch_size),
    )


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: bf16 matmuls in hardware. Elsewhere (AVX2 only, say) bf16 is emulated and slower than fp32.

    torch.cpu.get_capabilities is public from torch 2.9; an older torch gets fp32, the safe choice.
    """
    import torch

    capabilities = getattr(torch.cpu, "get_capabilities", dict)()
    return bool(capabilities.get("amx_bf16") or capabilities.get("avx512_bf16"))


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


def load_base(base: str, settings: TrainConfig, *, backend: str, plan: HardwarePlan, say: Callable[[str], None] = _say) -> Loaded:
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
    if plan.flash_attention:
        kwargs["attn_implementation"] = "flash_attention_2"
    # On a GPU, bf16 weights; on a CPU, fp32 weights under bf16 autocast (bf16 weights measured 0.6x autocast there).
    dtype = torch.bfloat16 if plan.device == "cuda" and plan.bf16 else torch.float32
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
    from transformers import set_seed

    set_seed(settings.seed)  # the new LoRA weights are random: drawn from the run's seed, two runs with one seed train alike
    config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                        target_modules=_targets(settings, loaded.base), task_type="CAUSAL_LM")
    return get_peft_model(loaded.model, config)


# --- the skeleton SFT and GRPO share ----------------------------------------------------------


@dataclass
class Result:
    run: Path
    meta: dict[str, Any]


def _train(kit: SubjectKit, workspace: Workspace, role: str, settings: TrainConfig, *, method: str, base: str, start_from: Path | None,
           dataset: tuple[Path, dict], announce: Callable[[str, Path], str], make_trainer: Callable[..., Any],
           fit: Callable[[Any], dict[str, Any]], meta: dict[str, Any] | None = None, resume: Path | None = None,
           say: Callable[[str], None] = _say) -> Result:
    """Load the base model and LoRA, open the run, train, and save adapter, plot and metadata.

    `dataset` is (its folder, its meta); `make_trainer(model, tokenizer, run, plan)` builds the method's
    trainer; `fit(trainer)` trains it and returns the method's own metrics. `meta` adds to what the run
    records it was started with; `resume` is the unfinished run to continue.
    """
    backend = choose_backend(settings.backend)
    plan = hardware_plan(settings, backend)
    run = resume or _new_run(workspace, kit.name, role, method)
    say(announce(backend, run))
    fresh = resume is None and _main_process()
    try:
        loaded = load_base(base, settings, backend=backend, plan=plan, say=say)
        started_with = {"subject": kit.name, "role": role, "method": method, **(meta or {}), "base_model": loaded.base, "backend": backend,
                        "plan": asdict(plan), "start_from": str(start_from) if start_from else None,
                        "settings": settings.model_dump(mode="json"),
                        "dataset": {"path": str(dataset[0]), "fingerprint": dataset[1]["fingerprint"]}}
        if fresh:
            runs.write_meta(run / RUN_META, started_with)
        model = add_lora(loaded, settings, start_from)
        trainer = _quiet(lambda: make_trainer(model, loaded.tokenizer, run, plan))
    except BaseException:
        if fresh:  # nothing was trained: leave no unfinished run for --resume to find
            shutil.rmtree(run, ignore_errors=True)
        raise
    started = time.monotonic()
    log_file, budget = _callbacks(run, settings.max_minutes, started)
    trainer.add_callback(log_file)
    trainer.add_callback(budget)
    _use_bar(trainer)
    metrics = fit(trainer)
    metrics.update(steps=trainer.state.global_step, epochs=round(trainer.state.epoch or 0, 3), seconds=round(time.monotonic() - started, 1),
                   peak_rss_mb=peak_rss_mb(), processes=trainer.args.world_size, stopped_by_time_budget=budget.stopped)
    return _finish(trainer, model, loaded.tokenizer, run, started_with, metrics, dataset[1])


def _new_run(workspace: Workspace, subject: str, role: str, method: str) -> Path:
    """A fresh run folder, named and made by rank 0 and shared with the other ranks."""
    state = _state()
    folder = runs.adapters_dir(workspace, subject, role)
    name = [runs.make_run(folder, runs.run_name(method)).name if state.is_main_process else None]
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(name, from_process=0)
    return folder / name[0]


def _common_args(run: Path, settings: TrainConfig, plan: HardwarePlan) -> dict[str, Any]:
    return {
        "output_dir": str(run / CHECKPOINTS), "seed": settings.seed, "report_to": [], "save_strategy": "steps",
        "save_steps": settings.save_steps, "save_total_limit": 2, "logging_steps": settings.logging_steps, "disable_tqdm": False,
        "use_cpu": plan.device == "cpu", "bf16": plan.bf16, "dataloader_num_workers": 0,
        "activation_checkpointing": plan.gradient_checkpointing,  # transformers 5 name of gradient checkpointing
        # DDP over gloo on CPUs: LoRA leaves most parameters frozen, which DDP must be told about.
        "ddp_find_unused_parameters": False,
    }


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


def _state():
    """The processes of this run. cpu=True on a CPU: without it accelerate does not join a torchrun
    group there, and every rank would think itself rank 0."""
    from accelerate import PartialState

    return PartialState(cpu=not _cuda())


def _main_process() -> bool:
    return _state().is_main_process


def _round(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 4)


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _finish(trainer, model, tokenizer, run: Path, started_with: dict, metrics: dict, data_meta: dict) -> Result:
    """Save the adapter, the plot and the metadata (rank 0); metadata last, so a crash leaves the run unfinished."""
    meta = {**started_with, "dataset": {**started_with["dataset"], "examples": _split_sizes(data_meta)},
            "metrics": metrics, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if trainer.is_world_process_zero():
        model.save_pretrained(str(run))
        tokenizer.save_pretrained(str(run))
        plot_losses(run / LOG, run / PLOT, title=f"{started_with['subject']} {started_with['role']} adapter ({started_with['method']})")
        runs.write_meta(run / ADAPTER_META, meta)
    trainer.accelerator.wait_for_everyone()
    return Result(run, meta)


def _split_sizes(data_meta: dict) -> dict[str, int]:
    return {split: sum(counts[split] for counts in data_meta["counts"].values()) for split in ("train", "validation", "test")}


# --- callbacks ------------------------------------------------------------------------


def _callbacks(run: Path, max_minutes: float | None, started: float) -> list:
    """A log.jsonl writer, and a time budget whose `stopped` says whether it ended the training."""
    from transformers import TrainerCallback

    class LogFile(TrainerCallback):
        """Every logged step and evaluation, appended to log.jsonl as it happens (rank 0)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                from .jsonl import append_lines

                append_lines(run / LOG, [json.dumps({"step": state.global_step, "epoch": round(state.epoch or 0, 4),
                                                     "seconds": round(time.monotonic() - started, 2), **logs})])

    class TimeBudget(TrainerCallback):
        """Stop after max_minutes of training, saving a checkpoint first."""

        stopped = False

        def on_step_end(self, args, state, control, **kwargs):
            if max_minutes and time.monotonic() - started > max_minutes * 60:
                control.should_training_stop = control.should_save = self.stopped = True

    return [LogFile(), TimeBudget()]


def _use_bar(trainer) -> None:
    """The trainer's progress bar, with the loss on it instead of a dict printed per step."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class Bar(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
                self.training_bar.set_postfix(loss=f"{logs['loss']:.3f}", refresh=False)

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(Bar)


# --- data ------------------------------------------------------------------------------


def prompt_completion(split):
    """Chat examples -> prompt (system + user) and completion (the assistant turn).

    TRL then computes the loss on the completion only, with any chat template:
    no `{% generation %}` markers needed (SmolLM2's template has none).
    """
    return split.map(lambda row: {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]},
                     remove_columns=split.column_names)


# --- SFT ------------------------------------------------------------------------------


def sft(kit: SubjectKit, workspace: Workspace, role: str, settings: TrainConfig, *, base: str, resume: bool = False,
        start_from: Path | None = None, dataset_path: Path | None = None, say: Callable[[str], None] = _say) -> Result:
    """LoRA SFT of the subject's `role` adapter on its dataset; returns the finished run."""
    from . import dataset as ds

    if start_from is not None:  # checked first: the refusal must not hide behind a missing dataset
        parent = runs.read_meta(start_from)
        runs.check_bound(parent, kit.name, role, f"the adapter {start_from}", f"train {kit.name} from it")
        base = parent["base_model"]
    data, data_meta = ds.load(workspace, kit.name, role, dataset_path)
    run = None
    if resume:
        run = runs.unfinished(workspace, kit.name, role, "sft")
        started_with = runs.read_meta(run, RUN_META)
        runs.check_bound(started_with, kit.name, role, f"the run {run}", f"train {kit.name} from it")
        if started_with["dataset"]["fingerprint"] != data_meta["fingerprint"]:
            was, now = started_with["dataset"]["fingerprint"], data_meta["fingerprint"]
            raise TutorError(f"the {role} dataset changed since {run.name} started (fingerprint {was} -> {now}): "
                             f"start a new run instead of --resume")
        settings = TrainConfig.model_validate(started_with["settings"])
        base = started_with["base_model"]
        start_from = Path(started_with["start_from"]) if started_with.get("start_from") else None
        say(f"resuming {run}")
    evaluate = len(data["validation"]) > 0
    questions = _epoch_check_questions(kit, workspace, role, settings, data, data_meta, say)

    def make_trainer(model, tokenizer, run, plan):
        trainer = _sft_trainer(model, tokenizer, run, settings, plan, data)
        if len(trainer.train_dataset) == 0:
            raise TutorError(f"no {role} example keeps any of its answer within max_length = {settings.max_length} tokens: "
                             f"raise max_length (the dataset card gives the longest)")
        if questions:
            trainer.add_callback(_epoch_check(trainer, kit, questions, workspace.template_dirs(kit.name), settings.eval_max_new_tokens))
        return trainer

    def fit(trainer) -> dict[str, Any]:
        # .get: under torchrun only rank 0 is sure to hold the gathered loss, and only rank 0 writes it down.
        checkpoint = _last_checkpoint(run) if resume else None
        before = trainer.evaluate().get("eval_loss") if evaluate and not checkpoint else None
        resumed_at = json.loads((Path(checkpoint) / "trainer_state.json").read_text()) if checkpoint else {}
        output = trainer.train(resume_from_checkpoint=checkpoint)
        training_seconds = _training_seconds(trainer, output, resumed_at)  # before a final evaluate() adds to the log
        after = _final_eval_loss(trainer) if evaluate else None
        # Real (unpadded) tokens of every process, counted by the trainer as it feeds them; this call's only.
        trained = trainer.state.num_input_tokens_seen - resumed_at.get("num_input_tokens_seen", 0)
        return {"train_loss": round(output.training_loss, 4), "eval_loss_before": _round(before), "eval_loss_after": _round(after),
                "trained_tokens": trained, "tokens_per_second": round(trained / training_seconds, 1),
                "training_seconds": round(training_seconds, 2),
                "train_tokens_per_epoch": sum(len(ids) for ids in trainer.train_dataset["input_ids"]),
                "epoch_evals": epoch_evals(trainer.state.log_history)}

    def announce(backend: str, run: Path) -> str:
        return (f"training the {kit.name} {role} adapter ({backend}) from {base}: {len(data['train'])} train / "
                f"{len(data['validation'])} validation examples -> {run}")

    where = dataset_path or ds.dataset_dir(workspace, kit.name, role)
    return _train(kit, workspace, role, settings, method="sft", base=base, start_from=start_from, dataset=(where, data_meta),
                  announce=announce, make_trainer=make_trainer, fit=fit, resume=run, say=say)


def _last_checkpoint(run: Path) -> str | None:
    """The newest complete checkpoint of `run`. Trainer writes trainer_state.json last, so a checkpoint whose state is
    missing or cut short was being saved when the process died (kill -9, power): resuming from it would fail."""
    def complete(folder: Path) -> bool:
        try:
            return isinstance(json.loads((folder / "trainer_state.json").read_text(encoding="utf-8")), dict)
        except (OSError, ValueError):
            return False

    found = [p for p in (run / CHECKPOINTS).glob("checkpoint-*") if p.name.rsplit("-", 1)[1].isdigit() and complete(p)]
    return str(max(found, key=lambda p: int(p.name.rsplit("-", 1)[1]))) if found else None


def _training_seconds(trainer, output, resumed_at: dict) -> float:
    """This call's train_runtime less its end-of-epoch evaluations (validation loss, and the scores of
    --eval-every epoch), which Trainer counts in it."""
    evaluating = sum(row.get("eval_runtime", 0.0) + row.get(EPOCH_CHECK_RUNTIME, 0.0) for row in trainer.state.log_history
                     if row.get("step", 0) > resumed_at.get("global_step", 0))
    return max(output.metrics["train_runtime"] - evaluating, 1e-9)


def _final_eval_loss(trainer) -> float | None:
    """The validation loss at the last step: the end-of-epoch evaluation when it fell there, else a new one."""
    last = next((row for row in reversed(trainer.state.log_history) if "eval_loss" in row), None)
    if last is not None and last.get("step") == trainer.state.global_step:
        return last["eval_loss"]
    return trainer.evaluate().get("eval_loss")


def _sft_trainer(model, tokenizer, run: Path, settings: TrainConfig, plan: HardwarePlan, data):
    from transformers import Trainer
    from trl import SFTConfig, SFTTrainer

    class TutorSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if plan.fused_loss:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # The model's own loss on the collator's labels: -100 outside the completion, so still assistant-only.
            # (TRL's token count and accuracy metrics come with its fused path; the token count is the Trainer's here.)
            return Trainer.compute_loss(self, model, {**inputs, "use_cache": False}, return_outputs, num_items_in_batch)

    args = SFTConfig(
        **_common_args(run, settings, plan),
        per_device_train_batch_size=plan.micro_batch, per_device_eval_batch_size=plan.micro_batch,
        gradient_accumulation_steps=math.ceil(settings.batch_size / plan.micro_batch),
        learning_rate=settings.learning_rate, num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1, lr_scheduler_type="cosine",
        warmup_steps=settings.warmup_ratio,  # a float below 1 is a share of the steps
        eval_strategy="epoch" if len(data["validation"]) else "no", max_length=settings.max_length, completion_only_loss=True,
        # Packing: best-fit rows with position ids that restart per example, no padding at all; examples never see
        # each other. Without it: one example per pass on a CPU, else batches of similar length padded to their longest.
        packing=plan.packing, packing_strategy="bfd", padding_free=plan.packing,
        train_sampling_strategy="group_by_length" if plan.micro_batch > 1 and not plan.packing else "random",
        # The trainer counts the real tokens it trains on (state.num_input_tokens_seen, kept in checkpoints): tokens/s.
        include_num_input_tokens_seen="non_padding",
        dataset_num_proc=None, remove_unused_columns=True,
    )
    validation = prompt_completion(data["validation"]) if len(data["validation"]) else None
    return TutorSFTTrainer(model=model, args=args, train_dataset=prompt_completion(data["train"]), eval_dataset=validation,
                           processing_class=tokenizer)


# --- fast metrics after each epoch (--eval-every epoch) ----------------------------------------

# The evaluators cheap enough to run between epochs: rules over the reply, no judge model, no renderer.
EPOCH_METRICS = ("mcq", "form", "final-answer")
EPOCH_CHECK_RUNTIME = "eval/runtime"  # seconds a check took, logged with its scores so tokens/s can leave it out


def epoch_questions(bank, validation, limit: int) -> list[Question]:
    """Up to `limit` bank questions of the validation split, in its order (a question with two gold answers counts once)."""
    by_id = {q.id: q for q in bank.questions}
    ids = dict.fromkeys(row["question_id"] for row in validation if row["kind"] == "answer" and row["question_id"] in by_id)
    return [by_id[question_id] for question_id in list(ids)[:limit]]


def epoch_scores(kit: SubjectKit, questions: list[Question], replies: list[str]) -> dict[str, float]:
    """`eval/<evaluator>`: its mean score over the questions it judged (absent when it judged none); `eval/n`: the questions."""
    from .eval.scoring import score_reply

    judged: dict[str, list[float]] = {}
    for question, reply in zip(questions, replies, strict=True):
        for name, score in score_reply(kit, question, reply, only=set(EPOCH_METRICS)).items():
            judged.setdefault(name, []).append(score.fraction)
    means = {f"eval/{name}": round(sum(judged[name]) / len(judged[name]), 4) for name in EPOCH_METRICS if name in judged}
    return {**means, "eval/n": len(questions)}


def epoch_evals(log_history: list[dict]) -> list[dict]:
    """The epoch checks of a run's log (tutor-adapter.json's `epoch_evals`): step, epoch and the eval/ values of each."""
    return [{key: value for key, value in row.items() if key in ("step", "epoch") or key.startswith("eval/")}
            for row in log_history if "eval/n" in row]


def _epoch_check_questions(kit: SubjectKit, workspace: Workspace, role: str, settings: TrainConfig, data, data_meta: dict,
                           say: Callable[[str], None]) -> list[Question]:
    """The validation questions eval_every = 'epoch' answers; none where there is nothing to check, said once.

    The diagram role is skipped rather than refused: tutor.toml's [train] applies to both roles, and a setting
    meant for the answer role must not stop the diagram role from training.
    """
    if settings.eval_every is None:
        return []
    if role != "answer":
        say(f"eval_every: skipped for the {role} role (the epoch checks score answers to bank questions)")
        return []
    questions = epoch_questions(_bank_of(kit, workspace, data_meta), data["validation"], settings.eval_limit)
    if not questions:
        say("eval_every: skipped: the validation split holds no bank question (dataset build with validation > 0)")
    return questions


def _epoch_check(trainer, kit: SubjectKit, questions: list[Question], template_dirs: list[Path], max_new_tokens: int):
    """A callback that answers `questions` after each epoch (rank 0) and logs the mean scores as one row.

    The row goes through trainer.log, like every other: into log.jsonl, the trainer's log history
    and its checkpoints. The check leaves training as it found it: the model back in training mode,
    and the random state restored (dropout draws from it; a plugin's evaluator might too), so a run
    trains the same weights with and without it.
    """
    import torch
    from transformers import TrainerCallback

    from .dataset import tutor_messages
    from .infer.generate import generate_batch

    conversations = [tutor_messages(kit, question, template_dirs) for question in questions]  # the prompt the adapter trains on

    class EpochCheck(TrainerCallback):
        def on_epoch_end(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            started = time.monotonic()
            model = trainer.model
            with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
                model.eval()
                try:
                    replies = generate_batch(model, trainer.processing_class, conversations, max_new_tokens=max_new_tokens)
                finally:
                    model.train()
                scores = epoch_scores(kit, questions, [reply.text for reply in replies])
            trainer.log({**scores, EPOCH_CHECK_RUNTIME: round(time.monotonic() - started, 2)})

    return EpochCheck()


# --- GRPO ------------------------------------------------------------------------------


def rewards_for(kit: SubjectKit, task: str) -> list:
    """The registered rewards that judge `task` for this subject (a reward's `subjects` empty: every subject)."""
    from .registry import registry

    found = [r for r in registry().rewards.values() if r.task == task and (not r.subjects or kit.name in r.subjects)]
    if not found:
        raise TutorError(f"no reward judges the {task} task for {kit.name}: GRPO has nothing to learn from")
    return found


def _bank_of(kit: SubjectKit, workspace: Workspace, data_meta: dict):
    """The bank the dataset was built from (its questions carry the mark schemes the rewards read)."""
    from . import dataset as ds
    from .bank import load_bank

    where = data_meta.get("bank_path")
    if where and Path(where).exists():
        return load_bank(kit, Path(where))
    return ds.choose_bank(kit, workspace)[0]


def grpo_prompts(kit: SubjectKit, workspace: Workspace, task: str, split, bank):
    """The prompts GRPO samples from: the train split's, or for `set`, one request per type and topic of it."""
    from datasets import Dataset

    if task != "set":
        rows = [{"prompt": r["messages"][:-1], "id": r["id"], "question_id": r["question_id"], "format": r["format"]}
                for r in split if r["kind"] != "identity"]
        return Dataset.from_list(rows)
    from .prompts import question_context, render

    by_id = {q.id: q for q in bank.questions}
    rows, seen = [], set()
    for r in split:
        question = by_id.get(r["question_id"])
        if question is None or (question.type, question.topic) in seen:
            continue
        seen.add((question.type, question.topic))
        context = question_context(kit, question, topic=question.topic, examples=[q for q in bank.questions if q.type == question.type])
        messages = render(kit, "set", workspace.template_dirs(kit.name), **context)
        rows.append({"prompt": messages, "id": f"set-{question.type}-{question.topic}", "question_id": question.id, "format": ""})
    return Dataset.from_list(rows)


def reward_function(reward, task: str, kit: SubjectKit, bank, compile_fn):
    """A TRL reward function around a plugin Reward: builds the RewardBatch, checks what comes back."""
    from .models import RewardBatch

    by_id = {q.id: q for q in bank.questions}

    def score(prompts, completions, id, question_id, format, **_):  # noqa: A002 - TRL passes dataset columns by name
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        users = [p[-1]["content"] if isinstance(p, list) else p for p in prompts]
        order: dict[str, int] = {}
        groups = [order.setdefault(key, len(order)) for key in id]  # a prompt's generations share its example id
        questions = [None if task == "set" else by_id.get(q) for q in question_id]
        batch = RewardBatch(task=task, completions=texts, prompts=users, questions=questions, formats=list(format), groups=groups,
                            subject=kit.subject, bank=bank.questions, compile=compile_fn)
        try:
            scores = list(reward.score(batch))
        except TutorError:
            raise
        except Exception as err:  # noqa: BLE001 - a plugin's bug, named
            raise TutorError(f"reward {reward.name!r} failed: {type(err).__name__}: {err}") from err
        if len(scores) != len(texts) or not all(isinstance(s, int | float) and 0 <= s <= 1 for s in scores):
            raise TutorError(f"reward {reward.name!r} must return {len(texts)} scores in [0, 1]; it returned {scores[:8]}")
        return [float(s) for s in scores]

    score.__name__ = reward.name
    return score


def _compiler(kit: SubjectKit, workspace: Workspace):
    from .diagrams import renderer_for

    renderer = renderer_for(workspace)

    def compile_fn(format_name: str, code: str) -> str | None:
        result = renderer.render(kit.format(format_name), code)
        return None if result.ok else str(result.error)

    return compile_fn


def grpo(kit: SubjectKit, workspace: Workspace, role: str, settings: TrainConfig, *, task: str | None = None,
         start_from: Path | None = None, say: Callable[[str], None] = _say) -> Result:
    """GRPO of the subject's `role` adapter, from its newest finished adapter (or `start_from`)."""
    from . import dataset as ds

    task = task or role
    start_from = start_from or runs.latest_adapter(workspace, kit.name, role)
    if start_from is None:
        raise TutorError(f"{kit.name} has no finished {role} adapter to reinforce: "
                         f"run `tutor --subject {kit.name} train --role {role}` first")
    parent = runs.read_meta(start_from)
    runs.check_bound(parent, kit.name, role, f"the adapter {start_from}", f"train {kit.name} from it")
    data, data_meta = ds.load(workspace, kit.name, role)
    bank = _bank_of(kit, workspace, data_meta)
    rewards = rewards_for(kit, task)
    prompts = grpo_prompts(kit, workspace, task, data["train"], bank)
    if not len(prompts):
        raise TutorError(f"the {role} dataset's train split has no prompts for the {task} task")

    def make_trainer(model, tokenizer, run, plan):
        functions = [reward_function(r, task, kit, bank, _compiler(kit, workspace)) for r in rewards]
        return _grpo_trainer(model, tokenizer, run, settings, plan, prompts, functions, [r.weight for r in rewards])

    def fit(trainer) -> dict[str, Any]:
        output = trainer.train()
        logged = [row for row in trainer.state.log_history if "reward" in row]
        first, last = (logged[0], logged[-1]) if logged else ({}, {})
        return {"train_loss": round(output.training_loss, 4), "eval_loss_before": None, "eval_loss_after": None,
                "reward_first": _round(first.get("reward")), "reward_last": _round(last.get("reward")),
                "rewards_last": {r.name: _round(last.get(f"rewards/{r.name}/mean")) for r in rewards} if logged else {},
                "tokens_per_second": None}

    def announce(backend: str, run: Path) -> str:
        weights = ", ".join(f"{r.name} x{r.weight:g}" for r in rewards)
        return (f"GRPO on the {kit.name} {role} adapter ({task} task, {backend}) from {start_from}: {len(prompts)} prompts, "
                f"rewards {weights} -> {run}")

    return _train(kit, workspace, role, settings, method="grpo", base=parent["base_model"], start_from=start_from,
                  dataset=(ds.dataset_dir(workspace, kit.name, role), data_meta), announce=announce, make_trainer=make_trainer, fit=fit,
                  meta={"task": task, "rewards": {r.name: r.weight for r in rewards}}, say=say)


def _grpo_trainer(model, tokenizer, run: Path, settings: TrainConfig, plan: HardwarePlan, prompts, functions, weights):
    from trl import GRPOConfig, GRPOTrainer

    g = settings.grpo
    args = GRPOConfig(
        **_common_args(run, settings, plan),
        per_device_train_batch_size=g.prompts_per_step * g.generations, num_generations=g.generations,
        max_completion_length=g.max_completion, learning_rate=g.learning_rate, beta=g.beta, temperature=g.temperature,
        max_steps=g.max_steps, reward_weights=weights, lr_scheduler_type="constant",
        remove_unused_columns=False,
    )
    return GRPOTrainer(model=model, reward_funcs=functions, args=args, train_dataset=prompts, processing_class=tokenizer)


# --- the loss curve -----------------------------------------------------------------------


def plot_losses(log: Path, out: Path, title: str) -> Path | None:
    """loss.png from log.jsonl: training loss per step (raw and smoothed), validation loss where measured,
    and on a second axis (their scale has nothing to do with the loss's) GRPO's mean reward or the
    epoch checks' scores, from 0 to 1."""
    if not log.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    validation = sorted(dict((r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r).items())
    reward = [(r["step"], r["reward"]) for r in rows if "reward" in r]
    checks = {name: [(r["step"], r[f"eval/{name}"]) for r in rows if f"eval/{name}" in r] for name in EPOCH_METRICS}
    checks = {name: points for name, points in checks.items() if points}
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train:
        steps, losses = zip(*train)
        # Each step's loss comes from a handful of examples of very different difficulty, so the raw curve
        # zig-zags; the smoothed one (an exponential moving average, as TensorBoard draws) shows the trend.
        ax.plot(steps, losses, "-", color="tab:blue", alpha=0.3, label="training loss")
        if len(train) >= 5:
            ax.plot(steps, _smoothed(losses), "-", color="tab:blue", label="training loss, smoothed")
    if validation:
        ax.plot(*zip(*validation), "o-", color="tab:orange", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    handles, labels = ax.get_legend_handles_labels()
    if reward or checks:
        right = ax.twinx()
        if reward:
            right.plot(*zip(*reward), "-", color="tab:green", label="mean reward")
            right.set_ylabel("mean reward")
        for (name, points), colour in zip(checks.items(), ("tab:green", "tab:red", "tab:purple")):
            right.plot(*zip(*points), "s--", color=colour, label=f"validation {name} (epoch check)")
        if checks:
            right.set_ylabel("validation score")
            right.set_ylim(-0.02, 1.02)  # a margin: a score of 0 or 1 stays visible off the frame
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if handles:
        ax.legend(handles, labels)
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def _smoothed(values, weight: float = 0.8) -> list[float]:
    """Exponential moving average, debiased so the first points are not pulled towards zero."""
    average, out = 0.0, []
    for n, value in enumerate(values, 1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight ** n))
    return out
