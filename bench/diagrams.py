"""Diagram rendering throughput: the renderer against a naive baseline, in the same run.

    python bench/diagrams.py [--variants 100]

Input: every diagram of the installed subjects' sample banks, plus N variants
of them (each a copy with a distinct trailing comment: the same compile work
under a new cache key, so nothing is served from the cache).
Baseline: one plain `pdflatex` run per diagram, one after another, no
sandbox, no precompiled preamble, no PNG/SVG conversion. A second baseline
reruns pdflatex where a picture needs it (TikZ `remember picture`: chemfig's
curly arrows), as the renderer does, so that both produce correct pictures.
Renderer: tutor's sandboxed renderer, cold cache (preambles precompiled inside
the timed run), PDF + PNG + SVG, two workers per core.
"""

import argparse
import itertools
import os
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


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variants", type=int, default=100)
    work = jobs(parser.parse_args().variants)
    print(f"{len(work)} diagrams, {os.cpu_count()} cores")
    base = baseline(work)
    correct = baseline(work, rerun=True)
    ours, ok = renderer(work)
    print(f"baseline  (plain pdflatex, sequential): {len(work) / base:6.2f} diagrams/s  ({base:.1f} s)")
    print(f"baseline, rerun where needed (chemfig curly arrows are misplaced after one run): {len(work) / correct:6.2f} diagrams/s  ({correct:.1f} s)")
    print(f"renderer  (sandbox, fmt, pool, +png/svg): {len(work) / ours:6.2f} diagrams/s  ({ours:.1f} s, {ok}/{len(work)} compiled)")
    print(f"ratio: {base / ours:.2f}x against the plain baseline, {correct / ours:.2f}x against the rerun baseline")


if __name__ == "__main__":
    main()
