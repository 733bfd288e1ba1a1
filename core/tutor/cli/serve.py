"""`tutor serve`: the subjects' adapters behind one OpenAI-compatible endpoint."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..console import say
from ..errors import TutorError
from ._common import pass_state, read_text


def api_keys(key_file: Path | None) -> list[str]:
    """The accepted keys: TUTOR_API_KEYS (comma-separated) and the key file's lines; blank ones are no keys."""
    keys = [k.strip() for k in os.environ.get("TUTOR_API_KEYS", "").split(",")]
    if key_file is not None:
        keys += [line.strip() for line in read_text(key_file).splitlines()]
    return [k for k in keys if k]


@click.command()
@click.option("--host", help="Address to bind (default: [serve] host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: [serve] port, 8000).")
@click.option("--subjects", metavar="LIST", help="Comma-separated subjects to serve (default: every installed one).")
@click.option("--api-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Accepted API keys, one a line.")
@click.option("--engine", type=click.Choice(["local", "vllm"]), default="local", show_default=True,
              help="local: decode here, in one continuous batch; vllm: start vLLM's server with the adapters as LoRA modules "
                   "(a GPU machine with `pip install vllm`) and proxy to it.")
@click.option("--tensor-parallel-size", type=click.IntRange(1), default=1, show_default=True, help="GPUs vLLM spreads the model over.")
@click.option("--batch", type=click.IntRange(1, 256), help="Requests decoded together by the local engine (default: [serve] batch).")
@pass_state
def serve(state, host, port, subjects, api_key_file, engine, tensor_parallel_size, batch):
    """Serve every subject's newest adapters on one base model, through OpenAI's chat-completions API.

    \b
    GET /v1/models lists `<subject>`, `<subject>:diagram` and the base model;
    POST /v1/chat/completions answers with the one the request names;
    /v1/tutor/{answer,explain,mark,set,plan} run the tutor modes, /v1/diagrams
    compiles diagrams, and / is the web tutor page.
    Clients need a key: TUTOR_API_KEYS or --api-key-file ([serve] api_key_file).
    """
    import uvicorn

    from ..registry import registry
    from ..serve.app import create_app
    from ..serve.backend import Backend

    settings = state.workspace.config().serve
    settings = settings.model_copy(update={k: v for k, v in {"host": host, "port": port}.items() if v is not None})
    keys = api_keys(api_key_file or settings.api_key_file)
    names = [s.strip() for s in subjects.split(",")] if subjects else sorted(registry().subjects)
    for name in names:
        if name not in registry().subjects:
            raise TutorError(f"unknown subject {name!r}; installed: {', '.join(sorted(registry().subjects))}")
    if engine == "vllm":
        from ..serve.vllm import VllmBackend

        backend = VllmBackend.load(state.workspace, names, say=say, tensor_parallel_size=tensor_parallel_size)
    else:
        backend = Backend.load(state.workspace, names, say=say, max_batch=batch or settings.batch)
    for line in backend.refused:
        click.echo(f"warning: {line}", err=True)
    if not keys:
        beyond = "" if settings.host in ("127.0.0.1", "localhost", "::1") else f", and {settings.host} is reachable beyond this machine"
        click.echo(f"warning: no API keys (TUTOR_API_KEYS or --api-key-file){beyond}: every request but /health will get 401", err=True)
    say(f"serving {', '.join(backend.models)} on http://{settings.host}:{settings.port}/v1")
    say(f"the web tutor: http://{settings.host}:{settings.port}/  (metrics: /metrics)")
    try:
        uvicorn.run(create_app(backend, settings, keys), host=settings.host, port=settings.port, log_level="warning")
    finally:
        backend.close()
