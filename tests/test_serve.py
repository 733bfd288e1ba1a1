"""`tutor serve` on the tiny model with random LoRA adapters, through the real `openai` client and raw HTTP on 127.0.0.1.

The adapters are drawn at random (init_lora_weights=False), so each subject
answers differently from the base: a request that reached the wrong adapter,
or none, shows. The tiny model writes nonsense; replies are compared exactly.
"""

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from tutor import runs
from tutor.config import ServeConfig
from tutor.workspace import Workspace

KEY = "test-key-1"
PROMPT = [{"role": "user", "content": "What is the unit of force?"}]


def random_adapter(workspace, tiny_model, subject: str, seed: int):
    """A finished answer-role run of `subject` with random LoRA weights on the tiny model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with torch.no_grad():
        for name, weights in model.named_parameters():
            if "lora_" in name:
                weights.normal_(0, 0.5)
    run = runs.make_run(runs.adapters_dir(workspace, subject, "answer"), runs.run_name("sft"))
    model.save_pretrained(run)
    runs.write_meta(run / runs.RUN_META, {"method": "sft"})
    runs.write_meta(run / runs.ADAPTER_META, {"subject": subject, "role": "answer", "base_model": str(tiny_model)})
    return run


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):
    """A running server: physics and chemistry adapters, a corrupt economics one; max_tokens capped at 12, a queue of 2."""
    import uvicorn
    from tutor.serve.app import create_app
    from tutor.serve.backend import Backend

    root = tmp_path_factory.mktemp("serve-ws")
    (root / "tutor.toml").write_text(f'[model]\nbase = "{tiny_model}"\n', encoding="utf-8")
    workspace = Workspace(root)
    random_adapter(workspace, tiny_model, "physics", 1)
    random_adapter(workspace, tiny_model, "chemistry", 2)
    broken = random_adapter(workspace, tiny_model, "economics", 3)
    (broken / "adapter_config.json").write_text("{not json", encoding="utf-8")
    backend = Backend.load(workspace, ["physics", "chemistry", "economics"], say=lambda _: None)
    settings = ServeConfig(port=0, max_tokens=12, queue=2, max_messages=4)
    server = uvicorn.Server(uvicorn.Config(create_app(backend, settings, [KEY]), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield backend, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def http(method: str, url: str, body: str | dict | None = None, key: str | None = KEY) -> tuple[int, str]:
    """(status, body) of one raw request: what a client that is not `openai` sends."""
    data = (body if isinstance(body, str) else json.dumps(body)).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key is not None else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers), timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def test_models_are_the_subjects_and_the_base_and_a_corrupt_adapter_is_refused_alone(served):
    backend, url = served
    ids = [m.id for m in client(url).models.list().data]
    assert ids[:2] == ["physics", "chemistry"] and len(ids) == 3 and "economics" not in ids
    (line,) = backend.refused
    assert line.startswith("economics: the adapter ") and "cannot be loaded" in line


def test_every_route_but_health_needs_a_key(served):
    _, url = served
    assert json.loads(http("GET", f"{url}/health", key=None)[1])["status"] == "ok"
    with pytest.raises(openai.AuthenticationError):
        client(url, "wrong-key").models.list()
    for key in (None, "", f"{KEY}x"):
        status, body = http("POST", f"{url}/v1/chat/completions", {"model": "physics", "messages": PROMPT}, key=key)
        assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"


def test_each_model_answers_with_its_own_adapter_and_greedy_replies_repeat(served):
    _, url = served
    replies = {}
    for model in [m.id for m in client(url).models.list().data]:  # physics, chemistry, the base
        reply = client(url).chat.completions.create(model=model, messages=PROMPT, max_tokens=8)
        replies[model] = reply.choices[0].message.content
        assert reply.usage.completion_tokens <= 8 and reply.usage.prompt_tokens > 5
    assert len(set(replies.values())) == 3  # three different models answered
    again = client(url).chat.completions.create(model="physics", messages=PROMPT, max_tokens=8).choices[0].message.content
    assert again == replies["physics"]


def test_a_streamed_reply_is_the_plain_reply_with_usage_and_done(served):
    _, url = served
    plain = client(url).chat.completions.create(model="chemistry", messages=PROMPT, max_tokens=10)
    chunks = list(client(url).chat.completions.create(model="chemistry", messages=PROMPT, max_tokens=10, stream=True,
                                                      stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    status, body = http("POST", f"{url}/v1/chat/completions", {"model": "chemistry", "messages": PROMPT, "max_tokens": 4, "stream": True})
    lines = [line.strip() for line in body.splitlines() if line.startswith("data:")]
    assert status == 200 and lines[-1] == "data: [DONE]"


def test_a_huge_max_tokens_is_capped(served):
    _, url = served
    reply = client(url).chat.completions.create(model="physics", messages=PROMPT, max_tokens=10**6)
    assert reply.usage.completion_tokens <= 12


def test_an_unknown_model_is_404_never_the_base(served):
    _, url = served
    with pytest.raises(openai.NotFoundError) as caught:
        client(url).chat.completions.create(model="biology", messages=PROMPT)
    assert caught.value.code == "model_not_found" and "biology" in caught.value.message


@pytest.mark.parametrize(("body", "field"), [
    ('{"model": "physics", "messages": [', "body"),
    ('{"model": "physics", "messages": [{"role": "user", "content": "hi"}], "frequency_penalty": 1}', "frequency_penalty"),
    ('{"model": "physics", "messages": []}', "messages"),
    ('{"model": "physics", "messages": [{"role": "user", "content": "hi"}], "n": 2}', "n"),
    (json.dumps({"model": "physics", "messages": [{"role": "user", "content": "hi"}] * 5}), "messages"),
])
def test_a_bad_body_is_400_naming_the_field(served, body, field):
    _, url = served
    status, text = http("POST", f"{url}/v1/chat/completions", body)
    assert status == 400, text
    problem = json.loads(text)["error"]
    assert field in problem["message"] or problem["param"] == field


def test_past_the_queue_requests_get_429_and_the_rest_complete(served, monkeypatch):
    backend, url = served
    slow = backend.generate

    def generate(*args, **kwargs):
        time.sleep(0.5)
        return slow(*args, **kwargs)

    monkeypatch.setattr(backend, "generate", generate)

    def ask(_):
        try:
            return client(url).chat.completions.create(model="physics", messages=PROMPT, max_tokens=4).choices[0].message.content
        except openai.RateLimitError as err:
            assert err.response.headers["retry-after"] == "1"
            return 429

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(ask, range(8)))
    refused = outcomes.count(429)
    assert refused >= 4 and len(outcomes) - refused >= 2  # a queue of 2: at most 2 waiting or running at a time
    assert json.loads(http("GET", f"{url}/health")[1])["waiting"] == 0  # every slot given back
