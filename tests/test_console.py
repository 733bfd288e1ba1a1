"""Progress where no bar can be drawn: `tutor run > log` must never look like a hang."""

import re
import subprocess
import sys

SCRIPT = """
import time
from tutor.console import progress
progress.HEARTBEAT = {every}
with progress(3, "evaluating") as advance:
    for _ in range(3):
        time.sleep(0.3)
        advance()
with progress(None, "scoring"):
    time.sleep(0.3)
with progress(6, "batches") as advance:  # moved as the eval moves its bar: by a batch, with a rate beside it
    for _ in range(2):
        time.sleep(0.3)
        advance(advance=3, rate="1.0 items/s")
    advance(rate="done")
"""


def run(every: float) -> list[str]:
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(every=every)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # stdout stays the command's result
    return done.stderr.splitlines()


def test_without_a_terminal_a_heartbeat_line_says_how_far_the_work_is_and_when_it_ends():
    lines = run(every=0.1)
    counted = [line for line in lines if line.startswith("evaluating: ")]
    assert any(re.fullmatch(r"evaluating: [0-2]/3 \(\d+%\), 0 s", line) for line in counted), lines  # while it works
    assert counted[-1] == "evaluating: done, 3/3 (100%), 0 s"
    assert "scoring: at work, 0 s" in lines and "scoring: done, 0 s" in lines  # no count: still a sign of life
    assert lines[-1] == "batches: done, 6/6 (100%), 0 s"  # by 3 twice; a field alone moves nothing


def test_work_shorter_than_a_heartbeat_prints_nothing():
    assert run(every=60) == []
