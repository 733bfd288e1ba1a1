"""The vLLM engine without vLLM: the `vllm serve` command it builds, the chat requests it sends (to the
test server of tests/openai_server.py, over real HTTP), and the server process it starts, waits for and stops."""

import json
import sys
import threading
import time
import urllib.request

import pytest
from openai_server import TeacherServer, error, hang, ok, record_bodies
from tutor.errors import TutorError
from tutor.eval import vllm
from tutor.eval.vllm import BASE, VllmServer, free_port, generate_vllm, lora_rank, serve_command


def adapter(folder, rank: int):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": rank, "lora_alpha": 2 * rank, "peft_type": "LORA"}), encoding="utf-8")
    return folder


# --- the command ------------------------------------------------------------------------------


def test_serve_command_loads_each_adapter_as_a_lora_module_of_the_base(tmp_path):
    first, second = adapter(tmp_path / "run=1,sft", 16), adapter(tmp_path / "run-2", 24)
    command = serve_command("HuggingFaceTB/SmolLM2-135M-Instruct", {"sft-1": first, "sft-2": second}, port=8123, max_model_len=4096)
    assert command == [
        "vllm", "serve", "HuggingFaceTB/SmolLM2-135M-Instruct", "--host", "127.0.0.1", "--port", "8123", "--served-model-name", "base",
        "--generation-config", "vllm", "--max-model-len", "4096",
        "--enable-lora", "--max-loras", "2", "--max-lora-rank", "32",  # rank 24 needs 32, the next rank vLLM accepts
        "--lora-modules", json.dumps({"name": "sft-1", "path": str(first), "base_model_name": "base"}),
        json.dumps({"name": "sft-2", "path": str(second), "base_model_name": "base"}),
    ]
    assert serve_command("/models/smol", {}, port=9000) == ["vllm", "serve", "/models/smol", "--host", "127.0.0.1", "--port", "9000",
                                                            "--served-model-name", "base", "--generation-config", "vllm"]
    given = serve_command("/models/smol", {"sft-1": first}, port=9000, max_lora_rank=64)
    assert given[given.index("--max-lora-rank") + 1] == "64"


def test_lora_rank_is_the_smallest_vllm_accepts_and_bad_adapters_are_one_line(tmp_path):
    assert lora_rank([adapter(tmp_path / "a", 8)]) == 8
    assert lora_rank([adapter(tmp_path / "b", 8), adapter(tmp_path / "c", 65)]) == 128
    assert lora_rank([]) == 1
    with pytest.raises(TutorError, match=r"^LoRA rank 600 is above the 512 vLLM serves"):
        lora_rank([adapter(tmp_path / "d", 600)])
    with pytest.raises(TutorError, match=r"/missing: not a LoRA adapter \(no adapter_config.json\)$"):
        lora_rank([tmp_path / "missing"])
    with pytest.raises(TutorError, match="^an adapter cannot be named 'base': that name is the base model's$"):
        serve_command("m", {BASE: tmp_path / "a"}, port=1)
    with pytest.raises(TutorError, match="^max_lora_rank 12: vLLM accepts 1, 8, 16, 32, 64, 128, 256, 320, 512$"):
        serve_command("m", {"a": tmp_path / "a"}, port=1, max_lora_rank=12)


# --- the requests ------------------------------------------------------------------------------


@pytest.fixture
def server(monkeypatch):
    """The test server, replying 'reply to <last message>', and keeping each request's JSON body in `server.bodies`."""
    bodies = record_bodies(monkeypatch)
    with TeacherServer(reply=lambda messages: f"reply to {messages[-1]['content']}") as running:
        running.bodies = bodies
        yield running


def conversations(n: int) -> list[list[dict]]:
    return [[{"role": "system", "content": "You are a tutor."}, {"role": "user", "content": f"question {i}"}] for i in range(n)]


def test_requests_are_greedy_chat_completions_per_model_and_replies_come_back_in_order(server):
    asked = conversations(5)
    for model in (BASE, "sft-1"):
        replies = generate_vllm(server.base_url, model, asked, max_new_tokens=48, concurrency=3)
        texts = [f"reply to question {i}" for i in range(5)]
        assert [(r.text, r.cut, r.tokens) for r in replies] == [(text, False, len(text) // 4 + 1) for text in texts]  # the server's usage
    assert len(server.bodies) == 10
    for body in server.bodies:
        assert {key: body[key] for key in ("temperature", "seed", "max_tokens", "repetition_penalty")} == {
            "temperature": 0, "seed": 0, "max_tokens": 48, "repetition_penalty": 1.1}
        assert body.get("stream") in (None, False)
    assert sorted((body["model"], body["messages"][-1]["content"]) for body in server.bodies) == sorted(
        (model, f"question {i}") for model in (BASE, "sft-1") for i in range(5))
    assert all(body["messages"] == asked[int(body["messages"][-1]["content"].split()[-1])] for body in server.bodies)


def test_a_reply_stopped_by_max_tokens_is_cut(server):
    server.then(ok(finish_reason="length"))
    replies = generate_vllm(server.base_url, BASE, conversations(2), max_new_tokens=4, concurrency=1)
    assert [(r.text, r.cut) for r in replies] == [("reply to question 0", True), ("reply to question 1", False)]


def test_requests_are_concurrent_up_to_the_limit(server):
    server.pause()
    done = {}
    worker = threading.Thread(target=lambda: done.update(replies=generate_vllm(server.base_url, BASE, conversations(6),
                                                                                max_new_tokens=8, concurrency=3)))
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while len(server.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(server.requests) == 3  # three held by the server at once; the other three wait for a free worker
    finally:
        server.resume()
        worker.join(timeout=30)
    assert [r.text for r in done["replies"]] == [f"reply to question {i}" for i in range(6)]


def test_a_failed_request_a_silent_server_or_no_server_is_one_line(server, monkeypatch):
    server.then(error(500))
    with pytest.raises(TutorError, match=rf"^vLLM at {server.base_url} failed on conversation 0 for 'sft-1': Error code: 500"):
        generate_vllm(server.base_url, "sft-1", conversations(1), max_new_tokens=8)
    server.then(hang())
    monkeypatch.setattr(vllm, "REQUEST_TIMEOUT", 0.5)
    with pytest.raises(TutorError, match=rf"^vLLM at {server.base_url} did not answer conversation 0 for 'base' within 0.5 s$"):
        generate_vllm(server.base_url, BASE, conversations(1), max_new_tokens=8)
    nobody = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(TutorError, match=f"^no vLLM server answers at {nobody}$"):
        generate_vllm(nobody, BASE, conversations(2), max_new_tokens=8)


# --- the server process ------------------------------------------------------------------------


def test_server_that_exits_at_once_is_one_line_naming_its_log(tmp_path):
    log = tmp_path / "logs" / "vllm.log"
    command = [sys.executable, "-c", "import sys; print('CUDA out of memory'); sys.exit(3)"]
    with pytest.raises(TutorError) as raised:
        with VllmServer(command, port=free_port(), log=log):
            pytest.fail("the server never became ready")
    assert str(raised.value) == f"the vLLM server exited with code 3 before it was ready: see {log}"
    assert log.read_text().strip() == "CUDA out of memory"  # the log holds what the server said


def test_server_not_ready_in_time_is_stopped(tmp_path):
    server = VllmServer([sys.executable, "-c", "import time; time.sleep(600)"], port=free_port(), log=tmp_path / "vllm.log", timeout=1)
    with pytest.raises(TutorError, match=rf"^the vLLM server was not ready after 1 s: see {tmp_path / 'vllm.log'}$"):
        server.__enter__()
    assert server.process.poll() is not None  # killed, not left behind


def test_missing_vllm_says_what_to_install(tmp_path):
    with pytest.raises(TutorError, match=r"^no-such-vllm-here: command not found; --engine vllm needs vLLM on a CUDA machine"):
        with VllmServer(["no-such-vllm-here", "serve", "m"], port=free_port(), log=tmp_path / "vllm.log"):
            pass


def test_server_is_used_once_healthy_and_stopped_on_exit(tmp_path):
    """A stand-in that answers GET /health (a file of that name, served by python's http.server) like a ready vLLM."""
    (tmp_path / "health").write_text("ok")
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    server = VllmServer(command, port=port, log=tmp_path / "vllm.log")
    with server as base_url:
        assert base_url == f"http://127.0.0.1:{port}/v1"
        assert server.process.poll() is None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            assert response.read() == b"ok"
    assert server.process.poll() is not None
