"""The eval report from hand-made results: summary numbers, verdicts, the gate, report.md, the plots, and saved runs.

Two models answer 12 items: 6 bank questions (mark-points out of 4, form,
final answers on the calculations, a test loss) and 6 rows of an MCQ file
(log-likelihood and generated letters). Every number below is worked out by
hand from those scores.
"""

import json
import math

import pytest
from tutor.errors import TutorError, UnknownName
from tutor.eval import report, stats
from tutor.eval.results import LOSS, MCQ_LOGLIK, RESULTS, RUN_INFO, SUMMARY, ItemResult
from tutor.jsonl import write_jsonl
from tutor.models import Score
from tutor.workspace import Workspace

ITERS = 200  # bootstrap resamples: enough for intervals that bracket, few enough for a fast test

INFO = {"subject": "physics", "created": "2025-03-01T12:00:00Z",
        "models": [{"label": "base", "base_model": "SmolLM2-135M-Instruct", "adapter": None, "role": "answer"},
                   {"label": "tuned", "base_model": "SmolLM2-135M-Instruct", "adapter": "/ws/physics/adapters/answer/run1",
                    "role": "answer"}],
        "baseline": "base", "sets": [{"name": "test split", "questions": 12, "diagrams": 0},
                 {"name": "exam.csv", "questions": 4, "diagrams": 0}], "options": {"limit": None}}

# Bank questions q1..q6: q1-q3 structured (AS), q4-q6 calculations (A2); forces: q1, q2, q4; waves: q3, q5, q6.
MARKS = {"base": [1, 2, 0, 3, 2, 1], "tuned": [2, 2, 1, 4, 2, 2]}  # out of 4: means 9/24 and 13/24
FINAL = {"base": [0, 1, 0], "tuned": [1, 1, 1]}  # the calculations' final answers
FORM = {"base": [1, 1, 1, 1, 1, 1], "tuned": [1, 0, 1, 1, 1, 1]}
# (summed NLL, tokens): base 60/30 = 2.0 per token, tuned 30/30 = 1.0
LOSSES = {"base": [(10, 5), (12, 6), (9, 4), (6, 3), (20, 10), (3, 2)], "tuned": [(5, 5), (6, 6), (4, 4), (3, 3), (10, 10), (2, 2)]}
# MCQ rows m1..m6, key ABCDAB. Log-likelihood: base right on 5 (all but m6), tuned on 3 (m2, m3, m6).
# Discordant pairs: base alone right on m1, m4, m5; tuned alone on m6: McNemar p = 2 * (1 + 4) / 16 = 0.625.
GOLD = "ABCDAB"
LOGLIK = {"base": "ABCDAA", "tuned": "BBCACB"}
GENERATED = {"base": [None, "B", "C", "D", "A", "A"], "tuned": list("BBCACB")}  # base's first reply commits to no letter
LONG_REPLY = "The resultant force is found by adding the vectors. " * 30


def score(marks, out_of=1):
    return Score(marks=marks, out_of=out_of)


def bank_item(model, i, marks=None):
    scores = {"mark-points": score(MARKS[model][i] if marks is None else marks, 4), "form": score(FORM[model][i])}
    if i >= 3:
        scores["final-answer"] = score(FINAL[model][i - 3])
    if i == 3:
        scores["units"] = score({"base": 1, "tuned": 2}[model], 2)  # a plugin's evaluator, on one item
    return ItemResult(model=model, set="test split", kind="question", item=f"q{i + 1}",
                      type="structured" if i < 3 else "calculation", topic="forces" if i in (0, 1, 3) else "waves",
                      level="AS" if i < 3 else "A2", format="structured",
                      prompt=[{"role": "system", "content": "You are a tutor."},
                              {"role": "user", "content": f"Question {i + 1}: find the resultant force."}],
                      output=LONG_REPLY if (model, i) == ("tuned", 0) else f"{model} reply to q{i + 1}",
                      scores=scores, loss=LOSSES[model][i])


def mcq_item(model, i, right=None):
    loglik, generated = LOGLIK[model][i], GENERATED[model][i]
    right_loglik = loglik == GOLD[i] if right is None else right
    return ItemResult(model=model, set="exam.csv", kind="question", item=f"exam.csv:{i + 1}", format="mcq",
                      prompt=[{"role": "user", "content": f"MCQ {i + 1}: which unit is the newton?"}],
                      gold=GOLD[i], chosen={MCQ_LOGLIK: loglik, "mcq": generated},
                      scores={MCQ_LOGLIK: score(int(right_loglik)), "mcq": score(int(generated == GOLD[i]))})


def hand_made():
    return [make(model, i) for model in ("base", "tuned") for make in (bank_item, mcq_item) for i in range(6)]


@pytest.fixture(scope="module")
def summary():
    return report.summarise(INFO, hand_made(), iters=ITERS)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    pytest.importorskip("matplotlib")
    folder = tmp_path_factory.mktemp("run")
    return folder, report.write_report(folder, INFO, hand_made(), iters=ITERS)


# --- the summary's numbers -----------------------------------------------------------------------------


def test_metrics_in_report_order_with_titles(summary):
    assert list(summary["metrics"]) == [MCQ_LOGLIK, "mcq", "final-answer", "mark-points", "form", "units", LOSS]
    assert summary["metrics"]["mark-points"]["title"] == "Mark-scheme coverage (rule marker)"
    assert summary["metrics"]["units"]["title"] == "units"  # a plugin's metric goes by its name
    assert {k: summary[k] for k in INFO} == INFO


def test_partial_marks_are_a_mean_with_a_paired_bootstrap(summary):
    marks = summary["metrics"]["mark-points"]
    assert not marks["binary"] and marks["higher_is_better"]
    base, tuned = marks["models"]["base"], marks["models"]["tuned"]
    assert (base["value"], base["n"]) == (pytest.approx(9 / 24), 6)
    assert (tuned["value"], tuned["n"]) == (pytest.approx(13 / 24), 6)
    assert base["lo"] < base["value"] < base["hi"]
    vs = marks["vs_baseline"]["tuned"]
    assert vs["delta"] == pytest.approx(4 / 24)
    assert (vs["test"], vs["n"]) == ("sign-flip", 6)
    assert vs["lo"] <= vs["delta"] <= vs["hi"]


def test_proportions_get_wilson_and_mcnemar(summary):
    mcq = summary["metrics"][MCQ_LOGLIK]
    assert mcq["binary"]
    base, tuned = mcq["models"]["base"], mcq["models"]["tuned"]
    assert (base["value"], base["n"]) == (pytest.approx(5 / 6), 6)
    assert (base["lo"], base["hi"]) == stats.wilson(5, 6)
    assert (tuned["lo"], tuned["hi"]) == stats.wilson(3, 6)
    vs = mcq["vs_baseline"]["tuned"]
    assert vs["delta"] == pytest.approx(-2 / 6)
    assert (vs["test"], vs["p"], vs["verdict"]) == ("mcnemar", pytest.approx(0.625), "no significant difference")
    generated = summary["metrics"]["mcq"]["models"]
    assert (generated["base"]["value"], generated["tuned"]["value"]) == (pytest.approx(4 / 6), pytest.approx(3 / 6))


def test_loss_is_token_weighted_with_perplexity_and_lower_is_better(summary):
    loss = summary["metrics"][LOSS]
    assert not loss["higher_is_better"]
    base, tuned = loss["models"]["base"], loss["models"]["tuned"]
    assert (base["value"], tuned["value"]) == (pytest.approx(2.0), pytest.approx(1.0))
    assert base["perplexity"]["value"] == pytest.approx(math.e ** 2)
    assert tuned["lo"] == pytest.approx(1.0) and tuned["hi"] == pytest.approx(1.0)  # every item exactly 1.0 per token
    assert loss["vs_baseline"]["tuned"]["delta"] == pytest.approx(-1.0)


def test_breakdowns_by_type_topic_level_and_set(summary):
    by = summary["metrics"]["mark-points"]["by"]
    assert set(by["type"]) == {"structured", "calculation"}  # the MCQ rows have no type: left out, not a '' group
    assert by["type"]["structured"]["base"]["value"] == pytest.approx(3 / 12)
    assert by["type"]["structured"]["tuned"]["value"] == pytest.approx(5 / 12)
    assert by["topic"]["forces"]["base"]["value"] == pytest.approx(6 / 12)
    assert by["level"]["A2"]["tuned"]["n"] == 3
    final = summary["metrics"]["final-answer"]["by"]["level"]
    assert (final["A2"]["base"]["value"], final["A2"]["tuned"]["value"]) == (pytest.approx(1 / 3), 1.0)
    assert set(summary["metrics"][MCQ_LOGLIK]["by"]["set"]) == {"exam.csv"}


def test_headline_and_gate(summary):
    assert summary["headline"].startswith("mark-points: base -> tuned 0.38 -> 0.54 (+0.17, 95% CI [")
    assert summary["gate"] == []


# --- verdicts and the gate -----------------------------------------------------------------------------


def twenty_mcq(base_right: bool, tuned_right: bool):
    return [mcq_item(model, i % 6, right) for i in range(20)
            for model, right in (("base", base_right), ("tuned", tuned_right))]


def relabel(results, item_prefix):
    return [r.model_copy(update={"item": f"{item_prefix}{n}"}) for n, r in enumerate(results)]


def test_a_clearly_worse_tuned_model_fails_the_gate():
    results = [r.model_copy(update={"item": f"row {n // 2}"}) for n, r in enumerate(twenty_mcq(True, False))]
    summary = report.summarise(INFO, results, iters=ITERS)
    vs = summary["metrics"][MCQ_LOGLIK]["vs_baseline"]["tuned"]
    assert (vs["p"], vs["verdict"]) == (pytest.approx(2 / 2 ** 20), "worse")
    assert len(summary["gate"]) == 1
    assert summary["gate"][0].startswith("tuned is significantly worse than base on mcq-loglik "
                                         "(MCQ accuracy (log-likelihood)): 1.00 -> 0.00 (-1.00, 95% CI [")
    assert report.gate(summary) == summary["gate"]


def test_a_clearly_better_tuned_model_passes():
    results = [r.model_copy(update={"item": f"row {n // 2}"}) for n, r in enumerate(twenty_mcq(False, True))]
    summary = report.summarise(INFO, results, iters=ITERS)
    assert summary["metrics"][MCQ_LOGLIK]["vs_baseline"]["tuned"]["verdict"] == "better"
    assert summary["gate"] == []


def test_a_model_the_same_as_base_passes_the_gate():
    base = [r for r in hand_made() if r.model == "base"]
    summary = report.summarise(INFO, base + [r.model_copy(update={"model": "tuned"}) for r in base], iters=ITERS)
    assert {m: e["vs_baseline"]["tuned"]["verdict"] for m, e in summary["metrics"].items()} == dict.fromkeys(
        summary["metrics"], "no significant difference")
    assert summary["gate"] == []


def test_worse_form_alone_does_not_fail_the_gate():
    results = []
    for i in range(12):
        for model, form in (("base", 1), ("tuned", 0)):
            results.append(ItemResult(model=model, set="test split", kind="question", item=f"q{i}", type="structured",
                                      scores={"form": score(form), "mark-points": score(2, 4)}))
    summary = report.summarise(INFO, results, iters=ITERS)
    assert summary["metrics"]["form"]["vs_baseline"]["tuned"]["verdict"] == "worse"
    assert summary["gate"] == []


# --- report.md and the plots ---------------------------------------------------------------------------


def test_report_has_the_tables_the_note_and_the_plot_links(written):
    folder, summary = written
    text = (folder / "report.md").read_text(encoding="utf-8")
    assert f"**{summary['headline']}**" in text
    assert "| metric | base | tuned | tuned vs base |" in text
    mcq_row = next(line for line in text.splitlines() if line.startswith("| MCQ accuracy (log-likelihood)"))
    lo, hi = stats.wilson(5, 6)
    assert f"0.83 [{lo:.2f}, {hi:.2f}] n=6" in mcq_row
    assert "-0.33 [" in mcq_row and "p=0.625 no significant difference" in mcq_row
    for section in ("## By type", "## By topic", "## By level", "## By set"):
        assert section in text
    assert "| structured | mark-points | 0.25 [" in text
    # 'units' is on one item, every other metric on 3 to 6: the widest interval is the one item's
    wide, narrow = (stats.wilson(n // 2, n) for n in (1, 6))
    assert (f"With 1 to 6 items per metric, a 95% interval on an accuracy near 0.5 is about ±{(narrow[1] - narrow[0]) / 2:.2f} "
            f"to ±{(wide[1] - wide[0]) / 2:.2f} wide, so \"no significant difference\" is the expected outcome") in text
    assert "Gate: passes" in text
    for plot in ("by-type.png", "mcq-confusion.png", "coverage.png"):
        assert f"![{plot}]({plot})" in text


def test_report_quotes_the_largest_wins_and_losses(written):
    folder, _ = written
    text = (folder / "report.md").read_text(encoding="utf-8")
    wins = text[text.index("### Wins"):text.index("### Losses")]
    losses = text[text.index("### Losses"):]
    # item changes (mean over shared metrics): exam.csv:6 +1.0, q4 +0.44, q6 +0.42, q1 +0.125, q3 +0.125
    headings = [line for line in wins.splitlines() if line.startswith("**")]
    assert [h.split("**")[1] for h in headings] == ["exam.csv:6", "q4", "q6", "q1", "q3"]
    assert "> MCQ 6: which unit is the newton?" in wins
    assert "*base* (mcq-loglik 0/1, mcq 0/1; mcq-loglik chose A; mcq chose A):" in wins
    assert LONG_REPLY[:300] in wins and LONG_REPLY not in wins and "[...]" in wins  # a long reply is cut
    # losses: exam.csv:4 and :5 -1.0, then q2 (form lost) and exam.csv:1 -0.5, ties in the results' order
    headings = [line for line in losses.splitlines() if line.startswith("**")]
    assert [h.split("**")[1] for h in headings] == ["exam.csv:4", "exam.csv:5", "q2", "exam.csv:1"]
    assert "mcq chose none" in losses


def test_summary_json_is_the_returned_summary(written):
    folder, summary = written
    assert json.loads((folder / SUMMARY).read_text(encoding="utf-8")) == summary


def test_plots_are_real_pngs(written):
    folder, _ = written
    for plot in ("by-type.png", "mcq-confusion.png", "coverage.png"):
        data = (folder / plot).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    assert not list(folder.glob("*.tmp*"))


def test_plots_without_data_are_skipped_and_said(tmp_path):
    pytest.importorskip("matplotlib")
    mcq_only = [mcq_item(model, i) for model in ("base", "tuned") for i in range(6)]
    report.write_report(tmp_path, INFO, mcq_only, iters=ITERS)
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "- by-type.png: not drawn: no question type has an MCQ, final-answer or mark-point score." in text
    assert "- coverage.png: not drawn: no item has a mark-scheme coverage score." in text
    assert "![mcq-confusion.png](mcq-confusion.png)" in text
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["mcq-confusion.png"]


# --- saved runs ---------------------------------------------------------------------------------------------


def save_run(folder, summary=None):
    folder.mkdir(parents=True)
    (folder / RUN_INFO).write_text(json.dumps(INFO), encoding="utf-8")
    write_jsonl(folder / RESULTS, hand_made())
    if summary:
        (folder / SUMMARY).write_text(json.dumps(summary), encoding="utf-8")
    return folder


def test_load_run_round_trip(tmp_path):
    info, results = report.load_run(save_run(tmp_path / "run"))
    assert info == INFO
    assert results == hand_made()


def test_load_run_names_the_folder_when_a_file_is_missing(tmp_path):
    with pytest.raises(TutorError, match=f"{tmp_path}: not a tutor eval run with results \\(no run.json\\)"):
        report.load_run(tmp_path)


def test_find_run(tmp_path, summary):
    workspace = Workspace(tmp_path)
    with pytest.raises(TutorError, match="no finished eval run of physics"):
        report.find_run(workspace, "physics", None)
    evals = report.runs_dir(workspace, "physics")
    assert evals == tmp_path / "physics" / "evals"
    finished = save_run(evals / "20250301-120000", summary)
    unfinished = save_run(evals / "20250302-090000")
    assert report.find_run(workspace, "physics", None) == finished  # the newest with a summary
    assert report.find_run(workspace, "physics", "20250302-090000") == unfinished
    assert report.read_summary(finished) == summary
    with pytest.raises(TutorError, match="no summary.json: the run did not finish"):
        report.read_summary(unfinished)
    assert report.find_run(workspace, "physics", str(finished)) == finished
    with pytest.raises(UnknownName) as err:
        report.find_run(workspace, "physics", "20250303-000000")
    assert err.value.valid == ["20250301-120000", "20250302-090000"]
    (evals / "notes").mkdir()
    with pytest.raises(TutorError, match="not a tutor eval run"):
        report.find_run(workspace, "physics", "notes")


# --- show and compare -----------------------------------------------------------------------------------------


def test_show_rows(summary):
    headers, rows = report.show_rows(summary)
    assert headers == ["metric", "base", "tuned", "tuned vs base"]
    assert [row[0] for row in rows] == list(summary["metrics"])
    lo, hi = stats.wilson(5, 6)
    assert rows[0][1] == f"0.83 [{lo:.2f}, {hi:.2f}] n=6"
    assert rows[0][3].endswith("p=0.625 no significant difference")
    assert rows[-1][1].startswith("2.000 [") and f"perplexity {math.e ** 2:.1f}" in rows[-1][1]


def test_compare_rows_matches_models_by_label_and_the_tuned_ones(summary):
    # run B: the same base, and a 'tuned-2' that answers exactly as base did
    base = [r for r in hand_made() if r.model == "base"]
    info_b = {**INFO, "models": [INFO["models"][0], {**INFO["models"][1], "label": "tuned-2"}]}
    summary_b = report.summarise(info_b, base + [r.model_copy(update={"model": "tuned-2"}) for r in base], iters=ITERS)
    headers, rows = report.compare_rows(summary, summary_b)
    assert headers == ["metric", "model", "A", "B", "B - A"]
    by_key = {(row[0], row[1]): row for row in rows}
    assert by_key["mark-points", "base"][4] == "+0.00"
    assert by_key["mark-points", "tuned (tuned / tuned-2)"][4] == "-0.17"  # 9/24 - 13/24
    assert by_key[LOSS, "tuned (tuned / tuned-2)"][4] == "+1.000"
    assert ("mark-points", "tuned") not in by_key  # run B has no model labelled 'tuned'


def test_each_model_with_the_knowledge_base_is_compared_with_itself_without_it(tmp_path):
    """`eval --rag` / [eval] rag: NAME +rag is paired with NAME on the same items; the headline stays base -> the adapter."""
    pytest.importorskip("matplotlib")
    swapped = {"base +rag": "tuned", "tuned +rag": "base"}  # base gains 4 marks in 24 with retrieval, tuned loses them
    results = [r for model in ("base", "tuned") for r in (bank_item(model, i) for i in range(6))]
    results += [bank_item(source, i).model_copy(update={"model": label}) for label, source in swapped.items() for i in range(6)]
    info = {**INFO, "models": [{**INFO["models"][0]}, {**INFO["models"][0], "label": "base +rag"}, {**INFO["models"][1]},
                               {**INFO["models"][1], "label": "tuned +rag"}]}
    summary = report.write_report(tmp_path, info, results, iters=ITERS)
    assert summary["headline"].startswith("mark-points: base -> tuned 0.38 -> 0.54 (+0.17")  # not base -> base +rag
    paired = summary["metrics"]["mark-points"]["vs_without_rag"]
    assert paired["base +rag"]["delta"] == pytest.approx(4 / 24) and paired["tuned +rag"]["delta"] == pytest.approx(-4 / 24)
    assert paired["tuned +rag"]["n"] == 6
    assert summary["rag"] == [line for line in summary["rag"] if line.startswith("mark-points: ")] and len(summary["rag"]) == 2
    assert summary["rag"][0].startswith("mark-points: base without -> with the knowledge base 0.38 -> 0.54 (+0.17, 95% CI [")
    assert summary["rag"][1].startswith("mark-points: tuned without -> with the knowledge base 0.54 -> 0.38 (-0.17, 95% CI [")
    text = (tmp_path / "report.md").read_text()
    assert "## With and without the knowledge base" in text and "| `mark-points` | tuned | 0.54" in text
    assert report.summarise(INFO, hand_made(), iters=ITERS)["rag"] == []  # no +rag model: no lines
