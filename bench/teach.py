"""Teacher throughput: 1,000 gold answers at concurrency 32 against a sequential baseline, in the same run.

    python bench/teach.py [--count 1000] [--baseline 20] [--concurrency 32] [--latency 1]

The teacher is tests/openai_server.py in its own process, every reply delayed
by --latency seconds (a slow model: the time is the server's, as with a real
API). Each run is `tutor teach answers`'s own code path (prompts rendered,
replies streamed through the openai client, validated, logged with fsync,
appended to the bank) in a fresh process and a fresh workspace, so nothing is
replayed from a response log.

Baseline: concurrency 1. One request a second would take 17 minutes for
1,000, so it runs on --baseline questions; its rate does not depend on the
count. Ideal at concurrency C: C / latency answers a second. Memory: the
concurrent run's resident set at several counts within the run, and its peak.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_workspace(root: Path, count: int) -> Path:
    """`count` physics MCQs: the sample bank's, each varied by a numbered sentence (new ids, same prompt size)."""
    from tutor.jsonl import write_jsonl
    from tutor.models import Question
    from tutor.registry import get_subject

    sample = [json.loads(line) for line in (Path(get_subject("physics").subject.bank) / "questions.jsonl").read_text().splitlines()]
    mcqs = [q for q in sample if q["type"] == "alevel-mcq"]
    questions = []
    for i in range(count):
        data = {k: v for k, v in mcqs[i % len(mcqs)].items() if k != "id"}
        data["stem"] = f"{data['stem']} (Variant {i}.)"
        questions.append(Question.model_validate(data))
    write_jsonl(root / "physics" / "bank" / "questions.jsonl", questions)
    return root


def child(workspace: Path, concurrency: int, checkpoints: list[int]) -> None:
    """One run in this process: print what it did as JSON."""
    from tutor import teach as t
    from tutor.llm_client import api_key
    from tutor.registry import get_subject
    from tutor.workspace import Workspace

    ws = Workspace(workspace)
    cfg = t.teacher_config(ws).model_copy(update={"concurrency": concurrency})
    rss: dict[int, float] = {}

    def progress(p) -> None:
        if p.done in checkpoints and p.done not in rss:
            rss[p.done] = resident_mb()

    run = t.AnswerRun()
    start = time.perf_counter()
    t.run_sync(lambda: t.teach_answers(get_subject("physics"), ws, cfg, api_key(cfg), run, progress=progress), run)
    seconds = time.perf_counter() - start
    print(json.dumps({"answered": run.answered, "rejected": run.rejected, "failed": run.failed, "requests": run.usage.requests,
                      "errors": dict(run.usage.errors),
                      "seconds": seconds, "rss_mb": rss, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(workspace: Path, base_url: str, concurrency: int, checkpoints: list[int]) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUTOR_")} | {
        "TUTOR_TEACHER_PRESET": "local", "TUTOR_TEACHER_MODEL": "bench-teacher", "TUTOR_TEACHER_BASE_URL": base_url}
    command = [sys.executable, __file__, "--child", str(workspace), "--concurrency", str(concurrency),
               "--checkpoints", *map(str, checkpoints)]
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"run failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--baseline", type=int, default=20, help="Questions for the sequential baseline.")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=1.0, help="Seconds the server takes per reply.")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoints", type=int, nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.concurrency, args.checkpoints)

    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "openai_server.py"), "--latency", str(args.latency)],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline().split()[1])
        base_url = f"http://127.0.0.1:{port}/v1"
        with tempfile.TemporaryDirectory() as tmp:
            sequential = run(make_workspace(Path(tmp) / "sequential", args.baseline), base_url, 1, [])
            checkpoints = sorted({n for n in (100, 250, 500, args.count) if n <= args.count})
            concurrent = run(make_workspace(Path(tmp) / "concurrent", args.count), base_url, args.concurrency, checkpoints)
    finally:
        server.terminate()
        server.wait()

    ideal = args.concurrency / args.latency
    rows = [("sequential (1)", sequential, args.baseline), (f"concurrent ({args.concurrency})", concurrent, args.count)]
    print(f"teacher latency {args.latency:g} s per reply; ideal at concurrency {args.concurrency}: {ideal:g} answers/s\n")
    print(f"{'run':<18}{'questions':>10}{'answered':>10}{'requests':>10}{'seconds':>10}{'answers/s':>11}")
    for name, result, count in rows:
        result["rate"] = result["answered"] / result["seconds"]
        print(f"{name:<18}{count:>10}{result['answered']:>10}{result['requests']:>10}{result['seconds']:>10.1f}{result['rate']:>11.2f}")
    if concurrent["errors"] or sequential["errors"]:
        print(f"retried errors: {concurrent['errors'] or sequential['errors']}")
    print(f"\nspeed-up over sequential: {concurrent['rate'] / sequential['rate']:.1f}x")
    print(f"fraction of the ideal {ideal:g}/s: {concurrent['rate'] / ideal:.2f} (target: at least 0.8)")
    marks = "  ".join(f"{n}: {mb:.0f} MB" for n, mb in sorted(concurrent["rss_mb"].items(), key=lambda kv: int(kv[0])))
    print(f"resident memory during the concurrent run, at answers done: {marks}; peak {concurrent['peak_mb']:.0f} MB")
    if concurrent["answered"] != args.count or sequential["answered"] != args.baseline:
        sys.exit("not every question was answered")


if __name__ == "__main__":
    main()
