"""`tutor serve --engine vllm` without vLLM: the `vllm serve` command VllmBackend builds from a workspace's adapters, and
generation proxied to a stand-in for vLLM's server over real HTTP.

The stand-in is tests/openai_server.py: started as the `vllm` on PATH (a script that records its argv, then runs
the server on the port it was given, each reply starting "[<the model asked for>] ", streamed in small pieces), or
in-process where a test looks at the request bodies or at how a stream ended.
"""

import json
import os
import stat
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from openai_server import TeacherServer, default_reply, error, ok, record_bodies
from serving import running
from tutor import runs
from tutor.errors import TutorError
from tutor.eval.vllm import BASE, free_port
from tutor.serve.backend import Served
from tutor.serve.vllm import VllmBackend, module_name
from tutor.workspace import Workspace

SERVER = Path(__file__).parent / "openai_server.py"
ASK = [{"role": "system", "content": "You are a tutor."}, {"role": "user", "content": "What is the unit of force?"}]


def adapter(workspace: Workspace, subject: str, base: str, *, role: str = "answer", rank: int = 8, owner: str | None = None) -> Path:
    """A finished run of `subject`'s role, trained (its metadata says) on `base`: vLLM reads the folder, so no weights are needed here."""
    run = runs.make_run(runs.adapters_dir(workspace, subject, role), runs.run_name("sft"))
    (run / "adapter_config.json").write_text(json.dumps({"r": rank, "lora_alpha": 2 * rank, "peft_type": "LORA",
                                                         "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": base}))
    runs.write_meta(run / runs.RUN_META, {"method": "sft"})
    runs.write_meta(run / runs.ADAPTER_META, {"subject": owner or subject, "role": role, "base_model": base})
    return run


@pytest.fixture
def workspace(tmp_path, tiny_model):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "tutor.toml").write_text(f'[model]\nbase = "{tiny_model}"\n', encoding="utf-8")
    return Workspace(root)


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    """A `vllm` first on PATH: appends its arguments to `fake_vllm.argv` (one JSON list a line), then becomes the test server."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "vllm-argv.jsonl"
    script = bin_dir / "vllm"
    script.write_text(f"""#!{sys.executable}
import json, os, sys
with open({str(record)!r}, "a") as out:
    out.write(json.dumps(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_VLLM_EXIT"):
    print("CUDA out of memory", flush=True)
    sys.exit(int(os.environ["FAKE_VLLM_EXIT"]))
port = sys.argv[sys.argv.index("--port") + 1]
os.execv(sys.executable, [sys.executable, {str(SERVER)!r}, "--port", port, "--echo-model", "--piece-size", "24", "--stream-delay", "0.005"])
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    class Fake:
        path = script

        @staticmethod
        def argv() -> list[list[str]]:
            return [json.loads(line) for line in record.read_text().splitlines()] if record.is_file() else []

    return Fake


def quiet(_line: str) -> None:
    pass


# --- the command ------------------------------------------------------------------------------


def test_the_command_serves_each_subjects_newest_adapters_as_lora_modules_and_refuses_the_rest(workspace, tiny_model, fake_vllm):
    base = str(tiny_model)
    adapter(workspace, "physics", base, rank=4)  # an older physics answer adapter: not served
    physics = adapter(workspace, "physics", base, rank=8)
    diagram = adapter(workspace, "physics", base, role="diagram", rank=8)
    chemistry = adapter(workspace, "chemistry", base, rank=12)  # needs --max-lora-rank 16
    broken = adapter(workspace, "economics", base)
    (broken / "adapter_config.json").write_text("{not json", encoding="utf-8")
    foreign = adapter(workspace, "biology", "HuggingFaceTB/SmolLM2-360M-Instruct")
    stray = adapter(workspace, "geography", base, owner="history")
    port = free_port()
    backend = VllmBackend.load(workspace, ["physics", "chemistry", "economics", "biology", "geography"], say=quiet, port=port,
                               tensor_parallel_size=2, extra_args=["--max-model-len", "2048"])
    try:
        module = {"physics": physics, "physics:diagram": diagram, "chemistry": chemistry}
        expected = ["vllm", "serve", str(Path(base).resolve()), "--host", "127.0.0.1", "--port", str(port), "--served-model-name", BASE,
                    "--generation-config", "vllm", "--enable-lora", "--max-loras", "3", "--max-lora-rank", "16",
                    "--lora-modules",
                    *[json.dumps({"name": name, "path": str(path), "base_model_name": BASE}) for name, path in module.items()],
                    "--tensor-parallel-size", "2", "--max-model-len", "2048"]
        assert backend.command == expected
        assert fake_vllm.argv() == [expected[1:]]  # what the `vllm` on PATH was run with
        assert backend.base == base and backend.base_url == f"http://127.0.0.1:{port}/v1"
        assert backend.models == {"physics": Served("physics", "physics", "answer", physics),
                                  "physics:diagram": Served("physics:diagram", "physics", "diagram", diagram),
                                  "chemistry": Served("chemistry", "chemistry", "answer", chemistry),
                                  tiny_model.name: Served(tiny_model.name, None, None, None)}
        assert backend.upstream == {"physics": "physics", "physics:diagram": "physics:diagram", "chemistry": "chemistry",
                                    tiny_model.name: BASE}
        assert len(backend.refused) == 3
        assert backend.refused[0].startswith(f"the adapter {stray} belongs to 'history', not 'geography': refusing to serve geography")
        assert backend.refused[1] == (f"biology: its adapter {foreign} was trained on HuggingFaceTB/SmolLM2-360M-Instruct, not on {base}, "
                                      f"the base being served")
        assert backend.refused[2].startswith(f"economics: the adapter {broken} cannot be loaded (JSONDecodeError: ")
        assert all("\n" not in line for line in backend.refused)
        assert backend.prompt_tokens(ASK) == backend.tokenizer.apply_chat_template(ASK, add_generation_prompt=True, tokenize=True,
                                                                                   return_dict=False)
    finally:
        backend.close()


def test_without_adapters_only_the_base_is_served_and_one_gpu_adds_no_option(workspace, tiny_model, fake_vllm):
    with VllmBackend.load(workspace, ["physics"], say=quiet) as backend:
        port = backend.command[backend.command.index("--port") + 1]
        assert backend.command == ["vllm", "serve", str(tiny_model.resolve()), "--host", "127.0.0.1", "--port", port,
                                   "--served-model-name", BASE, "--generation-config", "vllm"]
        assert list(backend.models) == [tiny_model.name] and backend.refused == []


def test_an_adapter_called_base_is_renamed_upstream():
    assert module_name(BASE) == "base:answer"
    assert module_name("physics") == "physics" and module_name("physics:diagram") == "physics:diagram"


def test_start_up_failures_are_one_line(workspace, fake_vllm, monkeypatch):
    with pytest.raises(TutorError, match="^--tensor-parallel-size 0: give 1 or more GPUs$"):
        VllmBackend.load(workspace, [], say=quiet, tensor_parallel_size=0)
    monkeypatch.setenv("FAKE_VLLM_EXIT", "3")
    log = workspace.root / "serve" / "vllm.log"
    with pytest.raises(TutorError, match=f"^the vLLM server exited with code 3 before it was ready: see {log}$"):
        VllmBackend.load(workspace, [], say=quiet)
    assert log.read_text().strip() == "CUDA out of memory"


def test_close_stops_the_server_started_through_a_command_prefix(workspace, fake_vllm):
    backend = VllmBackend.load(workspace, [], say=quiet, command_prefix=[sys.executable, str(fake_vllm.path)])
    assert backend.command[:4] == [sys.executable, str(fake_vllm.path), "vllm", "serve"]
    assert fake_vllm.argv()[0][:2] == ["vllm", "serve"]
    process = backend.server.process
    assert process.poll() is None
    with urllib.request.urlopen(backend.base_url.removesuffix("/v1") + "/health", timeout=5) as response:
        assert response.status == 200
    backend.close()
    assert process.poll() is not None
    with pytest.raises(OSError):
        urllib.request.urlopen(backend.base_url.removesuffix("/v1") + "/health", timeout=2)
    with pytest.raises(TutorError, match=rf"^the vLLM server exited with code -?\d+: see {backend.server.log}$"):
        backend.generate(backend.models[next(iter(backend.models))], [1], max_tokens=8, messages=ASK)


# --- proxying ----------------------------------------------------------------------------------


def test_generation_streams_through_the_server_under_each_models_upstream_name(workspace, tiny_model, fake_vllm):
    base = str(tiny_model)
    adapter(workspace, "physics", base)
    adapter(workspace, "physics", base, role="diagram")
    with VllmBackend.load(workspace, ["physics"], say=quiet) as backend:
        for model, upstream in (("physics", "physics"), ("physics:diagram", "physics:diagram"), (tiny_model.name, BASE)):
            deltas = []
            output = backend.generate(backend.models[model], backend.prompt_tokens(ASK), max_tokens=64, on_text=deltas.append, messages=ASK)
            content = f"[{upstream}] {default_reply(ASK)}"  # the stand-in names the model it was asked for
            assert output.text == content and "".join(deltas) == content
            assert len(deltas) == -(-len(content) // 24)  # each streamed piece passed on as it came
            prompt_tokens = sum(len(m["content"]) for m in ASK) // 4 + 1  # the stand-in's usage, not a count of ours
            assert (output.finish_reason, output.prompt_tokens, output.completion_tokens) == ("stop", prompt_tokens, len(content) // 4 + 1)


@pytest.fixture
def upstream(monkeypatch):
    """The test server in-process, keeping each request's JSON body in `upstream.bodies`."""
    bodies = record_bodies(monkeypatch)
    with TeacherServer(reply=lambda messages: "one two three four five six seven eight", piece_size=4) as running:
        running.bodies = bodies
        yield running


class Words:
    """A stand-in tokenizer: one token a word."""

    def encode(self, text, add_special_tokens=False):
        return text.split()


def backend_at(url: str) -> VllmBackend:
    physics = Served("physics", "physics", "answer", Path("/adapters/physics"))
    smol = Served("smol", None, None, None)
    return VllmBackend(base="/models/smol", tokenizer=Words(), models={"physics": physics, "smol": smol},
                       upstream={"physics": "physics", "smol": BASE}, base_url=url, timeout=5)


def test_requests_are_greedy_unless_sampled_and_carry_the_options(upstream):
    backend = backend_at(upstream.base_url)
    physics = backend.models["physics"]
    backend.generate(physics, [1, 2], max_tokens=7, messages=ASK, top_p=0.5, seed=3, stop=["\n\n"])
    backend.generate(backend.models["smol"], [1, 2], max_tokens=9, messages=ASK, temperature=0.7, top_p=0.5)
    greedy, sampled = upstream.bodies
    assert greedy == {"model": "physics", "messages": ASK, "max_tokens": 7, "temperature": 0, "seed": 3, "stop": ["\n\n"], "stream": True,
                      "stream_options": {"include_usage": True}, "repetition_penalty": 1.1}  # top_p only with sampling, as Backend
    assert sampled == {"model": BASE, "messages": ASK, "max_tokens": 9, "temperature": 0.7, "top_p": 0.5, "stream": True,
                       "stream_options": {"include_usage": True}, "repetition_penalty": 1.1}


def test_a_reply_cut_by_max_tokens_and_upstream_errors(upstream):
    backend = backend_at(upstream.base_url)
    physics = backend.models["physics"]
    upstream.then(ok(finish_reason="length"), error(500))
    assert backend.generate(physics, [1], max_tokens=2, messages=ASK).finish_reason == "length"
    with pytest.raises(TutorError, match=rf"^vLLM at {upstream.base_url} failed for 'physics': Error code: 500 - .*server had an error"):
        backend.generate(physics, [1], max_tokens=2, messages=ASK)
    with pytest.raises(TutorError, match=r"^the vLLM engine sends the request's messages, not token ids: call generate\(\.\.\., messages="):
        backend.generate(physics, [1], max_tokens=2)
    nobody = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(TutorError, match=f"^no vLLM server answers at {nobody}$"):
        backend_at(nobody).generate(physics, [1], max_tokens=2, messages=ASK)


def test_a_cancelled_request_closes_the_upstream_stream_at_once(upstream):
    upstream.stream_delay = 0.1  # ten pieces over a second
    backend = backend_at(upstream.base_url)
    deltas, cancelled_at = [], []

    def cancelled() -> bool:
        if len(deltas) >= 2 and not cancelled_at:
            cancelled_at.append(time.monotonic())
        return bool(cancelled_at)

    output = backend.generate(backend.models["physics"], [1, 2, 3], max_tokens=64, messages=ASK, on_text=deltas.append,
                              cancelled=cancelled)
    returned = time.monotonic()
    assert returned - cancelled_at[0] < 0.05  # not waiting for the next piece, let alone the rest
    assert output.text == "one two " and deltas == ["one ", "two "]
    assert (output.finish_reason, output.prompt_tokens, output.completion_tokens) == ("stop", 3, 2)  # no usage came: counted here
    deadline = time.monotonic() + 5
    while (upstream.requests[-1].outcome != "abandoned" or upstream.in_flight) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream.requests[-1].outcome == "abandoned" and upstream.in_flight == 0  # the server's next write found the connection gone
    assert sum(upstream.completed.values()) == 0


def test_a_request_cancelled_before_it_starts_is_not_sent(upstream):
    output = backend_at(upstream.base_url).generate(Served("smol", None, None, None), [1, 2], max_tokens=8, messages=ASK,
                                                    cancelled=lambda: True)
    assert (output.text, output.finish_reason, output.completion_tokens) == ("", "stop", 0) and upstream.requests == []


def test_concurrent_requests_stream_side_by_side(upstream):
    """vLLM batches requests: the backend holds no lock, so the app may send many at once."""
    upstream.stream_delay = 0.05
    backend = backend_at(upstream.base_url)
    outputs = {}

    def ask(n: int) -> None:
        outputs[n] = backend.generate(backend.models["physics"], [n], max_tokens=16, messages=ASK)

    workers = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert upstream.max_in_flight == 4
    assert {o.text for o in outputs.values()} == {"one two three four five six seven eight"} and len(outputs) == 4


def test_tutor_serve_engine_vllm_puts_keys_limits_and_the_tutor_api_in_front_of_vllm(workspace, tiny_model, fake_vllm):
    """The whole front: tutor's app (keys, /v1/models, chat completions, the web page) over a VllmBackend and the stand-in."""
    import openai
    from tutor.config import ServeConfig
    from tutor.serve.app import create_app

    adapter(workspace, "physics", str(tiny_model))
    with VllmBackend.load(workspace, ["physics"], say=quiet) as backend:
        with running(create_app(backend, ServeConfig(port=0), ["k"])) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0, timeout=60)
            assert [m.id for m in client.models.list().data] == ["physics", tiny_model.name]
            reply = client.chat.completions.create(model="physics", messages=ASK, max_tokens=40)
            assert reply.choices[0].message.content.startswith("[physics] ")  # vLLM was asked for the physics LoRA module
            streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
                model=tiny_model.name, messages=ASK, max_tokens=40, stream=True) if c.choices)
            assert streamed.startswith(f"[{BASE}] ")
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
            with urllib.request.urlopen(f"{url}/health", timeout=30) as response:
                assert json.loads(response.read())["status"] == "ok"
            with urllib.request.urlopen(f"{url}/", timeout=30) as response:  # the web page, needing no key
                assert b"<html" in response.read().lower()
            request = urllib.request.Request(f"{url}/metrics", headers={"Authorization": "Bearer k"})
            with urllib.request.urlopen(request, timeout=30) as response:
                metrics = json.loads(response.read())
            assert metrics["engine"] == "vllm" and metrics["models"]["physics"]["requests"] == 1
