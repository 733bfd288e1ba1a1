"""The CLI in-process, on a workspace whose base model is the tiny one: what the training and eval tests drive."""

import signal
from pathlib import Path

from click.testing import CliRunner


def invoke(*args, workspace):
    """`tutor --workspace WORKSPACE ARGS...`: (exit code, stdout and stderr)."""
    from tutor.cli import cli

    result = CliRunner().invoke(cli, ["--workspace", str(workspace), *args], catch_exceptions=False)
    return result.exit_code, result.output


def tiny_workspace(root: Path, model: Path, save_steps: int = 2) -> Path:
    """A tutor.toml that trains `model` with settings that make a run take seconds."""
    (root / "tutor.toml").write_text(f'[model]\nbase = "{model}"\n\n[train]\nmax_length = 384\nlearning_rate = 0.005\n'
                                     f"batch_size = 2\nlogging_steps = 1\nsave_steps = {save_steps}\n", encoding="utf-8")
    return root


def hears_ctrl_c() -> None:
    """A Popen preexec_fn: SIGINT back to its default in the child. A suite started in the background (nohup, `&` in a
    script) inherits SIGINT ignored, and Python then never turns it into KeyboardInterrupt: a Ctrl-C test would time out."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
