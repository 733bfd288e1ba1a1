"""`tutor eval --engine vllm`: generation through a vLLM server, each adapter a LoRA module of its base model.

On a CUDA machine with vLLM installed (`pip install vllm`, in tutor's environment or
any other on PATH), `tutor --subject S eval --engine vllm --models base,latest`
answers the questions through vLLM instead of transformers: one `vllm serve` for
the base model with every compared adapter of that base loaded as a LoRA module
(adapters of different bases need a server each), every prompt sent as a chat
request, and the server stopped when the run ends. Scoring is unchanged: the
replies are the Reply records the transformers engine returns, generated with
its settings (greedy, repetition penalty 1.1), so the two engines' numbers
compare, up to the float rounding of different kernels.

    adapters = {"20250102-030405.678-sft": run_folder}          # label -> adapter folder
    port = free_port()
    command = serve_command(resolve(base).location, adapters, port=port, max_model_len=4096)
    with VllmServer(command, port=port, log=eval_folder / "vllm.log") as base_url:
        tuned = generate_vllm(base_url, "20250102-030405.678-sft", conversations, max_new_tokens=384)
        base = generate_vllm(base_url, BASE, conversations, max_new_tokens=384)

A server in its own process rather than vLLM's Python API: vLLM (with its own
torch and CUDA pins) stays out of tutor's process and environment, and the GPU
memory it reserves is freed when the process group is stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import TutorError
from ..infer.generate import REPETITION_PENALTY, Reply

BASE = "base"  # the name the base model is served under: the base model's label in an eval run
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM's --max-lora-rank accepts (vllm/config/lora.py)
REQUEST_TIMEOUT = 600.0  # seconds one reply may take: queued behind a full batch of long ones on a busy GPU


def lora_rank(adapters: Iterable[Path]) -> int:
    """The smallest --max-lora-rank vLLM accepts that holds every adapter's rank (adapter_config.json's "r")."""
    needed = max((_rank(folder) for folder in adapters), default=1)
    fitting = [rank for rank in VLLM_LORA_RANKS if rank >= needed]
    if not fitting:
        raise TutorError(f"LoRA rank {needed} is above the {VLLM_LORA_RANKS[-1]} vLLM serves; evaluate with the transformers engine")
    return fitting[0]


def _rank(folder: Path) -> int:
    config = Path(folder) / "adapter_config.json"
    if not config.is_file():
        raise TutorError(f"{folder}: not a LoRA adapter (no adapter_config.json)")
    return int(json.loads(config.read_text(encoding="utf-8"))["r"])


def serve_command(base: str, adapters: dict[str, Path], *, port: int, max_lora_rank: int | None = None,
                  max_model_len: int | None = None) -> list[str]:
    """`vllm serve` for the base model (a hub id or a folder) with each adapter as a LoRA module named by its label.

    The base model answers to the name BASE. `max_lora_rank` defaults to the adapters' own (lora_rank).
    `--generation-config vllm`: the model's generation_config.json is not read, so its sampling defaults
    (a temperature, a top_k) cannot mix into the greedy requests. Each LoRA module is given in vLLM's JSON
    form, which holds any path (the `name=path` form breaks on a path with '=' or ',').
    """
    if BASE in adapters:
        raise TutorError(f"an adapter cannot be named {BASE!r}: that name is the base model's")
    rank = max_lora_rank or lora_rank(adapters.values())
    if rank not in VLLM_LORA_RANKS:
        raise TutorError(f"max_lora_rank {rank}: vLLM accepts {', '.join(map(str, VLLM_LORA_RANKS))}")
    command = ["vllm", "serve", base, "--host", "127.0.0.1", "--port", str(port), "--served-model-name", BASE,
               "--generation-config", "vllm"]
    if max_model_len is not None:
        command += ["--max-model-len", str(max_model_len)]
    if adapters:
        modules = [json.dumps({"name": name, "path": str(folder), "base_model_name": BASE}) for name, folder in adapters.items()]
        # max-loras: every adapter may sit in one batch, so the models' requests never wait for each other's slot.
        command += ["--enable-lora", "--max-loras", str(len(adapters)), "--max-lora-rank", str(rank), "--lora-modules", *modules]
    return command


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class VllmServer:
    """`with VllmServer(command, port=port, log=path) as base_url:` the server started, ready, and stopped on exit.

    The command runs in its own process group (vLLM starts engine processes of its own), writing to `log`;
    ready means GET /health answers 200. A server that exits first, or is not ready within `timeout`
    seconds (loading a model and compiling kernels takes minutes), is one line naming the log.
    """

    def __init__(self, command: list[str], *, port: int, log: Path, timeout: float = 900.0):
        self.command, self.port, self.log, self.timeout = command, port, Path(log), timeout
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> str:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            try:
                self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                                start_new_session=True)
            except FileNotFoundError:
                raise TutorError(f"{self.command[0]}: command not found; --engine vllm needs vLLM on a CUDA machine "
                                 f"(pip install vllm)") from None
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return f"http://127.0.0.1:{self.port}/v1"

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self._healthy():
            code = self.process.poll()
            if code is not None:
                raise TutorError(f"the vLLM server exited with code {code} before it was ready: see {self.log}")
            if time.monotonic() > deadline:
                raise TutorError(f"the vLLM server was not ready after {self.timeout:g} s: see {self.log}")
            time.sleep(0.5)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as response:
                return response.status == 200
        except OSError:  # not listening yet (URLError), or an error status while it loads (HTTPError)
            return False

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM to the whole group, SIGKILL to whatever is left after `grace` seconds (an engine process may outlive its parent)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def generate_vllm(base_url: str, model: str, conversations: list[list[dict]], *, max_new_tokens: int, concurrency: int = 32,
                  advance: Callable[[int], None] | None = None) -> list[Reply]:
    """Greedy replies of `model` (BASE or an adapter's name) to every conversation, in their order; `advance(1)` per reply.

    `concurrency` requests are in flight at once: vLLM batches them on the GPU as they arrive.
    No retries: a local engine's errors (an unknown model name, a prompt over max_model_len) are not
    transient, so the first one stops the run, naming the request.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    import openai

    client = openai.OpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, timeout=REQUEST_TIMEOUT)

    def ask(messages: list[dict]) -> Reply:
        response = client.chat.completions.create(model=model, messages=messages, temperature=0, seed=0, max_tokens=max_new_tokens,
                                                  extra_body={"repetition_penalty": REPETITION_PENALTY})
        choice = response.choices[0]
        return Reply((choice.message.content or "").strip(), cut=choice.finish_reason == "length",
                     tokens=response.usage.completion_tokens if response.usage else 0)

    replies: list[Reply | None] = [None] * len(conversations)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        pending = {pool.submit(ask, messages): n for n, messages in enumerate(conversations)}
        try:
            for done in as_completed(pending):
                replies[pending[done]] = done.result()
                if advance:
                    advance(1)
        except openai.APITimeoutError:
            raise TutorError(f"vLLM at {base_url} did not answer conversation {pending[done]} for {model!r} "
                             f"within {REQUEST_TIMEOUT:g} s") from None
        except openai.APIConnectionError:
            raise TutorError(f"no vLLM server answers at {base_url}") from None
        except openai.APIError as err:
            message = " ".join(str(err).split())  # one line, whatever the body held
            raise TutorError(f"vLLM at {base_url} failed on conversation {pending[done]} for {model!r}: {message}") from None
        finally:
            for future in pending:
                future.cancel()
    return replies  # type: ignore[return-value]
