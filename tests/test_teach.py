"""The teach stage against a real OpenAI-compatible server on 127.0.0.1, through the real openai client.

The server (tests/openai_server.py) plays the teacher: by default it writes
replies the validators accept, and each test scripts what goes wrong. The
questions are a few from the physics sample bank, copied into a fresh
workspace bank the way `collect import` would leave them.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai_server as srv
import pytest
from cli_runner import hears_ctrl_c
from click.testing import CliRunner
from tutor.bank import load_bank
from tutor.cli import cli
from tutor.config import TeacherConfig
from tutor.llm_client import split_reasoning
from tutor.models import DiagramRequest
from tutor.registry import get_subject
from tutor.workspace import Workspace

SAMPLE = Path(get_subject("physics").subject.bank) / "questions.jsonl"


# Every test: no teacher settings from the environment of whoever runs the suite; `teacher_server` is a fresh fake teacher.
pytestmark = pytest.mark.usefixtures("clean_teacher_env")


@pytest.fixture
def server(teacher_server):
    return teacher_server


def make_bank(tmp_path, **per_type: int) -> Path:
    """A workspace whose physics bank holds the first N sample questions of each type named."""
    ws = tmp_path / "ws"
    bank = ws / "physics" / "bank"
    bank.mkdir(parents=True)
    wanted = {t.replace("_", "-"): n for t, n in per_type.items()}
    lines = []
    for line in SAMPLE.read_text().splitlines():
        qtype = json.loads(line)["type"]
        if wanted.get(qtype, 0) > 0:
            wanted[qtype] -= 1
            lines.append(line)
    (bank / "questions.jsonl").write_text("\n".join(lines) + "\n")
    return ws


def teacher_env(server, **settings) -> dict[str, str]:
    env = {"TUTOR_TEACHER_PRESET": "local", "TUTOR_TEACHER_MODEL": "teacher-test", "TUTOR_TEACHER_BASE_URL": server.base_url,
           "TUTOR_TEACHER_BACKOFF": "0.05", "TUTOR_TEACHER_TIMEOUT": "10", "TUTOR_TEACHER_DEADLINE": "30"}
    return env | {f"TUTOR_TEACHER_{k.upper()}": str(v) for k, v in settings.items()}


def teach(ws, server, *args, env=None, **settings):
    env = teacher_env(server, **settings) | (env or {})
    result = CliRunner().invoke(cli, ["-w", str(ws), "--subject", "physics", "teach", *args], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def records(ws, name):
    path = ws / "physics" / "bank" / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def question_ids(ws):
    return [q["id"] for q in records(ws, "questions.jsonl")]


def log_entries(ws):
    path = Workspace(ws).teacher_log
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


# --- answers ---------------------------------------------------------------------------------------


def test_answers_are_streamed_checked_saved_and_never_asked_for_twice(tmp_path, server):
    ws = make_bank(tmp_path, alevel_mcq=2, igcse_mcq=1, alevel_structured=2, alevel_planning=1, alevel_explanation=1, igcse_calculation=1)
    server.latency = 0.1
    result = teach(ws, server, "answers", concurrency=3)
    assert result.exit_code == 0, result.output
    answers = records(ws, "answers.jsonl")
    assert sorted(a["question_id"] for a in answers) == sorted(question_ids(ws))
    assert {a["author"] for a in answers} == {"teacher:teacher-test"}
    load_bank(get_subject("physics"), ws / "physics" / "bank", require_answers=True)  # what the teacher wrote passes bank validate
    assert all(seen.stream for seen in server.requests)  # streamed by default
    assert 1 < server.max_in_flight <= 3  # concurrent, and bounded
    assert set(server.completed.values()) == {1} and len(server.completed) == 8
    assert "8          8         0" in result.output  # questions, answered, rejected

    again = teach(ws, server, "answers")
    assert again.exit_code == 0 and "every question has a gold answer" in again.output
    assert len(server.requests) == 8


@pytest.mark.parametrize("stream", [True, False])
def test_reasoning_is_kept_apart_from_the_answer(tmp_path, server, stream):
    ws = make_bank(tmp_path, alevel_mcq=2)
    server.then(srv.ok(reasoning="First I recall s = (u + v)t / 2."), srv.ok(think="Let me think about the options."))
    assert teach(ws, server, "answers", stream=stream, concurrency=1).exit_code == 0
    answers = records(ws, "answers.jsonl")
    assert sorted(a["reasoning"] for a in answers) == ["First I recall s = (u + v)t / 2.", "Let me think about the options."]
    assert all("think" not in a["text"] and "recall" not in a["text"] for a in answers)
    assert {seen.stream for seen in server.requests} == {stream}


def test_split_reasoning_handles_what_servers_send():
    assert split_reasoning("<think>a</think>\nAnswer: B") == ("Answer: B", "a")
    assert split_reasoning("Answer: B", "r") == ("Answer: B", "r")
    assert split_reasoning("thinking without an opening tag</think>Answer: C") == ("Answer: C", "thinking without an opening tag")
    assert split_reasoning("<think>cut off while thinking") == ("", "cut off while thinking")
    assert split_reasoning("plain") == ("plain", None)


def test_429_waits_for_retry_after_and_errors_timeouts_malformed_replies_are_retried(tmp_path, server):
    ws = make_bank(tmp_path, alevel_mcq=1)
    server.then(srv.rate_limited(retry_after=0.5), srv.error(500), srv.error(503), srv.malformed(), srv.hang())
    result = teach(ws, server, "answers", timeout=1)
    assert result.exit_code == 0, result.output
    assert len(records(ws, "answers.jsonl")) == 1
    # One retry layer: each failure cost exactly one request (the client's own retries are off).
    assert [seen.outcome for seen in server.requests] == ["rate-limited", "error", "error", "malformed", "hang", "answered"]
    assert server.requests[1].at - server.requests[0].at >= 0.5  # Retry-After honoured
    assert "failed attempts: 429 x1, 500 x1, 503 x1, malformed x1, timeout x1" in result.output
    errors = [e for e in log_entries(ws) if "error" in e]
    assert len(errors) == 5 and len(log_entries(ws)) == 6


def test_a_malformed_stream_and_a_non_streamed_malformed_body_are_retried(tmp_path, server):
    ws = make_bank(tmp_path, alevel_mcq=1, igcse_mcq=1)
    server.then(srv.malformed())
    assert teach(ws, server, "answers", stream=True, concurrency=1).exit_code == 0
    server.then(srv.malformed())
    (ws / "physics" / "bank" / "answers.jsonl").unlink()
    assert teach(ws, server, "answers", stream=False, concurrency=1, max_tokens=999).exit_code == 0  # other parameters: new requests
    assert server.outcomes()["malformed"] == 2 and len(records(ws, "answers.jsonl")) == 2


def test_invalid_replies_are_asked_again_with_the_reason_then_rejected(tmp_path, server):
    ws = make_bank(tmp_path, alevel_mcq=3, alevel_structured=1)
    mcq = [q for q in records(ws, "questions.jsonl") if q.get("options")]
    structured_stem = next(q["stem"] for q in records(ws, "questions.jsonl") if not q.get("options"))

    def reply(messages):
        prompt = messages[-1]["content"]
        retried = "Your previous answer was rejected" in prompt
        if mcq[0]["stem"] in prompt:  # empty at first; fine when told why
            return srv.default_reply(messages) if retried else ""
        if mcq[1]["stem"] in prompt:  # always the wrong option
            wrong = next(k for k in mcq[1]["options"] if k != mcq[1]["key"])
            return srv.default_reply(messages).replace(f"Answer: {mcq[1]['key']}", f"Answer: {wrong}")
        if mcq[2]["stem"] in prompt:  # a DIAGRAM marker never closed
            return srv.default_reply(messages) + "\n(DIAGRAM: a graph of velocity against time"
        if structured_stem in prompt:  # far too long
            return " ".join(["energy"] * 5000)
        raise AssertionError("unexpected prompt")

    server.reply = reply
    result = teach(ws, server, "answers", concurrency=2)
    assert result.exit_code == 0, result.output
    assert [a["question_id"] for a in records(ws, "answers.jsonl")] == [mcq[0]["id"]]
    rejects = {r["question_id"]: r for r in records(ws, "answer-rejects.jsonl")}
    assert len(rejects) == 3 and all(len(r["reasons"]) == 2 and len(r["keys"]) == 2 for r in rejects.values())
    assert "does not commit to the key" in rejects[mcq[1]["id"]]["reasons"][0]
    assert "marker is malformed" in rejects[mcq[2]["id"]]["reasons"][0]
    structured = next(r for r in rejects.values() if r["type"] == "alevel-structured")
    assert structured["reasons"][0].startswith("5000 words; a alevel-structured answer has 80 to 450")
    retry_prompts = [seen.prompt for seen in server.requests if "previous answer was rejected" in seen.prompt]
    assert len(retry_prompts) == 4 and any("It was rejected: the answer is empty" in p for p in retry_prompts)
    assert len(server.requests) == 8

    again = teach(ws, server, "answers")  # rejects are not asked for again...
    assert "nothing to ask: 1 answered, 3 rejected" in again.output and "--retry-rejects asks for the rejected ones again" in again.output
    assert len(server.requests) == 8
    teach(ws, server, "answers", "--retry-rejects")  # ...unless asked to, and then afresh, not from the log
    assert len(server.requests) == 14 and len(records(ws, "answer-rejects.jsonl")) == 6


def test_when_only_rejects_are_left_it_counts_them_and_says_how_to_retry(tmp_path, server):
    ws = make_bank(tmp_path, alevel_mcq=3)
    first = records(ws, "questions.jsonl")[0]["stem"]
    server.reply = lambda messages: srv.default_reply(messages) if first in messages[-1]["content"] else ""  # two always empty
    assert teach(ws, server, "answers").exit_code == 0
    assert len(records(ws, "answers.jsonl")) == 1 and len(records(ws, "answer-rejects.jsonl")) == 2
    again = teach(ws, server, "answers")
    assert again.exit_code == 0
    assert "every question has a gold answer" not in again.output
    assert "1 answered, 2 rejected" in again.output and "--retry-rejects" in again.output, again.output


def test_a_question_past_its_deadline_is_left_for_the_next_run(tmp_path, server):
    ws = make_bank(tmp_path, alevel_mcq=1)
    server.hold_after(0)  # never answers
    result = teach(ws, server, "answers", timeout=0.3, deadline=1)
    assert result.exit_code == 1 and "1 questions got no reply in time; run the same command again" in result.output
    assert "no reply within the 0.3 s request timeout" in result.output
    assert not records(ws, "answers.jsonl") and not records(ws, "answer-rejects.jsonl")
    server.release()
    assert teach(ws, server, "answers").exit_code == 0 and len(records(ws, "answers.jsonl")) == 1


def test_the_budget_stops_a_run_and_the_next_run_goes_on(tmp_path, server):
    ws = make_bank(tmp_path, alevel_mcq=3)
    result = teach(ws, server, "answers", budget_requests=2, concurrency=1)
    assert result.exit_code == 1 and "the budget is spent (2 requests of 2" in result.output and "1 questions left" in result.output
    assert len(records(ws, "answers.jsonl")) == 2
    assert teach(ws, server, "answers", budget_requests=2).exit_code == 0
    assert len(records(ws, "answers.jsonl")) == 3 and len(server.requests) == 3


def test_dry_run_shows_prompts_and_an_estimate_and_sends_nothing(tmp_path, server):
    ws = make_bank(tmp_path, alevel_mcq=2, alevel_planning=1)
    result = teach(ws, server, "answers", "--dry-run", price_input=1, price_output=2)
    assert result.exit_code == 0, result.output
    assert "##### alevel-mcq: the prompt of the first of 2 questions" in result.output and "=== user ===" in result.output
    assert "##### alevel-planning" in result.output and "Nothing was sent." in result.output
    assert not server.requests
    teach(ws, server, "answers", "--limit", "1", "--type", "alevel-mcq")
    dry = teach(ws, server, "answers", "--dry-run")
    assert [line.split()[:3] for line in dry.output.splitlines() if line.startswith("alevel-mcq ")] == [["alevel-mcq", "1", "0"]]


def test_without_a_workspace_bank_it_says_to_collect_first(tmp_path, server):
    result = teach(tmp_path / "empty", server, "answers")
    assert result.exit_code == 1 and "tutor --subject physics collect import FILE" in result.output


def test_the_key_comes_from_the_environment_and_is_never_written(tmp_path, server):
    ws = make_bank(tmp_path, alevel_mcq=2)
    secret = "sk-test-4f9c2e7d1b"
    missing = teach(ws, server, "answers", api_key_env="MY_TEACHER_KEY")
    assert missing.exit_code == 1 and "export MY_TEACHER_KEY=..." in missing.output
    server.then(srv.error(401))  # the server quotes the key back, as OpenAI's does
    refused = teach(ws, server, "answers", api_key_env="MY_TEACHER_KEY", env={"MY_TEACHER_KEY": secret})
    assert refused.exit_code == 1 and "refused the request" in refused.output and "401" in refused.output
    result = teach(ws, server, "answers", api_key_env="MY_TEACHER_KEY", env={"MY_TEACHER_KEY": secret})
    assert result.exit_code == 0
    assert {seen.authorization for seen in server.requests} == {f"Bearer {secret}"}
    shown = teach(ws, server, "config", api_key_env="MY_TEACHER_KEY", env={"MY_TEACHER_KEY": secret}).output
    assert json.loads(shown)["api_key"] == "set in MY_TEACHER_KEY"
    for text in [missing.output, refused.output, result.output, shown] + [p.read_text() for p in ws.rglob("*") if p.is_file()]:
        assert secret not in text


def test_torn_last_lines_are_cut_off_and_nothing_is_paid_for_twice(tmp_path, server):
    ws = make_bank(tmp_path, alevel_mcq=3)
    assert teach(ws, server, "answers").exit_code == 0
    # A crash mid-write: the last answer never fully written, half a reply at the end of the log.
    answers = ws / "physics" / "bank" / "answers.jsonl"
    lines = answers.read_bytes().splitlines(keepends=True)
    answers.write_bytes(b"".join(lines[:2]) + lines[2][:40])
    log = Workspace(ws).teacher_log
    log.write_bytes(log.read_bytes() + b'{"key": "abc", "content": "half a rep')
    result = teach(ws, server, "answers")
    assert result.exit_code == 0, result.output
    assert len(server.requests) == 3  # the third answer came back from the log, free
    assert sorted(a["question_id"] for a in records(ws, "answers.jsonl")) == sorted(question_ids(ws))
    assert log.read_bytes().endswith(b"}\n") and len(log_entries(ws)) == 3
    load_bank(get_subject("physics"), ws / "physics" / "bank", require_answers=True)


# --- a real process, killed ---------------------------------------------------------------------------


def tutor_process(ws, server, **settings):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUTOR_")} | teacher_env(server, **settings)
    command = [sys.executable, "-m", "tutor.cli", "--workspace", str(ws), "--subject", "physics", "teach", "answers"]
    return command, env


def wait_for(condition, seconds=30):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_kill_9_mid_run_then_resume_answers_everything_exactly_once(tmp_path, server):
    ws = make_bank(tmp_path, alevel_mcq=6, igcse_mcq=4)
    server.hold_after(4)  # four replies, then every request hangs: the process is killed with requests in flight
    command, env = tutor_process(ws, server, concurrency=3, timeout=60)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Four replies logged, and all three slots hung: the process can send nothing more.
    wait_for(lambda: len(log_entries(ws)) == 4 and len(server.requests) == 7)
    process.kill()  # SIGKILL: no clean-up of any kind
    process.wait(timeout=10)
    process.stdout.close(), process.stderr.close()
    first_run = len(server.requests)
    assert process.returncode == -signal.SIGKILL and first_run == 7
    assert len(records(ws, "answers.jsonl")) <= 4

    server.release()
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    answers = records(ws, "answers.jsonl")
    assert sorted(a["question_id"] for a in answers) == sorted(question_ids(ws))  # every question answered exactly once
    load_bank(get_subject("physics"), ws / "physics" / "bank", require_answers=True)
    # No prompt was answered twice, and the resumed run asked only for the six the first run never got.
    assert len(server.completed) == 10 and set(server.completed.values()) == {1}
    assert len(server.requests) - first_run == 6
    assert sum(1 for e in log_entries(ws) if "error" not in e) == 10


def test_ctrl_c_stops_cleanly_and_the_next_run_goes_on(tmp_path, server):
    ws = make_bank(tmp_path, alevel_mcq=5)
    server.hold_after(2)
    command, env = tutor_process(ws, server, concurrency=2, timeout=60)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=hears_ctrl_c)
    wait_for(lambda: len(log_entries(ws)) == 2 and len(server.requests) == 4)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130 and "interrupted after" in err and "run the same command to go on" in err, (out, err)
    assert "Traceback" not in err
    server.release()
    assert subprocess.run(command, env=env, capture_output=True, timeout=60).returncode == 0
    assert sorted(a["question_id"] for a in records(ws, "answers.jsonl")) == sorted(question_ids(ws))
    assert set(server.completed.values()) == {1}


# --- a slow, missing or refusing teacher: what it costs, and what it says ----------------------------


@pytest.mark.parametrize("retry_timeouts", [None, 0])  # None: the default, 1
def test_a_timed_out_request_is_re_sent_at_most_retry_timeouts_times(tmp_path, server, retry_timeouts):
    ws = make_bank(tmp_path, alevel_mcq=2)
    server.hold_after(0)  # replies take far longer than the timeout: a provider that may bill every body it got
    settings = {"retry_timeouts": retry_timeouts} if retry_timeouts is not None else {}
    result = teach(ws, server, "answers", timeout=0.3, deadline=10, concurrency=1, **settings)
    sent = len(server.requests)
    assert sent == 2 * (1 + (1 if retry_timeouts is None else retry_timeouts)), result.output
    assert result.exit_code == 1 and "stopped" not in result.output  # too few attempts to judge the teacher as a whole
    assert "not re-sent, to avoid paying twice" in result.output
    assert "teacher.timeout" in result.output and "teacher.retry_timeouts" in result.output
    assert f"{sent} requests may have been billed without a saved reply" in result.output
    assert not records(ws, "answers.jsonl")


def test_a_run_whose_requests_mostly_time_out_stops_and_says_so(tmp_path, server):
    ws = make_bank(tmp_path, alevel_mcq=6, igcse_mcq=4)
    server.hold_after(0)
    result = teach(ws, server, "answers", timeout=0.3, deadline=10, concurrency=2)
    sent = len(server.requests)
    # Without the stop: up to 10 x (1 + retry_timeouts) = 20 bodies. With it: the stop comes at the 5th
    # finished attempt, and only the one request still in flight then was sent besides.
    assert sent <= 5 + 1, result.output
    assert result.exit_code == 1
    stop = next(line for line in result.output.splitlines() if line.startswith("error: stopped: "))
    assert "most requests time out" in stop and server.base_url in stop and "teacher.timeout" in stop and "questions left" in stop
    assert f"{sent} requests may have been billed without a saved reply" in result.output
    server.release()
    assert teach(ws, server, "answers").exit_code == 0 and len(records(ws, "answers.jsonl")) == 10  # the next run goes on


def closed_port() -> int:
    import socket

    with socket.socket() as sock:  # bound, never listening: connecting is refused
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_teacher_that_is_down_stops_the_run_within_seconds_naming_the_url(tmp_path):
    ws = make_bank(tmp_path, alevel_mcq=3)
    url = f"http://127.0.0.1:{closed_port()}/v1"
    # Default settings (timeout 600, deadline 1800, backoff 1): only the teacher is named.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUTOR_")} | {
        "TUTOR_TEACHER_PRESET": "local", "TUTOR_TEACHER_MODEL": "teacher-test", "TUTOR_TEACHER_BASE_URL": url}
    command = [sys.executable, "-m", "tutor.cli", "--workspace", str(ws), "--subject", "physics", "teach", "answers"]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("a teacher that is down looked like a hang: nothing within 60 s")
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert url in lines[0] and "teacher.base_url" in lines[0] and "TUTOR_TEACHER_BASE_URL" in lines[0]
    assert not records(ws, "answers.jsonl")


def test_a_black_holed_address_fails_on_connect_not_after_the_request_timeout(tmp_path):
    import socket

    # A listening socket whose backlog is full and never accepted from: the kernel drops further
    # connection attempts, as a firewall that silently drops packets does.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.settimeout(0.2)
        try:
            filler.connect(listener.getsockname())
        except OSError:
            pass
        fillers.append(filler)
    try:
        ws = make_bank(tmp_path, alevel_mcq=2)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TUTOR_")} | {
            "TUTOR_TEACHER_PRESET": "local", "TUTOR_TEACHER_MODEL": "teacher-test", "TUTOR_TEACHER_BASE_URL": url,
            "TUTOR_TEACHER_TIMEOUT": "2"}
        command = [sys.executable, "-m", "tutor.cli", "--workspace", str(ws), "--subject", "physics", "teach", "answers"]
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("a black-holed teacher address looked like a hang: nothing within 60 s")
    finally:
        for sock in (*fillers, listener):
            sock.close()
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "ConnectTimeout" in done.stderr, done.stderr
    assert url in done.stderr and "TUTOR_TEACHER_BASE_URL" in done.stderr


def test_run_items_retrieves_every_failure_when_several_fail_at_once():
    import asyncio
    import gc

    from tutor.llm_client import run_items

    unretrieved, raised = [], []

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: unretrieved.append(context["message"]))
        gate = asyncio.Event()
        loop.call_later(0.05, gate.set)  # all four wake in the same step, so they finish together

        async def handle(item):
            await gate.wait()
            raise RuntimeError(f"item {item}")

        try:
            await run_items(range(4), handle, 4, lambda: False)
        except RuntimeError as err:
            raised.append(str(err))
        gc.collect()  # finished tasks are freed here: one whose exception nobody retrieved is reported now

    asyncio.run(main())
    gc.collect()
    assert len(raised) == 1 and unretrieved == []


def test_a_401_with_requests_in_flight_is_one_line_and_no_task_tracebacks(tmp_path, server):
    ws = make_bank(tmp_path, alevel_mcq=6, igcse_mcq=2)
    server.always(srv.error(401)).pause()
    command, env = tutor_process(ws, server, concurrency=8)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(server.requests) == 8)
    server.resume()  # eight 401s at once: several requests fail together
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1 and not out.strip()
    assert err.strip().splitlines() == [err.strip()], err  # exactly one line
    assert err.startswith("error: the teacher refused the request: ") and "401" in err
    assert "Task exception was never retrieved" not in err and "Traceback" not in err


# --- diagrams ---------------------------------------------------------------------------------------


BROKEN = "```latex\n\\begin{tikzpicture}\n  \\draww (0,0) -- (1,1);\n\\end{tikzpicture}\n```"


def test_diagram_code_is_compiled_repaired_and_only_what_compiles_is_kept(tmp_path, server):
    ws = tmp_path / "ws"
    requests = [DiagramRequest(description=d, format="tikz", question_ids=["q1"]) for d in
                ("A ball on a slope, first try.", "A spring and a mass, needs one repair.", "A pulley that never compiles.")]
    Workspace(ws).diagram_requests("physics").parent.mkdir(parents=True)
    Workspace(ws).diagram_requests("physics").write_text("".join(r.model_dump_json() + "\n" for r in requests))

    def reply(messages):
        prompt = "\n".join(m["content"] for m in messages)
        if "first try" in prompt or ("needs one repair" in prompt and "did not compile" in prompt):
            return srv.default_reply(messages)  # the format's own example: it compiles
        return BROKEN

    server.reply = reply
    result = teach(ws, server, "diagrams", repair_rounds=1)
    assert result.exit_code == 0, result.output
    assert "all     3         1/3 (33%)  2/3 (67%)" in result.output
    diagrams = records(ws, "diagrams.jsonl")
    assert sorted(d["description"] for d in diagrams) == ["A ball on a slope, first try.", "A spring and a mass, needs one repair."]
    assert all(d["author"] == "teacher:teacher-test" and "\\begin{tikzpicture}" in d["code"] and d["question_id"] == "q1" for d in diagrams)
    attempts = {a["description"]: a for a in records(ws, "diagram-attempts.jsonl")}
    assert [r["ok"] for r in attempts["A spring and a mass, needs one repair."]["rounds"]] == [False, True]
    never = attempts["A pulley that never compiles."]
    assert not never["compiled"] and [r["ok"] for r in never["rounds"]] == [False, False]
    assert "Undefined control sequence" in never["rounds"][0]["error"]
    repair = [seen.prompt for seen in server.requests if "did not compile" in seen.prompt]
    assert len(repair) == 2 and "line 2 of your code" in repair[0] and "\\draww" in repair[0]
    assert len(server.requests) == 5

    again = teach(ws, server, "diagrams")
    assert "nothing to ask: 2 compiled, 1 failed to compile" in again.output
    assert "--retry-failed asks for the failed ones again" in again.output
    assert len(server.requests) == 5
    dry = teach(ws, server, "diagrams", "--dry-run", "--retry-failed")
    assert "##### tikz: the prompt of the first of 1 requests" in dry.output and "A pulley that never compiles." in dry.output
    assert len(server.requests) == 5


def test_when_only_failed_diagrams_are_left_it_counts_them_and_says_how_to_retry(tmp_path, server):
    ws = tmp_path / "ws"
    requests = [DiagramRequest(description=d, format="tikz") for d in ("A ball on a slope.", "A pulley.", "A lever.")]
    Workspace(ws).diagram_requests("physics").parent.mkdir(parents=True)
    Workspace(ws).diagram_requests("physics").write_text("".join(r.model_dump_json() + "\n" for r in requests))
    server.reply = lambda messages: srv.default_reply(messages) if "A ball on a slope." in messages[-1]["content"] else BROKEN
    assert teach(ws, server, "diagrams", repair_rounds=0).exit_code == 0
    again = teach(ws, server, "diagrams")
    assert again.exit_code == 0
    assert "every diagram request has compiled code" not in again.output
    assert "1 compiled, 2 failed" in again.output and "--retry-failed" in again.output, again.output


def test_diagrams_need_requests_from_diagram_extract(tmp_path, server):
    result = teach(tmp_path / "ws", server, "diagrams")
    assert result.exit_code == 1 and "diagram extract" in result.output


# --- configuration ------------------------------------------------------------------------------------


def test_presets_the_config_file_and_the_environment(tmp_path):
    from tutor.errors import ConfigError
    from tutor.teach import teacher_config

    ws = Workspace(tmp_path)
    cfg = teacher_config(ws)
    assert (cfg.base_url, cfg.model, cfg.api_key_env) == ("https://api.deepseek.com", "deepseek-reasoner", "DEEPSEEK_API_KEY")
    (tmp_path / "tutor.toml").write_text('[teacher]\npreset = "openai"\nconcurrency = 8\n')
    cfg = teacher_config(ws)
    assert (cfg.model, cfg.api_key_env, cfg.concurrency, cfg.timeout) == ("gpt-4.1", "OPENAI_API_KEY", 8, 600.0)
    cfg = teacher_config(ws, {"TUTOR_TEACHER_PRESET": "deepseek-chat", "TUTOR_TEACHER_CONCURRENCY": "4"})
    assert (cfg.model, cfg.concurrency) == ("deepseek-chat", 4)
    with pytest.raises(ConfigError, match="TUTOR_TEACHER_PRESET: unknown preset 'gpt'; "
                                          "valid: deepseek-chat, deepseek-reasoner, local, ollama, openai"):
        teacher_config(ws, {"TUTOR_TEACHER_PRESET": "gpt"})
    with pytest.raises(ConfigError, match="no teacher model: the 'local' preset names none"):
        teacher_config(ws, {"TUTOR_TEACHER_PRESET": "local"})
    (tmp_path / "tutor.toml").write_text('[teacher]\nconcurency = 8\n')
    with pytest.raises(ConfigError, match="teacher.concurency: Extra inputs are not permitted"):
        teacher_config(ws)
    result = CliRunner().invoke(cli, ["-w", str(tmp_path / "other"), "config"])
    as_written = {**{k: None for k in TeacherConfig.model_fields}, "preset": "deepseek-reasoner"}  # defaults come in resolve()
    assert json.loads(result.output)["config"]["teacher"] == as_written


# --- the services teach shares with the other stages --------------------------------------------------


@pytest.mark.parametrize("headers, expected", [
    ({"retry-after": "7"}, 7.0),
    ({"retry-after": "1.5"}, 1.5),
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # OpenAI's milliseconds win
    ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),  # a bad one falls back on Retry-After
    ({"retry-after": "-4"}, 0.0),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past: now
    ({"retry-after": "soon"}, None),
    ({"retry-after": ""}, None),
    ({"retry-after": "inf"}, None),
    ({"retry-after": "nan"}, None),
    ({"retry-after": "Mon, 99 Foo 2015 07:28:00 GMT"}, None),
    ({}, None),
    (None, None),
])
def test_retry_after_reads_seconds_http_dates_and_milliseconds(headers, expected):
    from tutor.llm_client import retry_after

    assert retry_after(headers) == expected


def test_retry_after_in_the_future_and_in_any_letter_case():
    from email.message import Message
    from email.utils import formatdate

    from tutor.llm_client import retry_after

    headers = Message()  # what urllib's HTTPError carries: names in any case
    headers["Retry-After"] = formatdate(time.time() + 30, usegmt=True)
    assert 28 <= retry_after(headers) <= 30


def test_workspace_paths_are_spelt_once():
    """The teacher's log and the diagram requests are named by the Workspace; no other source spells them out."""
    root = Path(__file__).resolve().parents[1]
    sources = [p for folder in ("core", "bench") for p in (root / folder).rglob("*.py") if p.name != "workspace.py"]
    for spelt in ("responses.jsonl", "diagram-requests.jsonl", '/ "teacher"', '/ "scrape"', '/ "diagrams"'):
        assert [str(p.relative_to(root)) for p in sources if spelt in p.read_text(encoding="utf-8")] == [], spelt
    ws = Workspace(Path("w"))
    assert ws.teacher_log == Path("w/cache/teacher/responses.jsonl")
    assert ws.diagram_requests("physics") == Path("w/physics/diagram-requests.jsonl")


def test_bank_validation_teach_and_the_format_reward_apply_one_answer_rule(tmp_path):
    """One rule (answers.answer_flaws): what bank validation reports, teach rejects and format-length marks down."""
    from tutor.default_plugins.rewards import format_length
    from tutor.errors import ValidationFailed
    from tutor.jsonl import write_jsonl
    from tutor.models import GoldAnswer, RewardBatch
    from tutor.teach import check_answer

    kit = get_subject("physics")
    bank = load_bank(kit, kit.subject.bank)
    mcq = next(q for q in bank.questions if q.type == "alevel-mcq")
    gold = bank.answers_to(mcq.id)[0].text
    wrong = next(letter for letter in mcq.options if letter != mcq.key)
    cases = {  # answer -> (a flaw every judge sees, one only the key judges see)
        "good": (gold, False),
        "too long": (gold.replace(f"Answer: {mcq.key}", " ".join(["word"] * 400) + f"\nAnswer: {mcq.key}"), True),
        "a diagram where none belongs": (gold.replace(f"Answer: {mcq.key}", f"(DIAGRAM: a graph of stress.)\nAnswer: {mcq.key}"), True),
        "the wrong key": (gold.replace(f"Answer: {mcq.key}", f"Answer: {wrong}"), False),
    }
    qtype = kit.types[mcq.type]
    for name, (text, formatting) in cases.items():
        folder = tmp_path / name
        write_jsonl(folder / "questions.jsonl", [mcq])
        write_jsonl(folder / "answers.jsonl", [GoldAnswer(question_id=mcq.id, text=text, author="test")])
        try:
            load_bank(kit, folder)
            problems = []
        except ValidationFailed as err:
            problems = [p.message for p in err.problems]
        reason = check_answer(mcq, qtype, text, "stop")
        (score,) = format_length(RewardBatch("answer", [text], ["q"], [mcq], [""], [0], kit.subject))
        assert (reason is not None) == bool(problems) == (name != "good"), name
        assert (reason or "") == "; ".join(problems), name  # the same words: one rule, phrased once
        assert (score < 1.0) == formatting, (name, score)
