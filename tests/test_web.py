"""The web tutor page (`tutor serve` at /) in headless Debian Chromium, against a real server on the tiny model.

The tiny model writes nonsense, so what a reply renders to is checked by
feeding known text through the page's own reply path (window.tutor.addEntry:
Markdown, maths, DOMPurify, diagram pictures), and through the history kept in
localStorage; streaming and marking go through the real routes. Screenshots of
each state go to $TUTOR_TEST_ARTIFACTS (default <repo>/test-artifacts/web).
"""

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait
from serving import random_adapter, running, tiny_workspace
from tutor.config import ServeConfig

KEY = "web-test-key"
WAIT = 60  # seconds: a slow, shared 2-core machine
ARTIFACTS = Path(os.environ.get("TUTOR_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "test-artifacts" / "web")

# All four maths delimiters, a price that is not maths, and code where `$x$` must stay literal.
KNOWN = r"""Newton's second law: $$F = ma$$

Energy $E = mc^2$ and velocity \(v = u + at\), for a ticket that costs $5 or $10.

\[s = ut + \tfrac{1}{2}at^2\]

A line (DIAGRAM: a straight line through the origin) and `inline $x$ code`:

```
print("$x$ and \(y\)")
```
"""
TIKZ = "\\begin{tikzpicture}\n  \\draw[thick] (0,0) -- (1,1);\n\\end{tikzpicture}"
EVIL = ('<img src=x onerror="window.__pwned=1">\n\n<script>window.__pwned=2</script>\n\n[click me](javascript:window.__pwned=3)\n\n'
        '<math><annotation-xml encoding="text/html"><img src=x onerror="window.__pwned=4"></annotation-xml></math> '
        '<iframe srcdoc="<script>parent.__pwned=5</script>"></iframe> $\\href{javascript:window.__pwned=6}{maths link}$')


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    """(backend, url): `tutor serve` with a random physics adapter, max_tokens 40."""
    from tutor.serve.app import create_app
    from tutor.serve.backend import Backend

    workspace = tiny_workspace(tmp_path_factory.mktemp("web-ws"), tiny_model)
    random_adapter(workspace, tiny_model, "physics", 1)
    backend = Backend.load(workspace, ["physics"], say=lambda _: None)
    with running(create_app(backend, ServeConfig(port=0, max_tokens=40), [KEY]), wait=WAIT) as url:
        yield backend, url
    backend.close()


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium (as tutor.scrape starts it), with the console log kept."""
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
                 "--window-size=1100,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver"))
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    yield driver
    driver.quit()


@pytest.fixture
def page(server, browser):
    """The page, fresh: an empty history, the API key saved, the subjects loaded."""
    _, url = server
    browser.set_window_size(1100, 900)
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    browser.get(f"{url}/")
    browser.execute_script("localStorage.clear(); localStorage.setItem('tutor.key', JSON.stringify(arguments[0]))", KEY)
    browser.refresh()
    wait(browser).until(lambda d: "physics" in [o.get_attribute("value") for o in d.find_elements(By.CSS_SELECTOR, "#subject option")])
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#question option[value]:not([value=''])"))
    browser.get_log("browser")  # start each test with an empty console log
    return browser


def wait(driver):
    return WebDriverWait(driver, WAIT, poll_frequency=0.05)


def shoot(driver, tmp_path, name: str):
    """A screenshot into the test's folder and into the artifacts folder."""
    shot = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(shot))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / shot.name)


def choose(driver, select_id: str, value: str):
    Select(driver.find_element(By.ID, select_id)).select_by_value(value)


def last_reply(driver):
    return driver.find_elements(By.CSS_SELECTOR, "#log .turn .reply .body")[-1]


def severe(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_an_answer_streams_in_then_maths_and_a_diagram_render(page, server, tmp_path, monkeypatch):
    backend, _ = server
    step = backend.scheduler._step

    def slow_step(*args):
        time.sleep(0.05)  # the tiny model would finish before a frame is painted: slowed, the reply visibly grows
        return step(*args)

    monkeypatch.setattr(backend.scheduler, "_step", slow_step)
    choose(page, "mode", "answer")
    choose(page, "question", "")
    assert page.find_element(By.ID, "diagrams").is_selected()  # on by default: without a diagram adapter a marker stays text
    page.find_element(By.ID, "text").send_keys("What is the unit of force?")
    # Record the reply's length at every change of the log, in the page itself: no sampling gaps.
    page.execute_script("""window.__lengths = [];
        new MutationObserver(() => { const b = document.querySelectorAll('#log .reply .body');
            if (b.length) window.__lengths.push(b[b.length - 1].textContent.length); })
          .observe(document.getElementById('log'), {childList: true, subtree: true, characterData: true});""")
    page.find_element(By.ID, "send").click()
    wait(page).until(lambda d: not d.find_element(By.ID, "stop").get_property("disabled"))  # Stop is offered while it streams
    wait(page).until(lambda d: d.find_element(By.ID, "stop").get_property("disabled"))
    lengths = page.execute_script("return window.__lengths")
    grown = sorted({n for n in lengths if n > 1})  # more than the "…" placeholder
    assert len(grown) >= 3, lengths  # the text grew over several paints
    entry = page.execute_script("return JSON.parse(localStorage.getItem('tutor.history')).at(-1)")
    assert entry["result"]["mode"] == "answer" and entry["result"]["text"] == entry["text"] and not entry.get("error")
    assert entry["ask"] == "What is the unit of force?"

    # A known reply through the same path, its diagram drawn by the server's TeX and fetched with the key.
    drawn = page.execute_async_script("""const done = arguments[arguments.length - 1];
        tutor.api('v1/diagrams', {subject: 'physics', code: arguments[0], format: 'tikz'})
          .then((r) => r.json()).then(done, (e) => done({error: String(e)}));""", TIKZ)
    assert drawn.get("ok") and drawn["png"].startswith("/v1/diagrams/"), drawn
    page.execute_script("tutor.addEntry({mode: 'answer', subject: 'physics', ask: 'Newton and a diagram', text: arguments[0],"
                        " result: {text: arguments[0], diagrams: [{description: 'a straight line through the origin', ok: true,"
                        " png: arguments[1]}]}})", KNOWN, drawn["png"])
    reply = last_reply(page)
    wait(page).until(lambda d: d.execute_script("const i = arguments[0].querySelector('figure.diagram img');"
                                                " return i && i.complete && i.naturalWidth > 0", reply))
    assert reply.find_element(By.CSS_SELECTOR, "figure.diagram img").get_attribute("src").startswith("blob:")
    assert "(DIAGRAM:" not in reply.text  # the picture took the marker's place
    assert len(reply.find_elements(By.CSS_SELECTOR, ".katex")) == 4  # $$, $, \( \), \[ \]: four formulas, and $5 or $10 is no maths
    assert len(reply.find_elements(By.CSS_SELECTOR, ".katex-display")) == 2
    assert "costs $5 or $10" in reply.text
    assert [c.text for c in reply.find_elements(By.CSS_SELECTOR, "code")] == ["inline $x$ code", 'print("$x$ and \\(y\\)")']
    assert not reply.find_elements(By.CSS_SELECTOR, "code .katex, pre .katex")
    assert not severe(page)  # no script error, no CSP refusal, no failed load

    button = reply.find_element(By.XPATH, "../button[contains(@class, 'copy')]")
    button.click()
    wait(page).until(lambda d: button.text == "Copied")
    page.execute_script("arguments[0].scrollIntoView()", reply)
    shoot(page, tmp_path, "answered")

    page.refresh()  # the history comes back, rendered the same way
    wait(page).until(lambda d: d.execute_script("const i = document.querySelector('#log figure.diagram img');"
                                                " return i && i.complete && i.naturalWidth > 0"))
    assert len(page.find_elements(By.CSS_SELECTOR, "#log .turn")) == 2
    assert len(last_reply(page).find_elements(By.CSS_SELECTOR, ".katex")) == 4


def test_stop_ends_a_streaming_answer(page, server, monkeypatch):
    backend, _ = server
    step = backend.scheduler._step

    def slow_step(*args):
        time.sleep(0.3)
        return step(*args)

    monkeypatch.setattr(backend.scheduler, "_step", slow_step)
    choose(page, "mode", "explain")
    page.find_element(By.ID, "text").send_keys("Why is the sky blue?")
    page.find_element(By.ID, "send").click()
    wait(page).until(lambda d: len(last_reply(d).text) > 1)  # some text, not the placeholder
    page.find_element(By.ID, "stop").click()
    wait(page).until(lambda d: "[stopped]" in last_reply(d).text)
    assert not page.find_element(By.ID, "send").get_property("disabled")
    entry = page.execute_script("return JSON.parse(localStorage.getItem('tutor.history')).at(-1)")
    assert entry["stopped"] and entry["text"] and "result" not in entry


def gold_answer(subject: str = "physics") -> tuple[str, str]:
    """(question id, gold answer) of the first bank question marked by two or more points, not an MCQ."""
    from tutor.registry import registry

    bank = registry().subjects[subject].bank
    questions = {q["id"]: q for q in map(json.loads, (bank / "questions.jsonl").read_text(encoding="utf-8").splitlines())}
    for answer in map(json.loads, (bank / "answers.jsonl").read_text(encoding="utf-8").splitlines()):
        question = questions.get(answer["question_id"])
        if question and not question.get("options") and len(question["mark_scheme"].get("points", [])) >= 2:
            return question["id"], answer["text"]
    raise AssertionError(f"no structured question with a gold answer in {bank}")


def test_marking_shows_each_point_awarded_or_not(page, tmp_path):
    question_id, answer = gold_answer()
    choose(page, "mode", "mark")
    choose(page, "question", question_id)
    page.find_element(By.ID, "text").send_keys(answer + "\nAnd a sentence that earns nothing.")
    page.find_element(By.ID, "send").click()
    wait(page).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#log table.points tbody tr"))
    reply = last_reply(page)
    rows = reply.find_elements(By.CSS_SELECTOR, "table.points tbody tr")
    assert len(rows) >= 2
    marks = [row.find_element(By.CSS_SELECTOR, "td").text for row in rows]
    assert set(marks) <= {"✓", "✗"} and "✓" in marks  # the gold answer earns points
    awarded = rows[marks.index("✓")]
    assert awarded.find_elements(By.CSS_SELECTOR, "td q")  # with the answer's words that earn it
    assert awarded.find_element(By.CSS_SELECTOR, "td q").text in answer
    total = reply.find_element(By.CSS_SELECTOR, ".total").text
    assert total.endswith("marks") and " / " in total
    assert "Marker: rules" in reply.text
    page.execute_script("arguments[0].scrollIntoView()", reply)
    shoot(page, tmp_path, "marked")


def test_a_study_plan_from_csv_and_json_rows_renders_its_table_and_clear_empties_the_history(page):
    question_id, _ = gold_answer()
    choose(page, "mode", "plan")
    rows = f'question_id,marks,out_of\n{question_id},2,7\n{{"question_id": "{question_id}", "marks": 5, "out_of": 7}}'
    page.find_element(By.ID, "text").send_keys(rows)
    page.find_element(By.ID, "send").click()
    wait(page).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#log .reply table"))
    reply = last_reply(page)
    assert "From 2 results: 7/14 marks" in reply.text  # the header row skipped, both rows read
    assert "mastery" in reply.find_element(By.CSS_SELECTOR, "table thead").text
    entry = page.execute_script("return JSON.parse(localStorage.getItem('tutor.history')).at(-1)")
    assert entry["ask"] == "a 7-day plan from 2 results" and entry["result"]["table"]

    page.find_element(By.ID, "clear").click()  # and the history goes, after a confirmation
    wait(page).until(lambda d: d.switch_to.alert).accept()
    wait(page).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#log .turn"))
    assert page.execute_script("return localStorage.getItem('tutor.history')") == "[]"


def evil_history(url: str) -> list[dict]:
    """History entries as an attacker would write them: the payload in a reply and in a mark's point and evidence."""
    reply = EVIL + "\n\n(DIAGRAM: x)"
    text = {"mode": "explain", "subject": "physics", "ask": EVIL, "text": reply, "result": {"text": reply, "diagrams": [
        {"description": "x", "ok": True, "png": "https://evil.example/x.png"}]}}
    mark = {"mode": "mark", "subject": "physics", "ask": "q", "result": {
        "marks": 1, "out_of": 2, "marker": "rules <b onmouseover=alert(1)>", "feedback": [EVIL], "checks": [],
        "points": [{"text": EVIL, "marks": 1, "awarded": True, "evidence": EVIL}, {"text": "plain", "marks": 1, "awarded": False}]}}
    return [text, mark]


def assert_harmless(driver):
    log = driver.find_element(By.ID, "log")
    assert driver.execute_script("return window.__pwned") is None
    assert not log.find_elements(By.CSS_SELECTOR, "script, style, [onerror], [onmouseover], a[href^='javascript'], iframe, object")
    assert not driver.execute_script("return [...document.querySelectorAll('#log *')].some((n) =>"
                                     " [...n.attributes].some((a) => a.name.startsWith('on') || /javascript:/i.test(a.value)))")


def test_a_hostile_reply_runs_nothing_live_or_from_the_history(page, server):
    _, url = server
    page.execute_script("tutor.addEntry({mode: 'answer', subject: 'physics', ask: 'evil', text: arguments[0],"
                        " result: {text: arguments[0], diagrams: []}})", EVIL)
    reply = last_reply(page)
    wait(page).until(lambda d: "click me" in reply.text)
    reply.find_element(By.LINK_TEXT, "click me").click()  # a link whose javascript: URL was dropped goes nowhere
    page.find_element(By.TAG_NAME, "body").click()
    assert_harmless(page)
    assert len(page.window_handles) == 1

    page.execute_script("localStorage.setItem('tutor.history', JSON.stringify(arguments[0]))", evil_history(url))
    page.refresh()
    wait(page).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#log .turn")) == 2)
    wait(page).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#log table.points"))
    assert_harmless(page)
    explain, mark = page.find_elements(By.CSS_SELECTOR, "#log .turn")
    assert EVIL.splitlines()[0] in explain.find_element(By.CSS_SELECTOR, ".you").text  # the question is shown as text
    assert "not this server's picture" in explain.text  # the key is never sent elsewhere
    assert mark.find_element(By.CSS_SELECTOR, "table.points q").get_property("textContent") == EVIL  # evidence is text, never HTML
    assert page.execute_script("return window.__pwned") is None

    page.execute_script("localStorage.setItem('tutor.history', '{not json')")  # a broken history is ignored, not fatal
    page.refresh()
    wait(page).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#subject option"))
    assert not page.find_elements(By.CSS_SELECTOR, "#log .turn")


def test_phone_width_never_scrolls_sideways(page, server, tmp_path):
    _, url = server
    long_formula = "$$" + " + ".join(f"x_{{{n}}}^{{{n}}}" for n in range(60)) + "$$"
    row = " | ".join("v" * 12 for _ in range(20))
    table = "| " + " | ".join(f"column {n}" for n in range(20)) + " |\n|" + "---|" * 20 + f"\n| {row} |"
    text = (f"{KNOWN}\n\n{long_formula}\n\n{table}\n\n```\n{'a_very_long_line_of_code ' * 20}\n```\n\n"
            f"https://example.com/{'a' * 200}\n\n{'Pneumonoultramicroscopicsilicovolcanoconiosis' * 4}")
    page.execute_script("tutor.addEntry({mode: 'answer', subject: 'physics', ask: 'Something wide, please', text: arguments[0],"
                        " result: {text: arguments[0], diagrams: []}})", text)
    question_id, answer = gold_answer()
    page.execute_script("tutor.addEntry(arguments[0])", {"mode": "mark", "subject": "physics", "ask": question_id, "result": {
        "marks": 1, "out_of": 2, "marker": "rules", "feedback": ["x" * 300],
        "points": [{"text": "y" * 300, "marks": 1, "awarded": True, "evidence": answer}]}})
    page.set_window_size(375, 800)
    page.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 375, "height": 800, "deviceScaleFactor": 1, "mobile": True})
    wait(page).until(lambda d: d.execute_script("return window.innerWidth") == 375)
    choose(page, "mode", "mark")
    for mode in ("answer", "explain", "mark", "set", "plan"):
        choose(page, "mode", mode)
        width = page.execute_script("return document.documentElement.scrollWidth")
        assert width <= 375 + 1, f"{mode}: {width} px wide"
        assert page.execute_script("return document.body.scrollWidth") <= 375 + 1
    assert page.execute_script("return document.getElementById('log').scrollWidth") <= 375 + 1
    page.execute_script("document.querySelector('#log .reply').scrollIntoView()")
    shoot(page, tmp_path, "phone")


def test_the_knowledge_base_switch_is_off_without_one_and_its_sources_are_listed_when_on(page, server):
    """The page's "Use the knowledge base" switch: disabled while the subject has none; once built, on sends rag (the reply
    lists the sources it was given), off sends rag: false (none listed)."""
    from tutor.kb import KnowledgeBase
    from tutor.registry import get_subject

    backend, _ = server
    choose(page, "mode", "answer")
    assert not page.find_element(By.ID, "rag").is_enabled() and "kb build" in page.find_element(By.ID, "rag").find_element(
        By.XPATH, "..").get_attribute("title")
    base = KnowledgeBase(backend.workspace, "physics", lambda _: None)
    try:
        base.build(get_subject("physics"))
        page.refresh()
        wait(page).until(lambda d: d.find_element(By.ID, "rag").is_enabled())
        for on in (True, False):
            choose(page, "mode", "answer")
            choose(page, "question", "")
            if page.find_element(By.ID, "rag").is_selected() != on:
                page.find_element(By.ID, "rag").click()
            text = page.find_element(By.ID, "text")
            text.clear()
            text.send_keys("State the principle of moments.")
            turns = len(page.find_elements(By.CSS_SELECTOR, "#log .turn"))
            page.find_element(By.ID, "send").click()
            wait(page).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#log .turn")) > turns
                             and d.find_element(By.ID, "stop").get_property("disabled"))
            entry = page.execute_script("return JSON.parse(localStorage.getItem('tutor.history')).at(-1)")
            assert not entry.get("error"), entry
            sources = entry["result"].get("sources") or []
            if on:
                assert "notes: mechanics.md" in sources, sources  # the moments section of the mechanics notes
                listed = last_reply(page).find_element(By.XPATH, "..").text.split("Sources: ", 1)[1]
                assert "[notes: mechanics.md]" in listed.splitlines()[0]
            else:
                assert sources == [] and "Sources:" not in last_reply(page).find_element(By.XPATH, "..").text
        assert not severe(page)
    finally:
        shutil.rmtree(base.folder, ignore_errors=True)
