"""`tutor run` re-runs only what changed: the time of each kind of re-run against a full run, in the same workspace.

    python bench/pipeline.py [--max-steps 4]

A throwaway workspace holds a copy of the physics sample bank and trains the
embedded SmolLM2-135M-Instruct for --max-steps steps (eval on 2 held-out
questions, export as peft), so a full run takes a few minutes. Measured, each
by the real command line in a child process: the full run (the baseline);
a second run right after (nothing changed); a re-run after one gold answer's
text is edited (dataset, train, eval, export); a re-run after an [export]
setting changes (export only); and `--dry-run` planning. Printed: each one's
seconds, the stages it ran, and its ratio to the full run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TUTOR = Path(sys.executable).with_name("tutor")


def tutor_run(root: Path, *extra: str) -> tuple[float, list[str]]:
    """(seconds, the stages that ran) of one `tutor run` in a child process."""
    started = time.perf_counter()
    done = subprocess.run([str(TUTOR), "--workspace", str(root), "--subject", "physics", "run", *extra], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"tutor run {' '.join(extra)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    table = done.stdout.split("\nphysics", 1)[1].splitlines()
    ran = [line.split()[0] for line in table if len(line.split()) > 1 and line.split()[1] in ("ran", "run")]
    return seconds, ran


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=4)
    args = parser.parse_args()
    from tutor.registry import get_subject

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        shutil.copytree(get_subject("physics").subject.bank, root / "physics" / "bank", ignore=shutil.ignore_patterns("*.py"))
        (root / "tutor.toml").write_text(f'[train]\nmax_steps = {args.max_steps}\n\n[eval]\nlimit = 2\nmax_new_tokens = 64\n\n'
                                         '[export]\nformats = ["peft"]\n', encoding="utf-8")
        rows = [("full run (baseline)", *tutor_run(root))]
        rows.append(("second run, nothing changed", *tutor_run(root)))
        rows.append(("--dry-run", *tutor_run(root, "--dry-run")))
        answers = root / "physics" / "bank" / "answers.jsonl"
        lines = answers.read_text(encoding="utf-8").splitlines()
        row = json.loads(lines[0])
        row["text"] += " Units are stated throughout."
        lines[0] = json.dumps(row, ensure_ascii=False)
        answers.write_text("\n".join(lines) + "\n", encoding="utf-8")
        subprocess.run([str(TUTOR), "--subject", "physics", "bank", "ids", str(answers.parent), "--write"], check=True,
                       capture_output=True)
        rows.append(("one gold answer edited", *tutor_run(root)))
        toml = root / "tutor.toml"
        toml.write_text(toml.read_text().replace('formats = ["peft"]', 'formats = ["peft", "merged"]'), encoding="utf-8")
        rows.append(("[export] formats changed", *tutor_run(root)))
    full = rows[0][1]
    print(f"{'run':30} {'seconds':>8} {'x full':>7}  stages run")
    for name, seconds, ran in rows:
        print(f"{name:30} {seconds:8.1f} {seconds / full:7.3f}  {', '.join(ran) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
