"""Diagram rendering throughput: the renderer against a naive baseline, in the same run.

    python bench/diagrams.py [--variants 100] [--repeat 1]

Input: every diagram of the installed subjects' sample banks, plus N variants
of them (each a copy with a distinct trailing comment: the same compile work
under a new cache key, so nothing is served from the cache).
Baseline: one plain `pdflatex` run per diagram, one after another, no
sandbox, no precompiled preamble, no PNG/SVG conversion. A second baseline
reruns pdflatex wherever a picture records its position (TikZ `remember
picture`: every chemfig picture), as latexmk would on pgf's "Rerun" warning;
the renderer reruns only where a picture reads a position (chemfig's curly
arrows), which comes out the same (see tests/test_diagrams.py).
Renderer: tutor's sandboxed renderer, a fresh cache directory each time
(preambles precompiled inside the timed run), PDF + PNG, one worker per core.
The renderer makes the SVG only when asked for it, so neither side makes one
here; the baseline makes no PNG either, so the renderer still does more.
With --repeat N, each measurement is taken N times (baselines and renderer
interleaved) and the medians are reported too.
"""

import argparse
import itertools
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tutor.bank import load_bank
from tutor.diagrams import Renderer
from tutor.registry import get_subject, registry


def jobs(variants: int):
    bank = []
    for name in sorted(registry().subjects):
        kit = get_subject(name)
        if kit.subject.bank:
            bank += [(kit.format(d.format), d.code) for d in load_bank(kit, kit.subject.bank).diagrams]
    extra = [(fmt, f"{code}\n% variant {i}") for i, (fmt, code) in zip(range(variants), itertools.cycle(bank))]
    return bank + extra


def baseline(work, rerun: bool = False) -> float:
    """One plain pdflatex per diagram; with `rerun`, a second where the picture needs one to be right."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, (fmt, code) in enumerate(work):
            tex = Path(tmp) / f"d{i}.tex"
            tex.write_text(fmt.document(code))
            for _ in range(2):
                subprocess.run(["pdflatex", "-interaction=nonstopmode", tex.name], cwd=tmp, capture_output=True, check=False)
                if not (rerun and "pgfsyspdfmark" in tex.with_suffix(".aux").read_text(errors="replace")):
                    break
    return time.perf_counter() - start


def renderer(work) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        results = Renderer(Path(tmp)).render_many([(fmt, code, False) for fmt, code in work])
        return time.perf_counter() - start, sum(r.ok for r in results)


def report(n: int, base: float, correct: float, ours: float, ok: int | None, label: str = "") -> None:
    compiled = f", {ok}/{n} compiled" if ok is not None else ""
    print(f"{label}baseline  (plain pdflatex, sequential, no png/svg): {n / base:6.2f} diagrams/s  ({base:.1f} s)")
    print(f"{label}baseline, rerun where a picture records a position (chemfig curly arrows are misplaced after one run): {n / correct:6.2f} diagrams/s  ({correct:.1f} s)")
    print(f"{label}renderer  (sandbox, fmt, pool, +png; svg only on request, so none here): {n / ours:6.2f} diagrams/s  ({ours:.1f} s{compiled})")
    print(f"{label}ratio: {base / ours:.2f}x against the plain baseline, {correct / ours:.2f}x against the rerun baseline", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1, help="Take every measurement this many times; report each and the medians.")
    args = parser.parse_args()
    work = jobs(args.variants)
    print(f"{len(work)} diagrams, {os.cpu_count()} cores")
    rounds = []
    for i in range(args.repeat):
        base = baseline(work)
        correct = baseline(work, rerun=True)
        ours, ok = renderer(work)
        rounds.append((base, correct, ours))
        report(len(work), base, correct, ours, ok, f"[{i + 1}/{args.repeat}] " if args.repeat > 1 else "")
    if args.repeat > 1:
        base, correct, ours = (statistics.median(r[k] for r in rounds) for k in range(3))
        report(len(work), base, correct, ours, None, "median: ")
        print("median ratio per round: {:.2f}x plain, {:.2f}x rerun".format(
            statistics.median(r[0] / r[2] for r in rounds), statistics.median(r[1] / r[2] for r in rounds)))


if __name__ == "__main__":
    main()
