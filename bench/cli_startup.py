"""How long `tutor --help` takes, against a bare Python start-up measured in the same run.

    python bench/cli_startup.py [--runs 20]

Prints the median wall time of each and the ratio. `--help` loads every
installed plugin (to list their commands) but must never import torch.
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def median_seconds(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    tutor = shutil.which("tutor") or sys.exit("tutor is not on PATH: activate the venv first")
    baseline = median_seconds([sys.executable, "-c", "pass"], runs)
    rows = [("python -c pass (baseline)", baseline)]
    for args in (["--version"], ["--help"], ["subjects"]):
        rows.append((f"tutor {' '.join(args)}", median_seconds([tutor, *args], runs)))
    for name, seconds in rows:
        print(f"{name:28s} {seconds * 1000:7.1f} ms   {seconds / baseline:5.1f}x baseline")


if __name__ == "__main__":
    main()
