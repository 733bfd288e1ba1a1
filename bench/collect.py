"""Import throughput and memory at 10k, 30k and 100k rows, near-duplicate detection included.

    python bench/collect.py [--sizes 10000 30000 100000]

Generates a physics MCQ export per size (5% exact duplicates, 5% near
duplicates: one word changed), imports each into a fresh workspace in its own
process, and prints time and peak memory. The baseline is the same run at the
smallest size: a quadratic import would take (100k/10k)^2 = 100x as long at
100k; the printed growth ratio shows how far below that this is.
"""

import argparse
import csv
import random
import subprocess
import sys
import tempfile
from pathlib import Path

WORDS = ("force mass energy charge current field wave photon nucleus spring lens wire cell beam gas "
         "pressure volume temperature velocity momentum power resistance frequency amplitude").split()


def generate(path: Path, rows: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    made = []
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Question", "A", "B", "C", "D", "Answer"])
        for i in range(rows):
            roll = rng.random()
            if made and roll < 0.05:
                row = rng.choice(made)  # exact duplicate
            elif made and roll < 0.10:
                row = list(rng.choice(made))
                words = row[0].split()
                words[rng.randrange(len(words))] = rng.choice(WORDS)  # near duplicate
                row[0] = " ".join(words)
            else:
                topic = " ".join(rng.choice(WORDS) for _ in range(12))
                row = [f"Question {i}: a {topic} problem with {rng.randint(1, 999)} units; "
                       f"which value of the {rng.choice(WORDS)} is correct?",
                       *(f"{rng.uniform(1, 100):.2f}" for _ in range(4)), rng.choice("ABCD")]
            made.append(row)
            writer.writerow(row)


def import_once(path: Path, workspace: Path) -> tuple[float, float]:
    code = (
        "import resource, sys, time\n"
        "from tutor.cli import cli\n"
        "start = time.perf_counter()\n"
        f"try:\n    cli(['-w', {str(workspace)!r}, '--subject', 'physics', 'collect', 'import', {str(path)!r},"
        " '--column', 'stem=Question', '--column', 'key=Answer', '--default', 'type=alevel-mcq', '--default', 'topic=mechanics'])\n"
        "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "print('RESULT', time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("RESULT"))
    summary = out.splitlines()[2].split()
    print(f"  read {summary[0]}, imported {summary[1]}, duplicate {summary[2]}, near-duplicate {summary[3]}, rejected {summary[4]}")
    seconds, megabytes = map(float, line.split()[1:])
    return seconds, megabytes


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    sizes = parser.parse_args().sizes
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            path = Path(tmp) / f"bank-{size}.csv"
            generate(path, size)
            print(f"{size} rows ({path.stat().st_size / 1e6:.1f} MB):")
            results[size] = import_once(path, Path(tmp) / f"ws-{size}")
            print(f"  {results[size][0]:.1f} s, peak memory {results[size][1]:.0f} MB, {size / results[size][0]:.0f} rows/s")
    small, large = sizes[0], sizes[-1]
    growth = results[large][0] / results[small][0]
    ratio = large / small
    print(f"time grows {growth:.1f}x for {ratio:.0f}x the rows (linear: {ratio:.0f}x, quadratic: {ratio ** 2:.0f}x)")


if __name__ == "__main__":
    main()
