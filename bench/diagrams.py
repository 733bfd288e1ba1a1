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
Each measurement also shows how many cores other processes kept busy meanwhile
(from /proc/stat, less this process and its children; not for the renderer
under bubblewrap, whose compiles are not counted as its children): a busy neighbour takes
a core from the renderer's pool of two but hardly slows the one-core baseline,
so a round with load elsewhere understates the ratio and should be rerun.
"""

import argparse
import itertools
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tutor.bank import load_bank
from tutor.diagrams import Renderer, sandbox_problem
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


def cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds the whole machine has been busy, those of this process and its children); None off Linux."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return None
    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait; steal counts (a busy host)
    own = sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))
    return busy / os.sysconf("SC_CLK_TCK"), own


def measured(run):
    """run()'s result, and the cores other processes kept busy while it ran (None where unknown)."""
    before, start = cpu_seconds(), time.perf_counter()
    result = run()
    after, wall = cpu_seconds(), time.perf_counter() - start
    if before is None or after is None:
        return result, None
    return result, max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / wall


def report(n: int, base: float, correct: float, ours: float, ok: int | None, label: str = "", elsewhere=(None, None, None)) -> None:
    compiled = f", {ok}/{n} compiled" if ok is not None else ""
    other = [f", other processes {e:.2f} cores" if e is not None else "" for e in elsewhere]
    print(f"{label}baseline  (plain pdflatex, sequential, no png/svg): {n / base:6.2f} diagrams/s  ({base:.1f} s{other[0]})")
    print(f"{label}baseline, rerun where a picture records a position (chemfig curly arrows are misplaced after one run): "
          f"{n / correct:6.2f} diagrams/s  ({correct:.1f} s{other[1]})")
    print(f"{label}renderer  (sandbox, fmt, pool, +png; svg only on request, so none here): "
          f"{n / ours:6.2f} diagrams/s  ({ours:.1f} s{compiled}{other[2]})")
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
        base, base_elsewhere = measured(lambda: baseline(work))
        correct, correct_elsewhere = measured(lambda: baseline(work, rerun=True))
        (ours, ok), ours_elsewhere = measured(lambda: renderer(work))
        if sandbox_problem() is None:
            # bubblewrap reaps TeX inside its own PID namespace, so their CPU time never reaches our
            # RUSAGE_CHILDREN and would read as other processes' load: unknown, not a wrong number.
            ours_elsewhere = None
        rounds.append((base, correct, ours))
        report(len(work), base, correct, ours, ok, f"[{i + 1}/{args.repeat}] " if args.repeat > 1 else "",
               (base_elsewhere, correct_elsewhere, ours_elsewhere))
    if args.repeat > 1:
        base, correct, ours = (statistics.median(r[k] for r in rounds) for k in range(3))
        report(len(work), base, correct, ours, None, "median: ")
        print("median ratio per round: {:.2f}x plain, {:.2f}x rerun".format(
            statistics.median(r[0] / r[2] for r in rounds), statistics.median(r[1] / r[2] for r in rounds)))


if __name__ == "__main__":
    main()
