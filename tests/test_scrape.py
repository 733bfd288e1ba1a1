"""Scraping a real (fixture) question-bank site on 127.0.0.1: plain HTTP, and Selenium with Chromium."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bank_site import PASSWORD, USER, BankSite
from cli_runner import hears_ctrl_c
from click.testing import CliRunner
from tutor.cli import cli
from tutor.scrape import html_to_text

MCQ_SITE = """
name = "fixture-mcq"
start = "{start}"
delay = {delay}
timeout = {timeout}
[selectors]
question = ".q"
stem = ".stem"
option = ".opts li"
key = ".key"
key_attribute = "data-key"
{topic}
next = "a.next"
[defaults]
type = "{type}"
{default_topic}
"""


def site_file(tmp_path, site, path="/mcq/1.html", delay=0.05, timeout=5, subject="toy", extra=""):
    toy = subject == "toy"
    text = MCQ_SITE.format(start=site.url(path), delay=delay, timeout=timeout, topic='topic = ".topic"' if toy else "",
                           type="mcq" if toy else "alevel-mcq", default_topic="" if toy else 'topic = "mechanics"')
    file = tmp_path / "site.toml"
    file.write_text(text.replace("[selectors]", extra + "\n[selectors]") if extra else text)
    return file


def scrape(ws, site_toml, subject="toy", **env):
    return CliRunner().invoke(cli, ["--workspace", str(ws), "--subject", subject, "collect", "scrape", str(site_toml)], env=env or None)


def bank(ws, subject="toy", name="questions.jsonl"):
    path = ws / subject / "bank" / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def summary(output):
    lines = output.splitlines()
    return dict(zip(lines[0].split(), lines[2].split()))


def test_static_pages_with_pagination_math_images_and_a_flaky_page(toy, tmp_path):
    with BankSite() as site:
        result = scrape(tmp_path / "ws", site_file(tmp_path, site))
        assert result.exit_code == 0, result.output
        assert site.gets("/robots.txt") == 1 and site.gets("/mcq/2.html") == 2  # a 500, then OK
    assert summary(result.output)["imported"] == "6"
    questions = bank(tmp_path / "ws")
    stems = [q["stem"] for q in questions]
    assert stems[:3] == [
        "Which option is the second one?",
        "A car accelerates at 2 m s^-2. Which expression gives $v = u + at$ correctly?",
        "Which value of $E = mc^2$ is largest?",
    ]
    assert stems[3] == "Which option comes first?"  # the hidden instruction is gone
    assert not any("nstructions" in json.dumps(q) for q in questions)
    first = questions[0]
    assert first["options"] == {"A": "one", "B": "two", "C": "three", "D": "four"} and first["key"] == "B"
    assert first["source"]["url"] == site.url("/mcq/1.html") + "#1" and first["source"]["name"] == "fixture-mcq"
    assert first["source"]["collected_at"].startswith(time.strftime("%Y-"))
    image = tmp_path / "ws" / "toy" / "bank" / first["images"][0]
    assert first["images"][0].startswith("images/") and image.read_bytes()[:4] == b"\x89PNG"


def test_requests_to_one_host_are_spaced_by_the_delay(toy, tmp_path):
    with BankSite() as site:
        site.flaky = {}
        assert scrape(tmp_path / "ws", site_file(tmp_path, site, delay=0.3)).exit_code == 0
        times = [t for t, _, _ in site.log]
    assert len(times) >= 5
    assert min(b - a for a, b in zip(times, times[1:])) >= 0.29


def test_the_delay_counts_from_the_end_of_a_slow_answer(toy, tmp_path):
    """A request that reached the site late must not let the next arrive sooner than the delay after it ends."""
    with BankSite() as site:
        site.flaky, site.slow = {}, 0.4
        assert scrape(tmp_path / "ws", site_file(tmp_path, site, delay=0.3)).exit_code == 0
        times = [t for t, method, path in site.log if method == "GET" and path != "/robots.txt"]
    assert len(times) >= 4
    assert min(b - a for a, b in zip(times, times[1:])) >= 0.4 + 0.3 - 0.01  # answering, then the delay


def test_429_is_retried_after_retry_after(toy, tmp_path):
    with BankSite() as site:
        site.flaky, site.rate_limited = {}, {"/mcq/3.html": 1}
        assert scrape(tmp_path / "ws", site_file(tmp_path, site)).exit_code == 0
        hits = [t for t, _, p in site.log if p == "/mcq/3.html"]
    assert len(hits) == 2 and hits[1] - hits[0] >= 0.99  # the server asked for 1 s


def test_429_is_retried_after_a_retry_after_date(toy, tmp_path):
    """Retry-After may be an HTTP date (RFC 9110); scrape reads it as teach does (llm_client.retry_after)."""
    from email.utils import formatdate

    with BankSite() as site:
        site.flaky, site.rate_limited = {}, {"/mcq/3.html": 1}
        site.retry_after = formatdate(time.time() + 4, usegmt=True)  # 3 to 4 s from now: dates are to the second
        assert scrape(tmp_path / "ws", site_file(tmp_path, site)).exit_code == 0
        hits = [t for t, _, p in site.log if p == "/mcq/3.html"]
    assert len(hits) == 2 and hits[1] - hits[0] >= 2.5  # not the 1 s backoff of a header it could not read


@pytest.mark.parametrize("mode, message", [("503", "robots.txt answered 503"), ("hang", "robots.txt did not answer within 1 s")])
def test_robots_txt_that_fails_stops_the_crawl(toy, tmp_path, mode, message):
    with BankSite() as site:
        site.robots = mode
        result = scrape(tmp_path / "ws", site_file(tmp_path, site, timeout=1))
        assert [p for _, _, p in site.log] == ["/robots.txt"]
    assert result.exit_code == 1 and message in result.output
    assert bank(tmp_path / "ws") == []


def test_robots_disallow_is_honoured(toy, tmp_path):
    with BankSite() as site:
        result = scrape(tmp_path / "ws", site_file(tmp_path, site, path="/private/q.html"))
        assert "/private/q.html" not in [p for _, _, p in site.log]
    assert result.exit_code == 1 and "is disallowed by robots.txt" in result.output


def test_a_page_that_never_loads_times_out(toy, tmp_path):
    with BankSite() as site:
        result = scrape(tmp_path / "ws", site_file(tmp_path, site, path="/hang.html", timeout=1))
    assert result.exit_code == 1 and "hang.html did not answer within 1 s" in result.output


def test_visible_instructions_are_rejected_not_imported(toy, tmp_path):
    with BankSite() as site:
        result = scrape(tmp_path / "ws", site_file(tmp_path, site, path="/injected.html"))
    assert summary(result.output)["rejected"] == "1" and bank(tmp_path / "ws") == []
    (reject,) = bank(tmp_path / "ws", name="rejects.jsonl")
    assert reject["reason"].startswith("the text reads as instructions to a model")


def test_html_to_text_drops_what_a_reader_cannot_see():
    from bs4 import BeautifulSoup

    html = ('<div>Visible <b>text</b><script>alert(1)</script><style>p{}</style><!-- note -->'
            '<span hidden>h1</span><span aria-hidden="true">h2</span><span style="visibility: hidden">h3</span>'
            '<span style="font-size:0">h4</span> H<sub>2</sub>O, x<sup>2</sup>, '
            '<math><annotation encoding="application/x-tex">\\frac{1}{2}</annotation></math></div>')
    assert html_to_text(BeautifulSoup(html, "html.parser")) == "Visible text H_2O, x^2, $\\frac{1}{2}$"


def test_ctrl_c_then_resume_loses_nothing_and_doubles_nothing(tmp_path):
    """A real `tutor collect scrape` process, interrupted with SIGINT between pages, then run again."""
    ws = tmp_path / "ws"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUTOR_")}
    with BankSite() as site:
        site.flaky = {}
        toml = site_file(tmp_path, site, delay=1.0, subject="physics")
        command = [sys.executable, "-m", "tutor.cli", "--workspace", str(ws), "--subject", "physics", "collect", "scrape", str(toml)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=hears_ctrl_c)
        deadline = time.monotonic() + 60
        while site.gets("/mcq/2.html") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # page 2 is in the cache; the scraper now waits its 1 s before page 3
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 1 and "run the same command to resume" in err, (out, err)
        assert site.gets("/mcq/3.html") == 0
        resumed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
        assert resumed.returncode == 0, resumed.stderr
        for page in ("/mcq/1.html", "/mcq/2.html", "/mcq/3.html"):
            assert site.gets(page) == 1, page  # collected pages are not fetched again
    questions = bank(ws, "physics")
    assert len(questions) == 6 and len({q["id"] for q in questions}) == 6


# --- Selenium with Debian's Chromium --------------------------------------------------------


def test_javascript_rendered_list_in_the_browser(toy, tmp_path):
    with BankSite() as site:
        toml = site_file(tmp_path, site, path="/js/list.html", extra='browser = true\nwait_for = ".q"')
        result = scrape(tmp_path / "ws", toml)
    assert result.exit_code == 0, result.output
    assert [q["stem"] for q in bank(tmp_path / "ws")] == ["Which option is rendered second?", "Which option is rendered first?"]


STRUCTURED_SITE = """
name = "fixture-members"
start = "{start}"
browser = true
wait_for = ".q"
delay = 0.05
timeout = 10
[login]
url = "{login}"
username_field = "#user"
password_field = "#pass"
submit = "button[type=submit]"
username_env = "BANK_USER"
password_env = "BANK_PASS"
success = "#logged-in"
[selectors]
question = ".q"
stem = ".stem"
part = ".part"
part_label = ".label"
part_text = ".text"
part_marks = ".marks"
mark_point = ".scheme li"
mark_point_part = "data-part"
next = "a.next"
[defaults]
type = "short"
topic = "applications"
"""


def test_login_pagination_and_a_broken_mark_scheme(toy, tmp_path):
    with BankSite() as site:
        toml = tmp_path / "members.toml"
        toml.write_text(STRUCTURED_SITE.format(start=site.url("/members/1.html"), login=site.url("/login.html")))
        missing = scrape(tmp_path / "ws", toml, BANK_USER="", BANK_PASS="")
        assert missing.exit_code == 1 and "set the environment variable(s) BANK_USER, BANK_PASS" in missing.output
        result = scrape(tmp_path / "ws", toml, BANK_USER=USER, BANK_PASS=PASSWORD)
    assert result.exit_code == 0, result.output
    assert summary(result.output)["imported"] == "2" and summary(result.output)["rejected"] == "1"
    first, second = bank(tmp_path / "ws")
    assert [(p["label"], p["marks"]) for p in first["parts"]] == [("a", 1), ("b", 2)] and first["marks"] == 3
    assert first["mark_scheme"]["points"][1] == {"text": "valid answers vary", "part": "b"}
    assert second["stem"] == "A second structured question, on the next page."
    (reject,) = bank(tmp_path / "ws", name="rejects.jsonl")
    assert "part a: marking points offer 1 marks, fewer than 4" in reject["reason"]
    # The credentials reach no file and no output.
    assert PASSWORD not in result.output
    for path in (tmp_path / "ws").rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path


def test_a_page_that_never_finishes_loading_in_the_browser(toy, tmp_path):
    with BankSite() as site:
        toml = site_file(tmp_path, site, path="/hang.html", timeout=2, extra='browser = true\nwait_for = ".q"')
        result = scrape(tmp_path / "ws", toml)
    assert result.exit_code == 1 and "hang.html did not finish loading within 2 s" in result.output


def test_a_site_adapter_in_code_from_the_docs(toy, tmp_path):
    """docs/example/adapters/fixture_js.py, registered as a plugin would be."""
    import importlib.util

    from tutor.plugins import plugin_manager
    from tutor.registry import registry

    path = Path(__file__).resolve().parents[1] / "docs" / "example" / "adapters" / "fixture_js.py"
    spec = importlib.util.spec_from_file_location("fixture_js", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plugin_manager().register(module, name="fixture-js")
    registry.cache_clear()
    try:
        with BankSite() as site:
            toml = tmp_path / "js.toml"
            toml.write_text(f'name = "fixture-js"\nadapter = "fixture-js-data"\nstart = "{site.url("/js/list.html")}"\ndelay = 0.05\n'
                            '[defaults]\ntype = "mcq"\ntopic = "foundations"\n')
            result = scrape(tmp_path / "ws", toml)
    finally:
        plugin_manager().unregister(name="fixture-js")
        registry.cache_clear()
    assert result.exit_code == 0, result.output
    expected = [("Which option is rendered second?", "B"), ("Which option is rendered first?", "A")]
    assert [(q["stem"], q["key"]) for q in bank(tmp_path / "ws")] == expected
