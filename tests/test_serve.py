"""`tutor serve` on the tiny model with random LoRA adapters, through the real `openai` client and raw HTTP on 127.0.0.1.

The adapters are drawn at random (init_lora_weights=False), so each subject
answers differently from the base: a request that reached the wrong adapter,
or none, shows. The tiny model writes nonsense; replies are compared exactly.
"""

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from serving import random_adapter, running, tiny_workspace
from tutor.config import ServeConfig
from tutor.workspace import Workspace

KEY = "test-key-1"
PROMPT = [{"role": "user", "content": "What is the unit of force?"}]


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):
    """A running server: physics and chemistry adapters, a corrupt economics one; max_tokens capped at 12, a queue of 2."""
    from tutor.serve.app import create_app
    from tutor.serve.backend import Backend

    workspace = tiny_workspace(tmp_path_factory.mktemp("serve-ws"), tiny_model)
    random_adapter(workspace, tiny_model, "physics", 1)
    random_adapter(workspace, tiny_model, "chemistry", 2)
    broken = random_adapter(workspace, tiny_model, "economics", 3)
    (broken / "adapter_config.json").write_text("{not json", encoding="utf-8")
    backend = Backend.load(workspace, ["physics", "chemistry", "economics"], say=lambda _: None)
    settings = ServeConfig(port=0, max_tokens=12, queue=2, max_messages=4)
    with running(create_app(backend, settings, [KEY])) as url:
        yield backend, url


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


def test_no_cross_talk_greedy_replies_in_a_mixed_batch_are_the_solo_replies(served):
    """Physics, chemistry and the base decode in one batch, joining at different steps, half of them after a shared system
    prompt (prefilled once per adapter, then copied): each reply is token for token its solo run."""
    backend, _ = served
    system = {"role": "system", "content": "You are an A-Level physics tutor. Answer to full marks, with units and working."}
    questions = ["What is the unit of force?", "State Newton's second law of motion in words and as an equation.",
                 "Define specific heat capacity.", "Why does a ball thrown upwards slow down?"]
    conversations = [[{"role": "user", "content": q}] for q in questions] + [[system, {"role": "user", "content": q}] for q in questions]
    work = [(model, messages) for messages in conversations for model in backend.models]  # 24 requests, 3 models
    prompts = [backend.prompt_tokens(messages) for _, messages in work]

    def ask(n: int):
        return backend.generate(backend.models[work[n][0]], prompts[n], messages=work[n][1], max_tokens=24)

    hits = backend.scheduler.prefix_hits
    solo = [ask(n) for n in range(len(work))]
    assert len({out.text for out in solo}) > len(conversations)  # the models do answer differently
    assert backend.scheduler.prefix_hits > hits  # the system prompt was reused
    assert [ask(n) for n in range(len(work) - 3, len(work))] == solo[-3:]  # and a reused prefix changes nothing
    peak_before = backend.scheduler.peak
    with ThreadPoolExecutor(len(work)) as pool:
        futures = []
        for n in range(len(work)):
            futures.append(pool.submit(ask, n))
            time.sleep(0.003 * (n % 4))  # some join a running batch mid-way
        mixed = [future.result(timeout=120) for future in futures]
    assert backend.scheduler.peak >= 3 or peak_before >= 3  # they did share steps
    for (model, messages), alone, together in zip(work, solo, mixed):
        assert together == alone, f"{model} on {messages[-1]['content']!r}"


def test_a_client_gone_mid_stream_frees_its_slot_and_the_server_goes_on(served, monkeypatch):
    import http.client
    from urllib.parse import urlsplit

    backend, url = served
    step = backend.scheduler._step

    def slow_step(*args):
        time.sleep(0.1)  # the tiny model would finish its 12 tokens before the client could leave
        return step(*args)

    monkeypatch.setattr(backend.scheduler, "_step", slow_step)
    cancelled = sum(c["cancelled"] for c in backend.scheduler.counts.values())
    where = urlsplit(url)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    connection.request("POST", "/v1/chat/completions", json.dumps({"model": "physics", "messages": PROMPT, "stream": True,
                                                                   "max_tokens": 12, "stop": ["never in this reply"]}),
                       {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    response = connection.getresponse()
    assert response.status == 200
    response.fp.readline()  # the first event has arrived
    deadline = time.monotonic() + 10
    while not backend.scheduler.running and time.monotonic() < deadline:  # and the request is in the batch
        time.sleep(0.01)
    connection.sock.shutdown(2)
    connection.close()
    deadline = time.monotonic() + 10
    while sum(c["cancelled"] for c in backend.scheduler.counts.values()) == cancelled and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sum(c["cancelled"] for c in backend.scheduler.counts.values()) == cancelled + 1  # ended early, not run to 12 tokens
    assert not backend.scheduler.running
    monkeypatch.undo()
    assert client(url).chat.completions.create(model="physics", messages=PROMPT, max_tokens=4).choices[0].message.content


def test_a_hundred_clients_over_a_queue_of_16_get_429_or_a_reply_and_nothing_hangs(served, monkeypatch):
    from tutor.serve.app import create_app

    backend, _ = served
    step = backend.scheduler._step

    def slow_step(*args):
        time.sleep(0.02)
        return step(*args)

    monkeypatch.setattr(backend.scheduler, "_step", slow_step)
    settings = ServeConfig(port=0, max_tokens=6, queue=16)
    with running(create_app(backend, settings, [KEY])) as url:
        def ask(n):
            return http("POST", f"{url}/v1/chat/completions", {"model": ["physics", "chemistry"][n % 2], "messages": PROMPT})

        with ThreadPoolExecutor(100) as pool:
            outcomes = [future.result(timeout=180) for future in [pool.submit(ask, n) for n in range(100)]]
        statuses = [status for status, _ in outcomes]
        assert set(statuses) <= {200, 429} and statuses.count(429) > 0 and statuses.count(200) >= 16
        assert all(json.loads(body)["choices"][0]["finish_reason"] in ("stop", "length") for status, body in outcomes if status == 200)
        assert json.loads(http("GET", f"{url}/health")[1])["waiting"] == 0
        assert not backend.scheduler.running and not backend.scheduler.waiting


# --- the tutor modes, diagrams and metrics ------------------------------------------------------


def test_subject_info_lists_the_bank_for_the_pickers_and_an_unserved_subject_is_404(served):
    _, url = served
    status, body = http("GET", f"{url}/v1/tutor/subjects/physics")
    info = json.loads(body)
    assert status == 200 and info["name"] == "physics" and info["topics"] and info["types"]
    assert {"id", "type", "topic", "marks", "text"} <= set(info["questions"][0])
    status, body = http("GET", f"{url}/v1/tutor/subjects/economics")  # its adapter was refused
    assert status == 404 and "physics" in json.loads(body)["error"]["message"]
    assert http("GET", f"{url}/v1/tutor/subjects/physics", key=None)[0] == 401


def test_answer_streams_deltas_then_the_result_and_equals_the_plain_answer(served):
    _, url = served
    question = json.loads(http("GET", f"{url}/v1/tutor/subjects/physics")[1])["questions"][0]
    status, body = http("POST", f"{url}/v1/tutor/answer", {"subject": "physics", "question_id": question["id"]})
    plain = json.loads(body)
    assert status == 200 and plain["mode"] == "answer" and plain["question_id"] == question["id"] and plain["model"].endswith("-sft")
    status, body = http("POST", f"{url}/v1/tutor/answer", {"subject": "physics", "question_id": question["id"], "stream": True})
    events = [line.removeprefix("data: ").strip() for line in body.splitlines() if line.startswith("data:")]
    assert status == 200 and events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    deltas = "".join(e["delta"] for e in parsed if "delta" in e)
    (result,) = [e["result"] for e in parsed if "result" in e]
    assert result["text"] == plain["text"] and deltas.strip() == plain["text"]
    status, body = http("POST", f"{url}/v1/tutor/explain", {"subject": "physics", "text": "Why is the sky blue?"})
    assert status == 200 and json.loads(body)["mode"] == "explain"


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"subject": "physics"}, 400, None),  # neither text nor question id
    ({"subject": "physics", "question_id": "no-such-question"}, 400, "question_id"),
    ({"subject": "physics", "text": "hi", "temperature": 1}, 400, "temperature"),
    ({"subject": "biology", "text": "hi"}, 404, "subject"),
])
def test_a_bad_tutor_request_is_one_error_naming_what_is_wrong(served, body, status, field):
    _, url = served
    got, text = http("POST", f"{url}/v1/tutor/answer", body)
    problem = json.loads(text)["error"]
    assert got == status, text
    assert field is None or problem["param"] == field or field in problem["message"]


def test_mark_gives_points_and_feedback_and_set_and_plan_answer(served):
    _, url = served
    questions = json.loads(http("GET", f"{url}/v1/tutor/subjects/physics")[1])["questions"]
    for question in [q for q in questions if q["type"] != "mcq"][:10]:  # the first with mark points (not levels alone)
        status, body = http("POST", f"{url}/v1/tutor/mark", {"subject": "physics", "question_id": question["id"], "answer": "No idea."})
        marked = json.loads(body)
        assert status == 200 and marked["marker"] == "rules" and marked["marks"] == 0
        if marked["points"]:
            break
    assert marked["points"] and not any(point["awarded"] for point in marked["points"])
    status, body = http("POST", f"{url}/v1/tutor/set", {"subject": "physics", "type": question["type"], "count": 1})
    made = json.loads(body)
    assert status == 200 and len(made["accepted"]) + len(made["rejected"]) == 1  # the tiny model writes nonsense: rejected, with why
    assert all(reject["reasons"] for reject in made["rejected"])
    rows = [{"question_id": q["id"], "marks": 0} for q in questions[:6]] + [{"question_id": "nope", "marks": 1}]
    status, body = http("POST", f"{url}/v1/tutor/plan", {"subject": "physics", "results": rows, "days": 5})
    planned = json.loads(body)
    assert status == 200 and planned["plan"]["days"] == 5 and "|" in planned["table"]
    assert len(planned["problems"]) == 1 and "nope" in planned["problems"][0] and "/tmp" not in planned["problems"][0]


def test_a_diagram_is_compiled_in_the_sandbox_and_served_by_its_key(served):
    _, url = served
    status, body = http("POST", f"{url}/v1/diagrams", {"subject": "physics", "format": "tikz",
                                                       "code": "\\begin{tikzpicture}\\draw (0,0) -- (2,1);\\end{tikzpicture}"})
    drawn = json.loads(body)
    assert status == 200 and drawn["ok"], drawn
    assert drawn["png"] == f"/v1/diagrams/{drawn['key']}.png"
    request = urllib.request.Request(url + drawn["png"], headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.read(8) == b"\x89PNG\r\n\x1a\n" and response.headers["content-type"] == "image/png"
    assert http("GET", url + drawn["png"], key=None)[0] == 401
    assert http("GET", f"{url}/v1/diagrams/../../etc/passwd.png")[0] == 404
    assert http("GET", f"{url}/v1/diagrams/{'0' * 64}.png")[0] == 404
    status, body = http("POST", f"{url}/v1/diagrams", {"subject": "physics", "format": "tikz", "code": "\\input{/etc/passwd}"})
    assert status == 200 and not json.loads(body)["ok"] and json.loads(body)["error"]


def test_metrics_count_requests_and_tokens_per_model(served):
    _, url = served
    client(url).chat.completions.create(model="chemistry", messages=PROMPT, max_tokens=4)
    status, body = http("GET", f"{url}/metrics")
    metrics = json.loads(body)
    assert status == 200 and metrics["queue"] == 2 and metrics["waiting"] == 0
    assert metrics["models"]["chemistry"]["requests"] >= 1 and metrics["models"]["chemistry"]["completion_tokens"] >= 1
    assert http("GET", f"{url}/metrics", key=None)[0] == 401


def test_stacked_lora_gives_each_row_what_peft_gives_it(tiny_model, tmp_path):
    """The server's per-row LoRA against peft's own mixed batch: the same logits for each adapter and for the base."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from tutor.serve.lora import StackedLora

    workspace = Workspace(tmp_path)
    first, second = random_adapter(workspace, tiny_model, "physics", 5), random_adapter(workspace, tiny_model, "chemistry", 6)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(first), adapter_name="physics")
    model.load_adapter(str(second), adapter_name="chemistry")
    model.eval()
    ids = torch.tensor([[5, 17, 42, 99, 3, 250, 7]] * 3)
    rows = ["physics", "__base__", "chemistry"]
    with torch.no_grad():
        expected = model(input_ids=ids, adapter_names=rows).logits
        stack = StackedLora(model, ["physics", "chemistry"])
        stack.select(["physics", None, "chemistry"])
        got = model(input_ids=ids).logits
        stack.select([None, None, None])
        base = model(input_ids=ids[:1]).logits
    assert not torch.allclose(expected[0], expected[1]) and not torch.allclose(expected[0], expected[2])  # three different models
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(base[0], expected[1], rtol=1e-5, atol=1e-5)
