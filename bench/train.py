"""CPU SFT throughput: `tutor train` against a plain TRL SFTTrainer, same data, same run.

    python bench/train.py [--epochs 1] [--subject physics] [--role answer]

Data: the subject's sample-bank dataset for the role (built here into a
temporary workspace), one pass over its train split on each side, so both
see exactly the same examples. The model: the embedded SmolLM2-135M-Instruct,
LoRA r16 on every linear layer of the block, batch 4, the same learning rate.
Baseline: TRL's SFTTrainer as its documentation sets it up, with TRL's own
defaults (bf16 autocast, gradient checkpointing, its fused LM-head loss),
the loss on the completion only, no packing, every batch padded to
max_length. max_length is the longest example rounded up to a multiple of
64, so nothing is truncated on either side (printed below).
tutor: `tutor train`'s code path with its defaults for this machine.
Throughput is real (unpadded) tokens per second of training, from each
trainer's own train_runtime; each side runs in its own process so that its
peak RSS is its own. The ratio is the number to read: absolute speeds on a
shared 2-core machine vary from run to run.
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


def tutor_side(workspace: Path, subject: str, role: str, epochs: float, max_length: int) -> dict:
    from tutor import train as tr
    from tutor.registry import get_subject
    from tutor.config import TrainConfig
    from tutor.workspace import Workspace

    settings = TrainConfig(epochs=epochs, batch_size=BATCH, learning_rate=LR, max_length=max_length, lora_r=LORA["r"],
                           lora_alpha=LORA["lora_alpha"], lora_dropout=LORA["lora_dropout"], save_steps=10_000)
    result = tr.sft(get_subject(subject), Workspace(workspace), role, settings, base="smollm2-135m", say=lambda _: None)
    m = result.meta["metrics"]
    return {"tokens": m["trained_tokens"], "tokens_per_second": m["tokens_per_second"], "train_loss": m["train_loss"],
            "plan": result.meta["plan"]}


def baseline_side(workspace: Path, subject: str, role: str, epochs: float, max_length: int) -> dict:
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
    args = SFTConfig(output_dir=str(workspace / "baseline"), per_device_train_batch_size=BATCH, learning_rate=LR, num_train_epochs=epochs,
                     max_length=max_length, packing=False, pad_to_multiple_of=max_length, completion_only_loss=True, use_cpu=True,
                     report_to=[], save_strategy="no", logging_steps=1, seed=0, disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                         peft_config=LoraConfig(**LORA, target_modules="all-linear", task_type="CAUSAL_LM"))
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    output = trainer.train()
    return {"tokens": tokens * epochs, "tokens_per_second": round(tokens * epochs / output.metrics["train_runtime"], 1),
            "train_loss": round(output.training_loss, 4), "bf16": args.bf16, "gradient_checkpointing": args.gradient_checkpointing}


def child(side: str, workspace: Path, subject: str, role: str, epochs: float, max_length: int) -> None:
    result = (tutor_side if side == "tutor" else baseline_side)(workspace, subject, role, epochs, max_length)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print("RESULT " + json.dumps(result), flush=True)


def run_side(side: str, workspace: Path, args, max_length: int) -> dict:
    command = [sys.executable, __file__, "--side", side, "--workspace", str(workspace), "--subject", args.subject, "--role", args.role,
               "--epochs", str(args.epochs), "--max-length", str(max_length)]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        sys.exit(f"the {side} side failed:\n{out.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subject", default="physics")
    parser.add_argument("--role", default="answer")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--side", choices=["tutor", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--workspace", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--max-length", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args.side, args.workspace, args.subject, args.role, args.epochs, args.max_length)
        return
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp)
        build(workspace, args.subject, args.role)
        max_length = math.ceil(longest(workspace, args.subject, args.role) / 64) * 64
        print(f"{args.subject} {args.role}: one pass over the train split each, batch {BATCH}, max_length {max_length}, "
              f"{os.cpu_count()} cores, load before {open('/proc/loadavg').read().split()[0]}", flush=True)
        base = run_side("baseline", workspace, args, max_length)
        print(f"plain TRL SFTTrainer (pad to max_length, no packing, bf16={base['bf16']}, gradient checkpointing={base['gradient_checkpointing']}): "
              f"{base['tokens_per_second']} tokens/s, peak RSS {base['peak_rss_mb']} MB, train loss {base['train_loss']}", flush=True)
        ours = run_side("tutor", workspace, args, max_length)
        print(f"tutor train ({', '.join(f'{k}={v}' for k, v in ours['plan'].items())}): "
              f"{ours['tokens_per_second']} tokens/s, peak RSS {ours['peak_rss_mb']} MB, train loss {ours['train_loss']}")
        print(f"ratio: {ours['tokens_per_second'] / base['tokens_per_second']:.2f}x the baseline's tokens/s "
              f"({base['tokens']:.0f} vs {ours['tokens']:.0f} real tokens); load after {open('/proc/loadavg').read().split()[0]}")


if __name__ == "__main__":
    main()
