"""CPU SFT throughput: `tutor train` against a plain TRL SFTTrainer, the same optimizer steps on the same data, in the same run.

    python bench/train.py [--steps 6] [--subject physics] [--role answer]
    python bench/train.py --plans [padded|checkpointing|packing] [--precision fp32]   # tutor's plan choices

Data: the subject's sample-bank dataset for the role (built here into a
temporary workspace). Both sides take the same number of optimizer steps
(--steps) of batch 4 from its train split, in the same seeded order, so
they train on the same examples: a bound in steps, not in passes, so the
bench ends in minutes on any CPU (a whole pass of the baseline did not end
in 39 minutes on a CPU without bf16 in hardware). The model: the embedded
SmolLM2-135M-Instruct, LoRA r16 on every linear layer of the block, the same
learning rate.
Baseline: TRL's SFTTrainer as its documentation sets it up, with TRL's own
defaults (bf16 autocast, gradient checkpointing, its fused LM-head loss),
the loss on the completion only, no packing, every batch padded to
max_length. max_length is the longest example rounded up to a multiple of
64, so nothing is truncated on either side (printed below).
tutor: `tutor train`'s code path with its defaults for this machine.
Throughput is real (unpadded) tokens per second of training: each trainer's
own count of the tokens it fed (TRL's num_tokens, the Trainer's
num_input_tokens_seen) over its own train_runtime. Each side runs in its own
process so that its peak RSS is its own. The ratio is the number to read:
absolute speeds on a shared 2-core machine vary from run to run.

--plans runs only the tutor side, once per plan choice (the default, then
padded micro-batches of 4, gradient checkpointing, packing), for the same steps;
with --precision fp32 it shows what a CPU without bf16 in hardware gets.
"""

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05}
BATCH = 4
LR = 2e-4
# The plan choices --plans compares with tutor's default: each a TrainConfig override.
PLANS = {"default": {}, "padded": {"micro_batch": 4}, "checkpointing": {"gradient_checkpointing": True}, "packing": {"packing": True}}


def build(workspace: Path, subject: str, role: str) -> None:
    from click.testing import CliRunner
    from tutor.cli import cli

    result = CliRunner().invoke(cli, ["--workspace", str(workspace), "--subject", subject, "dataset", "build", "--role", role],
                                catch_exceptions=False)
    if result.exit_code:
        sys.exit(result.output)


def longest(workspace: Path, subject: str, role: str) -> int:
    meta = json.loads((workspace / subject / "datasets" / role / "tutor-dataset.json").read_text())
    return max(split["max"] for split in meta["tokens"].values())


def tutor_side(workspace: Path, subject: str, role: str, steps: int, max_length: int, overrides: dict) -> dict:
    from tutor import train as tr
    from tutor.config import TrainConfig
    from tutor.registry import get_subject
    from tutor.workspace import Workspace

    settings = TrainConfig(max_steps=steps, batch_size=BATCH, learning_rate=LR, max_length=max_length, lora_r=LORA["r"],
                           lora_alpha=LORA["lora_alpha"], lora_dropout=LORA["lora_dropout"], save_steps=10_000, **overrides)
    result = tr.sft(get_subject(subject), Workspace(workspace), role, settings, base="smollm2-135m", say=lambda _: None)
    m = result.meta["metrics"]
    return {"tokens": m["trained_tokens"], "seconds": m["training_seconds"], "steps": m["steps"], "train_loss": m["train_loss"],
            "plan": result.meta["plan"]}


def baseline_side(workspace: Path, subject: str, role: str, steps: int, max_length: int, overrides: dict) -> dict:
    from datasets import load_from_disk
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer
    from tutor.basemodels import resolve

    path = resolve("smollm2-135m").location
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    train = load_from_disk(str(workspace / subject / "datasets" / role))["train"]
    train = train.map(lambda r: {"prompt": r["messages"][:-1], "completion": r["messages"][-1:]}, remove_columns=train.column_names)
    args = SFTConfig(output_dir=str(workspace / "baseline"), per_device_train_batch_size=BATCH, learning_rate=LR, max_steps=steps,
                     max_length=max_length, packing=False, pad_to_multiple_of=max_length, completion_only_loss=True, use_cpu=True,
                     report_to=[], save_strategy="no", logging_steps=1, seed=0, disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                         peft_config=LoraConfig(**LORA, target_modules="all-linear", task_type="CAUSAL_LM"))
    output = trainer.train()
    tokens = max(row.get("num_tokens", 0) for row in trainer.state.log_history)  # TRL counts the attention mask: real tokens
    return {"tokens": tokens, "seconds": output.metrics["train_runtime"], "steps": trainer.state.global_step,
            "train_loss": round(output.training_loss, 4), "bf16": args.bf16, "gradient_checkpointing": args.gradient_checkpointing}


def child(args) -> None:
    side = tutor_side if args.side == "tutor" else baseline_side
    result = side(args.workspace, args.subject, args.role, args.steps, args.max_length, json.loads(args.overrides))
    result["tokens_per_second"] = round(result["tokens"] / result["seconds"], 1)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print("RESULT " + json.dumps(result), flush=True)


def run_side(side: str, workspace: Path, args, max_length: int, overrides: dict | None = None) -> dict:
    command = [sys.executable, __file__, "--side", side, "--workspace", str(workspace), "--subject", args.subject, "--role", args.role,
               "--steps", str(args.steps), "--max-length", str(max_length), "--overrides", json.dumps(overrides or {})]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        sys.exit(f"the {side} side failed:\n{out.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def load() -> str:
    return open("/proc/loadavg").read().split()[0]


def per_step(result: dict) -> str:
    return f"{result['seconds'] / result['steps']:.1f} s/step"


def compare(workspace: Path, args, max_length: int) -> None:
    base = run_side("baseline", workspace, args, max_length)
    print(f"plain TRL SFTTrainer (pad to max_length, no packing, bf16={base['bf16']}, "
          f"gradient checkpointing={base['gradient_checkpointing']}): "
          f"{base['tokens_per_second']} tokens/s ({per_step(base)}), peak RSS {base['peak_rss_mb']} MB, train loss {base['train_loss']}",
          flush=True)
    ours = run_side("tutor", workspace, args, max_length)
    print(f"tutor train ({', '.join(f'{k}={v}' for k, v in ours['plan'].items())}): "
          f"{ours['tokens_per_second']} tokens/s ({per_step(ours)}), peak RSS {ours['peak_rss_mb']} MB, train loss {ours['train_loss']}")
    print(f"ratio: {ours['tokens_per_second'] / base['tokens_per_second']:.2f}x the baseline's tokens/s, {args.steps} steps each "
          f"({base['tokens']:.0f} vs {ours['tokens']:.0f} real tokens); load after {load()}")


def plans(workspace: Path, args, max_length: int) -> None:
    results = {}
    for name in PLANS if args.plans == "all" else dict.fromkeys(["default", args.plans]):
        results[name] = run_side("tutor", workspace, args, max_length, {"precision": args.precision, **PLANS[name]})
        r = results[name]
        print(f"{name:14} {r['tokens_per_second']:8.1f} tokens/s  {per_step(r):>12}  peak RSS {r['peak_rss_mb']:7.1f} MB  "
              f"{r['tokens']} tokens  {r['tokens_per_second'] / results['default']['tokens_per_second']:.2f}x the default", flush=True)
    print(f"plan chosen by default: {results['default']['plan']}; load after {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subject", default="physics")
    parser.add_argument("--role", default="answer")
    parser.add_argument("--steps", type=int, default=6, help="Optimizer steps of batch 4 on each side (default: 6).")
    parser.add_argument("--plans", nargs="?", const="all", choices=["all", *PLANS], metavar="NAME",
                        help=f"Compare tutor's plan choices instead of tutor with plain TRL: all, or one of {', '.join(PLANS)} "
                             f"(against the default).")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto", help="For --plans: the precision every plan uses.")
    parser.add_argument("--side", choices=["tutor", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--workspace", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--max-length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp)
        build(workspace, args.subject, args.role)
        max_length = math.ceil(longest(workspace, args.subject, args.role) / 64) * 64
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
        print(f"{args.subject} {args.role}: {args.steps} optimizer steps of batch {BATCH} each, max_length {max_length}, "
              f"{cpu}, {os.cpu_count()} cores, load before {load()}", flush=True)
        (plans if args.plans else compare)(workspace, args, max_length)


if __name__ == "__main__":
    main()
