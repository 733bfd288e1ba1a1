"""`tutor serve` against one-at-a-time generation, on the embedded model with three subjects' adapters.

    python bench/serve.py [--clients 8] [--tokens 64] [--json]

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
from concurrent.futures import ThreadPoolExecutor
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


def requests(count: int) -> list[tuple[str, list[dict]]]:
    """`count` (subject, messages): bank questions of the three subjects in turn, as `answer` asks them."""
    from tutor import dataset as ds
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
        asked.append((subject, ds.tutor_messages(kit, question, kit.template_dirs())))
    return asked


def sequential(backend, asked, tokens: int) -> tuple[float, list[str], int]:
    """Each request alone through model.generate with its adapter: (seconds, replies, completion tokens)."""
    import torch
    from tutor.infer.generate import REPETITION_PENALTY, stop_ids, until_stop

    stops = stop_ids(backend.model, backend.tokenizer)
    replies, total = [], 0
    start = time.perf_counter()
    for subject, messages in asked:
        ids = torch.tensor([backend.prompt_tokens(messages)])
        with torch.no_grad():
            out = backend.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, do_sample=False,
                                         repetition_penalty=REPETITION_PENALTY, eos_token_id=sorted(stops), pad_token_id=min(stops),
                                         adapter_names=[subject], temperature=None, top_p=None, top_k=None)
        kept, _ = until_stop(out[0, ids.shape[1]:].tolist(), stops)
        replies.append(backend.tokenizer.decode(kept, skip_special_tokens=True))
        total += len(kept)
    return time.perf_counter() - start, replies, total


def served(backend, asked, tokens: int, clients: int) -> dict:
    """The requests from `clients` concurrent streaming clients against the app on 127.0.0.1."""
    import openai
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

    def ask(item):
        subject, messages = item
        client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=600)
        sent = time.perf_counter()
        first = last = None
        pieces, usage = [], None
        for chunk in client.chat.completions.create(model=subject, messages=messages, max_tokens=tokens, stream=True,
                                                    stream_options={"include_usage": True}):
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

    try:
        ask(asked[0])  # warm: the first request through the app pays for imports
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(ask, asked))
        seconds = time.perf_counter() - start
    finally:
        server.should_exit = True
        thread.join(10)
    return {"seconds": seconds, "results": results}


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch
    from tutor.config import ModelConfig
    from tutor.serve.backend import Backend, _with_adapter, find_adapters
    from tutor.workspace import Workspace

    torch.set_num_threads(torch.get_num_threads())
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    with tempfile.TemporaryDirectory() as folder:
        workspace = Workspace(Path(folder))
        base = ModelConfig().base
        random_adapters(workspace, base)
        import gc

        gc.collect()
        before = rss_mb()
        backend = Backend.load(workspace, ["physics"], say=lambda _: None, max_batch=args.clients)
        gc.collect()
        one = rss_mb()
        _, more, _ = find_adapters(workspace, ["chemistry", "economics"])
        for extra in more:
            backend.model = _with_adapter(backend.model, extra)
            backend.models[extra.id] = extra
        backend.scheduler.model = backend.model
        gc.collect()
        three = rss_mb()

        asked = requests(args.clients)
        sequential(backend, asked[:1], 8)  # warm
        seq_seconds, seq_replies, seq_tokens = sequential(backend, asked, args.tokens)
        live = served(backend, asked, args.tokens, args.clients)
        backend.close()
    results = live["results"]
    live_tokens = sum(r["tokens"] for r in results)
    figures = {
        "cpu": model_name, "threads": torch.get_num_threads(), "clients": args.clients, "max_tokens": args.tokens,
        "rss_mb": {"before_model": round(before), "one_adapter": round(one), "three_adapters": round(three),
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
          f"subjects {', '.join(SUBJECTS)} in turn")
    print(f"sequential generate(): {s['tokens']} tokens in {s['seconds']} s = {s['tokens_per_s']} tok/s")
    print(f"tutor serve:           {v['tokens']} tokens in {v['seconds']} s = {v['tokens_per_s']} tok/s   "
          f"ratio {figures['ratio']}x")
    print(f"time to first token p50 {v['ttft_p50_s']} s, p95 {v['ttft_p95_s']} s; per token p50 {v['per_token_p50_ms']} ms, "
          f"p95 {v['per_token_p95_ms']} ms")
    print(f"replies identical to the sequential ones: {figures['identical_replies']}/{args.clients}")
    print(f"RSS: {m['before_model']} MB before the model, {m['one_adapter']} MB with 1 adapter, {m['three_adapters']} MB with 3 "
          f"(+{100 * (m['three_over_one'] - 1):.2f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
