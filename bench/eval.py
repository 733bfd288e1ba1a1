"""Evaluation speed: MCQ log-likelihood scoring against lm-evaluation-harness's own command line, and batched generation
against one answer at a time, each pair in the same run.

    python bench/eval.py [--questions 500] [--generate 50] [--max-new-tokens 128] [--only loglik|generate]

Log-likelihood: --questions deterministic 4-option questions with correct
answers (sums, differences and products; SI units of quantities), written as
an MMLU-layout CSV, and the same rows as an MMLU-layout JSON Lines file for
lm_eval. The model: the embedded SmolLM2-135M-Instruct in float32, batch 24 (eval's default).
  - tutor: `tutor eval`'s path: read the CSV (tutor.eval.mcqfile), load the
    model once, score every question (tutor.eval.loglik.mcq_logliks);
  - lm_eval: `lm_eval --model hf --model_args pretrained=<the embedded model's
    folder>,dtype=float32 --tasks <task> --include_path <dir> --batch_size 24
    --log_samples --output_path <dir>`, with a task that includes lm_eval's
    own MMLU template (lm_eval/tasks/mmlu/default/_default_template_yaml) and
    points it at the JSON Lines file: MMLU's prompt, read by lm_eval itself.
Each side runs in a fresh process, timed from its start to its end (imports,
model load, scoring, writing): what a user waits for. The ratio is lm_eval's
seconds over tutor's; the accuracies and the per-item log-likelihoods of the
two are compared too.

Generation: the first --generate questions of the physics sample bank, each
with the tutor's answer prompt (tutor.dataset.tutor_messages), answered by
tutor.infer.generate.generate_batch with batch_size 24 and with batch_size 1
(one at a time), --max-new-tokens each, greedy, in this process on one loaded
model after a short warm-up. The ratio is one-at-a-time's seconds over
batched's. Absolute speeds on a shared machine vary from run to run; the
ratios are the numbers to read.
"""

import argparse
import csv
import glob
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

BATCH = 24  # eval's --batch-size default
SUBJECT = "arithmetic and physical units"  # the MMLU description's subject, on both sides
TASK = "tutor_bench_mcq"
UNITS = [("force", "newton"), ("energy", "joule"), ("power", "watt"), ("pressure", "pascal"), ("electric charge", "coulomb"),
         ("electric current", "ampere"), ("potential difference", "volt"), ("electrical resistance", "ohm"), ("frequency", "hertz"),
         ("magnetic flux density", "tesla"), ("capacitance", "farad"), ("thermodynamic temperature", "kelvin"), ("mass", "kilogram"),
         ("amount of substance", "mole"), ("luminous intensity", "candela"), ("inductance", "henry"), ("magnetic flux", "weber"),
         ("activity of a radioactive source", "becquerel"), ("length", "metre"), ("time", "second")]


# --- the questions ------------------------------------------------------------------------


def make_questions(count: int, seed: int) -> list[tuple[str, list[str], int]]:
    """(question, four choices, index of the correct one): every fifth about SI units, the rest arithmetic."""
    rnd = random.Random(seed)
    return [(_unit_question if n % 5 == 4 else _arithmetic_question)(rnd) for n in range(count)]


def _arithmetic_question(rnd: random.Random) -> tuple[str, list[str], int]:
    a, b = rnd.randint(2, 99), rnd.randint(2, 99)
    symbol, value = rnd.choice([("+", a + b), ("-", a - b), ("×", a * b)])
    wrong = rnd.sample([d for d in {value + 1, value - 1, value + 2, value - 2, value + 10, value - 10} if d != value], 3)
    return _shuffled(rnd, f"What is {a} {symbol} {b}?", str(value), [str(w) for w in wrong])


def _unit_question(rnd: random.Random) -> tuple[str, list[str], int]:
    (quantity, unit), *others = rnd.sample(UNITS, 4)
    if rnd.random() < 0.5:
        return _shuffled(rnd, f"What is the SI unit of {quantity}?", unit, [u for _, u in others])
    return _shuffled(rnd, f"Which quantity is measured in {unit}s?", quantity, [q for q, _ in others])


def _shuffled(rnd: random.Random, question: str, right: str, wrong: list[str]) -> tuple[str, list[str], int]:
    choices = [right, *wrong]
    rnd.shuffle(choices)
    return question, choices, choices.index(right)


def write_data(folder: Path, count: int) -> tuple[Path, Path]:
    """The CSV tutor reads, and the task folder lm_eval reads (its JSON Lines files and the task YAML)."""
    rows, dev = make_questions(count, seed=0), make_questions(5, seed=1)
    table = folder / "questions.csv"
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "choice0", "choice1", "choice2", "choice3", "answer"])
        writer.writerows([question, *choices, answer] for question, choices, answer in rows)
    tasks = folder / "tasks"
    tasks.mkdir()
    for name, items in (("test", rows), ("dev", dev)):  # MMLU's template names a dev split for its shots, so it must exist
        (tasks / f"{name}.jsonl").write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in items))
    mmlu = Path(find_spec("lm_eval").submodule_search_locations[0]) / "tasks" / "mmlu" / "default" / "_default_template_yaml"
    description = f"The following are multiple choice questions (with answers) about {SUBJECT}.\n\n"
    (tasks / f"{TASK}.yaml").write_text(
        f"include: {mmlu}\ntask: {TASK}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {tasks / 'test.jsonl'}\n    dev: {tasks / 'dev.jsonl'}\n  cache_dir: {folder / 'cache'}\n"
        f"description: {json.dumps(description)}\n")
    return table, tasks


# --- the two log-likelihood sides, each in its own process -------------------------------------


def tutor_child(table: Path) -> None:
    """tutor's side, in this (fresh) process: print its per-item log-likelihoods and keys as JSON."""
    import torch
    from tutor.basemodels import load_model, load_tokenizer
    from tutor.eval.loglik import mcq_logliks
    from tutor.eval.mcqfile import read_mcq_file
    from tutor.registry import get_subject

    start = time.perf_counter()
    questions, problems = read_mcq_file(table, get_subject("physics"))
    if problems:
        sys.exit("\n".join(map(str, problems)))
    model, tokenizer = load_model(None, dtype=torch.float32), load_tokenizer(None)
    loaded = time.perf_counter()
    logliks = mcq_logliks(model, tokenizer, questions, subject_title=SUBJECT, batch_size=BATCH)
    print(json.dumps({"logliks": [[scores[letter] for letter in sorted(scores)] for scores in logliks],
                      "keys": ["ABCD".index(q.key) for q in questions],
                      "load_seconds": loaded - start, "score_seconds": time.perf_counter() - loaded}))


def run_tutor(table: Path) -> dict:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", str(table)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode:
        sys.exit(f"the tutor side failed:\n{out.stderr[-4000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "seconds": seconds}


def run_lm_eval(tasks: Path, output: Path) -> dict:
    from tutor.basemodels import resolve

    command = [str(Path(sys.executable).parent / "lm_eval"), "--model", "hf",
               "--model_args", f"pretrained={resolve(None).location},dtype=float32", "--device", "cpu", "--tasks", TASK,
               "--include_path", str(tasks), "--batch_size", str(BATCH), "--log_samples", "--output_path", str(output)]
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode:
        sys.exit(f"lm_eval failed:\n{out.stderr[-4000:]}")
    samples = sorted((json.loads(line) for line in open(glob.glob(f"{output}/**/samples_{TASK}_*.jsonl", recursive=True)[0])),
                     key=lambda sample: sample["doc_id"])
    results = json.loads(Path(glob.glob(f"{output}/**/results_*.json", recursive=True)[0]).read_text())
    return {"logliks": [[float(resp[0]) for resp in sample["filtered_resps"]] for sample in samples],
            "keys": [sample["doc"]["answer"] for sample in samples], "acc": results["results"][TASK]["acc,none"], "seconds": seconds}


def accuracy(side: dict) -> float:
    return sum(max(range(len(ll)), key=ll.__getitem__) == key for ll, key in zip(side["logliks"], side["keys"])) / len(side["keys"])


def loglik_bench(count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        table, tasks = write_data(Path(tmp), count)
        theirs = run_lm_eval(tasks, Path(tmp) / "lm_eval")
        ours = run_tutor(table)
    assert ours["keys"] == theirs["keys"], "the two sides read different answers"
    ours["acc"] = accuracy(ours)
    gap = max(abs(a - b) for mine, their in zip(ours["logliks"], theirs["logliks"]) for a, b in zip(mine, their))
    chosen = sum(max(range(4), key=a.__getitem__) != max(range(4), key=b.__getitem__) for a, b in zip(ours["logliks"], theirs["logliks"]))
    print(f"lm_eval --model hf (its own process):  accuracy {100 * theirs['acc']:.1f}% (its own acc; "
          f"{100 * accuracy(theirs):.1f}% from its samples), {theirs['seconds']:.1f} s")
    print(f"tutor mcq_logliks (its own process):   accuracy {100 * ours['acc']:.1f}%, {ours['seconds']:.1f} s "
          f"(of which reading the CSV and loading the model {ours['load_seconds']:.1f} s, scoring {ours['score_seconds']:.1f} s)")
    print(f"ratio: {theirs['seconds'] / ours['seconds']:.2f}x (lm_eval's seconds / tutor's); accuracies differ by "
          f"{100 * abs(ours['acc'] - theirs['acc']):.2f} points; per-item log-likelihoods differ by at most {gap:.2g}; "
          f"the chosen letter differs on {chosen} of {count}; load after {load()}", flush=True)


# --- generation ------------------------------------------------------------------------------------


def generate_bench(count: int, max_new_tokens: int) -> None:
    import torch
    from tutor.bank import load_bank
    from tutor.basemodels import load_model, load_tokenizer
    from tutor.dataset import tutor_messages
    from tutor.infer.generate import generate_batch
    from tutor.registry import get_subject

    kit = get_subject("physics")
    questions = load_bank(kit, kit.subject.bank).questions[:count]
    conversations = [tutor_messages(kit, question) for question in questions]
    model, tokenizer = load_model(None, dtype=torch.float32), load_tokenizer(None)
    generate_batch(model, tokenizer, conversations[:2], max_new_tokens=8, batch_size=2)  # warm-up: first-call costs on neither side
    timed = {}
    for batch_size in (1, BATCH):
        start = time.perf_counter()
        replies = generate_batch(model, tokenizer, conversations, max_new_tokens=max_new_tokens, batch_size=batch_size)
        timed[batch_size] = (time.perf_counter() - start, replies)
    (alone, one), (batched, many) = timed[1], timed[BATCH]
    tokens = sum(r.tokens for r in many)
    print(f"one at a time (batch_size 1):   {alone:.1f} s, {sum(r.tokens for r in one) / alone:.1f} new tokens/s")
    print(f"batched (batch_size {BATCH}):     {batched:.1f} s, {tokens / batched:.1f} new tokens/s")
    print(f"ratio: {alone / batched:.2f}x (one at a time's seconds / batched); {sum(a.text == b.text for a, b in zip(one, many))} of "
          f"{len(questions)} replies identical (float rounding in padded rows may change a greedy choice); load after {load()}")


def load() -> str:
    return open("/proc/loadavg").read().split()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=500, help="MCQs to score by log-likelihood (default: 500).")
    parser.add_argument("--generate", type=int, default=50, help="Bank questions to answer by generation (default: 50).")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="Tokens each generated answer may have (default: 128).")
    parser.add_argument("--only", choices=["loglik", "generate"], help="Run one of the two benchmarks.")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return tutor_child(args.child)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"{cpu}, {os.cpu_count()} cores, load before {load()}; SmolLM2-135M-Instruct, float32", flush=True)
    if args.only != "generate":
        print(f"\nlog-likelihood MCQ scoring: {args.questions} questions, 4 options, MMLU prompt, zero-shot, batch {BATCH}", flush=True)
        loglik_bench(args.questions)
    if args.only != "loglik":
        print(f"\ngeneration: {args.generate} physics sample-bank questions, the tutor's prompt, greedy, "
              f"at most {args.max_new_tokens} new tokens each", flush=True)
        generate_bench(args.generate, args.max_new_tokens)


if __name__ == "__main__":
    main()
