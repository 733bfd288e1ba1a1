"""`tutor serve --engine vllm`: the same server, with vLLM decoding behind it.

Instead of decoding in tutor's process, `VllmBackend.load` starts vLLM's own
OpenAI server (`vllm serve <base> --enable-lora --lora-modules ...`, built by
eval/vllm.py's serve_command) for the base model, with each subject's newest
adapters as LoRA modules, on a free port of 127.0.0.1; tutor's HTTP app stays in
front of it (API keys, limits, the tutor endpoints, the web page) and sends each
generation on to it as a streamed chat request. Only the base's tokenizer is
loaded here, to count prompts against the limits.

`VllmBackend` has the interface of backend.Backend (`base`, `models`,
`refused`, `tokenizer`, `prompt_tokens`, `generate`, `close`), so the app and
the tutor modes use either one unchanged. What differs:

- `generate` needs the request's `messages` (vLLM applies the chat template
  itself); the prompt's token ids are only counted.
- Every model id is a LoRA module of the one vLLM server, named as tutor names
  it (`physics`, `physics:diagram`: vLLM matches the request's model to a
  module's name exactly, and the JSON form of --lora-modules holds any name).
  The base model answers upstream to eval/vllm.py's BASE ("base"), so an
  adapter with that id (a subject called "base") is served as "base:answer".
- A client that goes away closes the upstream stream at the next chunk, and
  vLLM aborts the request. A request vLLM has not started yet (queued behind a
  full GPU) sends no chunk, so it is closed once it starts.
- The server is a process group of its own (vLLM starts engine processes), its
  output in `<workspace>/serve/vllm.log`; `close()` stops it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TutorError
from ..eval.vllm import BASE, REQUEST_TIMEOUT, VLLM_LORA_RANKS, VllmServer, free_port, serve_command
from ..infer.generate import REPETITION_PENALTY
from ..workspace import Workspace
from .backend import Output, Served, find_adapters

LOG = Path("serve") / "vllm.log"  # under the workspace


def _rank(folder: Path) -> int:
    """The adapter's LoRA rank, from adapter_config.json; an error if it is missing, unreadable or above what vLLM serves."""
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    rank = config["r"] if isinstance(config, dict) else None
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f'"r" is {rank!r}, not a LoRA rank')
    if rank > VLLM_LORA_RANKS[-1]:
        raise ValueError(f"LoRA rank {rank} is above the {VLLM_LORA_RANKS[-1]} vLLM serves")
    return rank


def module_name(served_id: str) -> str:
    """The name vLLM serves an adapter under: its tutor id, unless that is the base's upstream name."""
    return f"{served_id}:answer" if served_id == BASE else served_id


@dataclass
class VllmBackend:
    """A running vLLM server with the subjects' adapters; `generate` streams one request through it (many may run at once)."""

    base: str
    tokenizer: object
    models: dict[str, Served]
    upstream: dict[str, str]  # model id -> the model name vLLM serves it under
    base_url: str  # http://127.0.0.1:<port>/v1
    refused: list[str] = field(default_factory=list)  # one line per adapter left out at start
    command: list[str] = field(default_factory=list)  # the vllm command line it was started with
    server: VllmServer | None = None
    timeout: float = REQUEST_TIMEOUT  # seconds the upstream may stay silent within one request
    client: object = field(default=None, repr=False)
    workspace: Workspace | None = None  # the tutor endpoints' bank, templates and diagram cache
    counts: dict = field(default_factory=dict)  # model id -> requests and tokens, for /metrics

    def __post_init__(self):
        if self.client is None:
            try:
                import openai
            except ImportError:
                raise TutorError("the vLLM engine talks to vLLM through the openai package: pip install openai") from None
            self.client = openai.OpenAI(base_url=self.base_url, api_key="EMPTY", max_retries=0, timeout=self.timeout)

    @classmethod
    def load(cls, workspace: Workspace, subjects: list[str], *, say: Callable[[str], None], command_prefix: Iterable[str] | None = None,
             tensor_parallel_size: int = 1, port: int | None = None, extra_args: Iterable[str] = (), log: Path | None = None,
             ready_timeout: float = 900.0) -> VllmBackend:
        """Start `vllm serve` for the base model with each subject's newest adapters, and wait until it is ready.

        `command_prefix` goes before `vllm serve ...` (e.g. a launcher of another environment: `conda run -n vllm`),
        `extra_args` after it (any other option of vllm serve, e.g. --max-model-len 4096, --gpu-memory-utilization 0.85).
        `port`: vLLM's, on 127.0.0.1 (default: a free one). Loading the model and compiling kernels takes minutes:
        past `ready_timeout` seconds, or if the server exits first, it is one line naming the log.
        """
        from ..basemodels import load_tokenizer, resolve

        if tensor_parallel_size < 1:
            raise TutorError(f"--tensor-parallel-size {tensor_parallel_size}: give 1 or more GPUs")
        base, found, refused = find_adapters(workspace, subjects)
        usable = []
        for served in found:
            try:
                _rank(served.adapter)
            except (OSError, ValueError, KeyError, TypeError) as err:  # a corrupt folder is refused, the others still serve
                refused.append(f"{served.id}: the adapter {served.adapter} cannot be loaded ({type(err).__name__}: {err})")
                continue
            usable.append(served)
        tokenizer = load_tokenizer(base, say=say)  # before minutes of vLLM start-up: a base without a chat template fails now
        name = Path(base).name if Path(base).is_dir() else base
        models = {served.id: served for served in usable}
        models[name] = Served(name, None, None, None)
        upstream = {served.id: module_name(served.id) for served in usable} | {name: BASE}
        port = port or free_port()
        command = serve_command(resolve(base, say=say).location, {upstream[s.id]: s.adapter for s in usable}, port=port)
        if tensor_parallel_size > 1:
            command += ["--tensor-parallel-size", str(tensor_parallel_size)]
        command = [*(command_prefix or ()), *command, *extra_args]
        log = Path(log) if log is not None else workspace.root / LOG
        say(f"starting vLLM for {base} with {len(usable)} LoRA adapter(s) on 127.0.0.1:{port} (log: {log}); this takes minutes")
        server = VllmServer(command, port=port, log=log, timeout=ready_timeout)
        base_url = server.__enter__()
        try:
            return cls(base=base, tokenizer=tokenizer, models=models, upstream=upstream, base_url=base_url, refused=refused,
                       command=command, server=server, workspace=workspace)
        except BaseException:
            server.stop()
            raise

    def prompt_tokens(self, messages: list[dict]) -> list[int]:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)

    def generate(self, served: Served, prompt: list[int], *, max_tokens: int, temperature: float | None = None, top_p: float | None = None,
                 seed: int | None = None, stop: list[str] | None = None, on_text: Callable[[str], None] | None = None,
                 cancelled: Callable[[], bool] = lambda: False, messages: list[dict] | None = None, ignore_eos: bool = False) -> Output:
        """One reply from vLLM, greedy unless temperature > 0; `on_text` gets it piece by piece; `cancelled()` closes the
        upstream stream at the next chunk (vLLM then aborts the request). Blocks until it ends: callers run it in a worker thread.

        `prompt` (the tokens of `messages`) only stands in for the prompt's size when vLLM sends no usage.
        """
        import openai

        if messages is None:
            raise TutorError("the vLLM engine sends the request's messages, not token ids: call generate(..., messages=...)")
        model = self.upstream.get(served.id)
        if model is None:
            raise TutorError(f"{served.id!r} is not a model of this vLLM server; served: {', '.join(self.upstream)}")
        sampling = bool(temperature and temperature > 0)
        request = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature if sampling else 0,
                   "stream": True, "stream_options": {"include_usage": True}, "extra_body": {"repetition_penalty": REPETITION_PENALTY}}
        if ignore_eos:
            request["extra_body"]["ignore_eos"] = True
        if sampling and top_p is not None:
            request["top_p"] = top_p
        if seed is not None:
            request["seed"] = seed
        if stop:
            request["stop"] = list(stop)
        pieces, finish, usage = [], None, None
        if cancelled():
            return Output(text="", finish_reason="stop", prompt_tokens=len(prompt), completion_tokens=0)
        try:
            stream = self.client.chat.completions.create(**request)
            try:
                for chunk in stream:
                    usage = chunk.usage or usage
                    for choice in chunk.choices:
                        if choice.delta is not None and choice.delta.content:
                            pieces.append(choice.delta.content)
                            if on_text is not None:
                                on_text(choice.delta.content)
                        finish = choice.finish_reason or finish
                    if cancelled():
                        break
            finally:
                stream.close()  # at once, mid-reply when cancelled: the connection drops and vLLM aborts the request
        except openai.APITimeoutError:
            raise TutorError(f"vLLM at {self.base_url} sent nothing for {served.id!r} within {self.timeout:g} s") from None
        except openai.APIConnectionError:
            raise TutorError(self._gone()) from None
        except openai.APIError as err:
            message = " ".join(str(err).split())  # one line, whatever the body held
            raise TutorError(f"vLLM at {self.base_url} failed for {served.id!r}: {message}") from None
        text = "".join(pieces)
        if usage is not None:
            prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens
        else:  # cancelled before the usage chunk
            prompt_tokens, completion_tokens = len(prompt), len(self.tokenizer.encode(text, add_special_tokens=False)) if text else 0
        counts = self.counts.setdefault(served.id, {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0})
        counts["requests"] += 1
        counts["prompt_tokens"] += prompt_tokens
        counts["completion_tokens"] += completion_tokens
        return Output(text=text, finish_reason="length" if finish == "length" else "stop", prompt_tokens=prompt_tokens,
                      completion_tokens=completion_tokens)

    def metrics(self) -> dict:
        """Requests and tokens per model id (vLLM's own batch figures are on its /metrics, at base_url without /v1)."""
        return {"engine": "vllm", "upstream": self.base_url, "models": {name: dict(c) for name, c in self.counts.items()}}

    def _gone(self) -> str:
        process = self.server.process if self.server is not None else None
        if process is not None and process.poll() is not None:
            return f"the vLLM server exited with code {process.returncode}: see {self.server.log}"
        return f"no vLLM server answers at {self.base_url}"

    def close(self) -> None:
        """Stop the vLLM server (its whole process group); a later generate is one line saying it exited."""
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> VllmBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
