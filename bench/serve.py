"""`tutor serve` against one-at-a-time generation, on the embedded model with three subjects' adapters.

    python bench/serve.py [--clients 8] [--tokens 64] [--prompts chat|tutor] [--json]

Three LoRA adapters (physics, chemistry, economics; rank 16 on every linear
layer, the training default) with random weights: they cost what trained ones
cost, and make each subject answer differently. In one run:

  - memory: resident memory (RSS) of the base with 1 adapter loaded, then with
    all 3 (the extra adapters' share is what the issue bounds at 5%);
  - sequential: each request through `model.generate` alone, with its adapter
    (peft adapter_names), greedy, one after another: the baseline;
  - served: the same requests from N concurrent clients (the official `openai`
    client, streaming) against `tutor serve`'s app on 127.0.0.1, so they share
    the continuous batch: total tokens/s, time to first token (p50, p95) and
    per-token latency (each client's time between its first and last token over
    its tokens, p50 and p95);
  - the replies of both, compared: greedy replies must be the same.

The ratio printed is served over sequential tokens/s; absolute times depend on
the machine (`lscpu` is printed with them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = ("physics", "chemistry", "economics")
KEY = "bench-key"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def random_adapters(workspace, base: str) -> None:
    """A finished answer-role run per subject: rank-16 LoRA on every linear layer, random weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tutor import runs
    from tutor.basemodels import load_model

    model = load_model(base, dtype=torch.float32, say=lambda _: None)
    for seed, subject in enumerate(SUBJECTS):
        torch.manual_seed(seed)
        peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False))
        with torch.no_grad():
            for name, weights in peft.named_parameters():
                if "lora_B" in name:
                    weights.normal_(0, 0.02)
        run = runs.make_run(runs.adapters_dir(workspace, subject, "answer"), runs.run_name("sft"))
        peft.save_pretrained(run)
        runs.write_meta(run / runs.RUN_META, {"method": "sft"})
        runs.write_meta(run / runs.ADAPTER_META, {"subject": subject, "role": "answer", "base_model": base})
        model = peft.unload()


def requests(count: int, prompts: str = "chat") -> list[tuple[str, list[dict]]]:
    """`count` (subject, messages): bank questions of the three subjects in turn; `chat`: the question alone, as a chat client
    sends it; `tutor`: as `answer` asks it (the subject's system prompt and instructions, about 150-300 tokens)."""
    from tutor import dataset as ds
    from tutor.answers import question_text
    from tutor.bank import load_bank
    from tutor.registry import get_subject

    asked = []
    banks = {}
    for n in range(count):
        subject = SUBJECTS[n % len(SUBJECTS)]
        if subject not in banks:
            kit = get_subject(subject)
            banks[subject] = (kit, load_bank(kit, kit.subject.bank))
        kit, bank = banks[subject]
        question = bank.questions[n // len(SUBJECTS)]
        if prompts == "tutor":
            asked.append((subject, ds.tutor_messages(kit, question, kit.template_dirs())))
        else:
            asked.append((subject, [{"role": "user", "content": question_text(question)}]))
    return asked


def sequential(backend, asked, tokens: int) -> tuple[float, list[str], int]:
    """Each request alone through model.generate with its adapter: (seconds, replies, completion tokens)."""
    import torch
    from transformers import GenerationConfig
    from tutor.infer.generate import REPETITION_PENALTY, stop_ids

    stops = stop_ids(backend.model, backend.tokenizer)
    # every reply runs to `tokens` (vLLM's ignore_eos, as the served requests ask): the stop token is just a token, and
    # generate() would take the model's own EOS for a None here, so the model's is set aside for the run
    config = GenerationConfig(max_new_tokens=tokens, do_sample=False, repetition_penalty=REPETITION_PENALTY, pad_token_id=min(stops))
    own = backend.model.generation_config
    kept_eos, own.eos_token_id = own.eos_token_id, None
    replies, total = [], 0
    start = time.perf_counter()
    for subject, messages in asked:
        ids = torch.tensor([backend.prompt_tokens(messages)])
        backend.scheduler.lora.select([subject])  # the served rows' LoRA arithmetic, one adapter at a time
        with torch.no_grad():
            out = backend.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
        kept = out[0, ids.shape[1]:].tolist()
        replies.append(backend.tokenizer.decode(kept, skip_special_tokens=True))
        total += len(kept)
    own.eos_token_id = kept_eos
    return time.perf_counter() - start, replies, total


def served(backend, asked, tokens: int, clients: int) -> dict:
    """The requests from `clients` concurrent streaming clients (in a process of their own, as real clients are) against the
    app on 127.0.0.1."""
    import uvicorn
    from tutor.config import ServeConfig
    from tutor.serve.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(backend, ServeConfig(port=0, queue=max(16, clients)), [KEY]), host="127.0.0.1",
                                           port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v1"

    try:
        ask_all(url, asked[:1], tokens, 1)  # warm: the first request through the app pays for imports (and caches nothing
        # the timed ones use: the prefix cache is cleared below)
        backend.scheduler.prefixes.clear()
        child = subprocess.run([sys.executable, __file__, "--clients-of", url, "--tokens", str(tokens), "--clients", str(clients)],
                               input=json.dumps(asked), capture_output=True, text=True, check=True)
        seconds, results = json.loads(child.stdout)  # timed in the child: its start-up is not the server's
    finally:
        server.should_exit = True
        thread.join(10)
    return {"seconds": seconds, "results": results}


def ask_all(url: str, asked, tokens: int, clients: int) -> tuple[float, list[dict]]:
    """Every request at once from the official async client, streaming, at most `clients` at a time, in one thread (a light
    load generator, as vLLM's benchmark_serving is): (seconds for all, what each saw)."""
    import asyncio

    import openai

    async def ask(client, gate, item):
        subject, messages = item
        async with gate:
            sent = time.perf_counter()
            first = last = None
            pieces, usage = [], None
            stream = await client.chat.completions.create(model=subject, messages=messages, max_tokens=tokens, stream=True,
                                                          stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
            async for chunk in stream:
                if chunk.usage:
                    usage = chunk.usage
                if chunk.choices and chunk.choices[0].delta.content:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    pieces.append(chunk.choices[0].delta.content)
        n = usage.completion_tokens
        return {"text": "".join(pieces), "tokens": n, "ttft": (first or last or sent) - sent,
                "per_token": ((last - first) / (n - 1)) if first and last and n > 1 else None}

    async def everyone():
        client = openai.AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=600)
        gate = asyncio.Semaphore(clients)
        start = time.perf_counter()
        results = await asyncio.gather(*(ask(client, gate, item) for item in asked))
        return time.perf_counter() - start, list(results)

    return asyncio.run(everyone())


def phase(name: str, folder: str, *, clients: int, tokens: int, prompts: str):
    """One phase, in this (fresh) process: rss-1 / rss-3 (MB once the backend has loaded 1 or 3 adapters), sequential, served."""
    from tutor.serve.backend import Backend
    from tutor.workspace import Workspace

    subjects = list(SUBJECTS[:1] if name == "rss-1" else SUBJECTS)
    backend = Backend.load(Workspace(Path(folder)), subjects, say=lambda _: None, max_batch=clients)
    if name.startswith("rss"):
        return rss_mb()
    asked = requests(clients, prompts)
    try:
        if name == "sequential":
            sequential(backend, asked[:1], 8)  # warm
            return sequential(backend, asked, tokens)
        return served(backend, asked, tokens, clients)
    finally:
        backend.close()


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompts", choices=["chat", "tutor"], default="chat",
                        help="chat: each bank question alone (what a chat client sends); tutor: as `tutor answer` asks it, with the "
                             "subject's system prompt (prefill then weighs as much as decoding)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--clients-of", metavar="URL", help=argparse.SUPPRESS)  # the child process of the clients
    parser.add_argument("--phase", nargs=2, metavar=("PHASE", "WORKSPACE"), help=argparse.SUPPRESS)  # a child running one phase
    args = parser.parse_args()
    if args.clients_of:
        print(json.dumps(ask_all(args.clients_of, json.loads(sys.stdin.read()), args.tokens, args.clients)))
        return 0
    if args.phase:
        print(json.dumps(phase(*args.phase, clients=args.clients, tokens=args.tokens, prompts=args.prompts)))
        return 0

    import torch
    from tutor.config import ModelConfig
    from tutor.workspace import Workspace

    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    with tempfile.TemporaryDirectory() as folder:
        random_adapters(Workspace(Path(folder)), ModelConfig().base)

        # Each phase in a fresh process of its own: a process whose main thread has decoded (the sequential run) was
        # measured decoding half as fast in the server's batcher thread afterwards, and memory is the process's own.
        def run_phase(name: str):
            child = subprocess.run([sys.executable, __file__, "--phase", name, folder, "--clients", str(args.clients), "--tokens",
                                    str(args.tokens), "--prompts", args.prompts], capture_output=True, text=True)
            if child.returncode:
                sys.exit(f"the {name} phase failed:\n{child.stderr[-3000:]}")
            return json.loads(child.stdout.splitlines()[-1])

        one, three = run_phase("rss-1"), run_phase("rss-3")
        seq_seconds, seq_replies, seq_tokens = run_phase("sequential")
        live = run_phase("served")
    results = live["results"]
    live_tokens = sum(r["tokens"] for r in results)
    figures = {
        "cpu": model_name, "threads": torch.get_num_threads(), "clients": args.clients, "max_tokens": args.tokens,
        "rss_mb": {"one_adapter": round(one), "three_adapters": round(three),
                   "three_over_one": round(three / one, 4)},
        "sequential": {"seconds": round(seq_seconds, 2), "tokens": seq_tokens, "tokens_per_s": round(seq_tokens / seq_seconds, 1)},
        "served": {"seconds": round(live["seconds"], 2), "tokens": live_tokens, "tokens_per_s": round(live_tokens / live["seconds"], 1),
                   "ttft_p50_s": round(quantile([r["ttft"] for r in results], 0.5), 3),
                   "ttft_p95_s": round(quantile([r["ttft"] for r in results], 0.95), 3),
                   "per_token_p50_ms": round(1000 * quantile([r["per_token"] for r in results if r["per_token"]], 0.5), 1),
                   "per_token_p95_ms": round(1000 * quantile([r["per_token"] for r in results if r["per_token"]], 0.95), 1)},
        "identical_replies": sum(r["text"] == s for r, s in zip(results, seq_replies)),
    }
    figures["ratio"] = round(figures["served"]["tokens_per_s"] / figures["sequential"]["tokens_per_s"], 2)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    s, v, m = figures["sequential"], figures["served"], figures["rss_mb"]
    print(f"CPU: {model_name}, {figures['threads']} torch threads; {args.clients} clients x {args.tokens} new tokens, greedy, "
          f"subjects {', '.join(SUBJECTS)} in turn, {args.prompts} prompts")
    print(f"sequential generate(): {s['tokens']} tokens in {s['seconds']} s = {s['tokens_per_s']} tok/s")
    print(f"tutor serve:           {v['tokens']} tokens in {v['seconds']} s = {v['tokens_per_s']} tok/s   "
          f"ratio {figures['ratio']}x")
    print(f"time to first token p50 {v['ttft_p50_s']} s, p95 {v['ttft_p95_s']} s; per token p50 {v['per_token_p50_ms']} ms, "
          f"p95 {v['per_token_p95_ms']} ms")
    print(f"replies identical to the sequential ones: {figures['identical_replies']}/{args.clients}")
    print(f"RSS after loading: {m['one_adapter']} MB with 1 adapter, {m['three_adapters']} MB with 3 "
          f"(+{100 * (m['three_over_one'] - 1):.2f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
