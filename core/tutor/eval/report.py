"""An evaluation run's summary, report and plots, computed from its results alone; and finding, showing and comparing saved runs.

A run folder (<workspace>/<subject>/evals/<UTC time>/) holds run.json (what
was asked) and results.jsonl (one ItemResult per model and item); from those
two this module writes:
  - summary.json: per metric, each model's value with its 95% interval, every
    model against the baseline on the same items (paired), and the same per
    question type, topic, level and set; the gate's verdict; a headline;
  - report.md: the tables, an honest sentence when there are few items, and
    the largest per-item wins and losses, quoted;
  - by-type.png, mcq-confusion.png, coverage.png.
So a saved run can be re-reported, shown and compared without a model.

A metric's per-item value is its Score's fraction (marks / out_of), except
the loss, which pools summed NLL over summed tokens (and is lower-is-better).
A metric whose every value is 0 or 1 is a proportion: Wilson interval and
McNemar's test; any other is a mean: bootstrap interval, and the paired
bootstrap's interval with a sign-flip p (stats.py says why each).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import TutorError, UnknownName
from ..jsonl import read_jsonl, write_atomic
from . import stats
from .results import DIAGRAM_COMPILES, JUDGE, LOSS, MCQ_LOGLIK, RAG_LABEL, REPORT, RESULTS, RUN_INFO, SUMMARY, ItemResult

if TYPE_CHECKING:
    from ..workspace import Workspace

TITLES = {
    MCQ_LOGLIK: "MCQ accuracy (log-likelihood)",
    "mcq": "MCQ accuracy (generated answer)",
    "final-answer": "Final answers (to s.f.)",
    "mark-points": "Mark-scheme coverage (rule marker)",
    JUDGE: "Mark-scheme coverage (model judge)",
    "form": "Form (length, diagram markers, Answer: line)",
    DIAGRAM_COMPILES: "Diagram code compiles, first try",
    LOSS: "Test loss (token NLL; lower is better)",
}
MAIN = (MCQ_LOGLIK, "mcq", "final-answer", "mark-points", JUDGE)  # the metrics by-type.png draws
GATED = (MCQ_LOGLIK, "mcq", "mark-points", JUDGE)  # a tuned model significantly worse on one of these fails the gate
COVERAGE = ("mark-points", JUDGE)  # the metrics coverage.png draws
HEADLINE = ("mark-points", JUDGE, "mcq", MCQ_LOGLIK, "final-answer")  # the first present leads the report
GROUPS = ("type", "topic", "level", "set")  # the ItemResult fields the report breaks every metric down by
FEW_ITEMS = 30  # below this many items an interval on an accuracy is wider than ±0.17: say what that means
QUOTED = 5  # wins and losses quoted
QUESTION_CHARS, OUTPUT_CHARS = 300, 400  # how much of a question and of each reply a quote keeps

Key = tuple[str, str, str]  # an item: (set, kind, item); the same key in two models' results is one pair


def title(metric: str) -> str:
    """The metric's name in the report; a plugin's evaluator goes by its own name."""
    return TITLES.get(metric, metric)


# --- the summary ---------------------------------------------------------------------------------


def summarise(info: dict[str, Any], results: list[ItemResult], iters: int = stats.ITERS) -> dict[str, Any]:
    """summary.json: run.json's fields, then per metric each model's estimate, the paired comparisons and the breakdowns."""
    labels = _labels(info, results)
    baseline = info.get("baseline") or labels[0]
    metrics = {}
    for metric in _metrics(results):
        values = _values(results, metric)
        binary = metric != LOSS and all(v in (0.0, 1.0) for per_item in values.values() for v in per_item.values())
        metrics[metric] = {
            "title": title(metric),
            "binary": binary,
            "higher_is_better": metric != LOSS,
            "models": _estimates(metric, binary, values, labels, iters),
            "vs_baseline": {label: comparison for label in labels if label != baseline and label in values and baseline in values
                            and (comparison := _compare(metric, binary, values[baseline], values[label], iters))},
            # NAME +rag against NAME itself, on the same items: what retrieval adds to that one model
            "vs_without_rag": {label: comparison for label, twin in _rag_twins(labels).items() if label in values and twin in values
                               and (comparison := _compare(metric, binary, values[twin], values[label], iters))},
            "by": {field: _breakdown(results, field, metric, binary, labels, iters) for field in GROUPS},
        }
    summary = {**info, "baseline": baseline, "metrics": metrics}
    summary["gate"] = gate(summary)
    summary["headline"] = headline(summary)
    summary["rag"] = rag_lines(summary)
    return summary


def _rag_twins(labels: list[str]) -> dict[str, str]:
    """Each `NAME +rag` label whose NAME is in the run too -> NAME."""
    return {label: twin for label in labels if label.endswith(RAG_LABEL) and (twin := label.removesuffix(RAG_LABEL)) in labels}


def rag_lines(summary: dict[str, Any]) -> list[str]:
    """One line per model evaluated with and without the knowledge base: the headline's metric, without -> with, paired."""
    metrics = summary["metrics"]
    metric = next((m for m in HEADLINE if m in metrics), next(iter(metrics), None))
    if metric is None:
        return []
    entry = metrics[metric]
    lines = []
    for label in entry.get("vs_without_rag", {}):
        twin = label.removesuffix(RAG_LABEL)
        lines.append(f"{metric}: {twin} without -> with the knowledge base {_change(metric, entry, label, twin, 'vs_without_rag')}")
    return lines


def _metrics(results: list[ItemResult]) -> list[str]:
    """Every metric some item has: the core's in TITLES order, a plugin's after them, the loss last."""
    seen = {name for r in results for name in r.scores} | ({LOSS} if any(r.loss is not None for r in results) else set())
    known = [m for m in TITLES if m in seen and m != LOSS]
    return known + sorted(seen - set(TITLES)) + ([LOSS] if LOSS in seen else [])


def _values(results: list[ItemResult], metric: str) -> dict[str, dict[Key, Any]]:
    """Model label -> item -> the item's value: its score's fraction, or (summed NLL, tokens) for the loss."""
    values: dict[str, dict[Key, Any]] = {}
    for r in results:
        if metric == LOSS:
            value = r.loss
        else:
            value = r.scores[metric].fraction if metric in r.scores else None
        if value is not None:
            values.setdefault(r.model, {})[_key(r)] = value
    return values


def _estimates(metric: str, binary: bool, values: dict[str, dict[Key, Any]], labels: list[str], iters: int) -> dict[str, Any]:
    """Model label -> its estimate, for each model with a value."""
    return {label: _estimate(metric, binary, list(values[label].values()), iters) for label in labels if values.get(label)}


def _estimate(metric: str, binary: bool, values: list, iters: int) -> dict[str, Any]:
    """A model's value on a metric with its 95% interval and the number of items."""
    n = len(values)
    if metric == LOSS:
        nll, tokens = zip(*values)
        loss = sum(nll) / sum(tokens)
        lo, hi = stats.bootstrap_ratio(nll, tokens, iters)
        return {"value": loss, "lo": lo, "hi": hi, "n": n,
                "perplexity": {"value": math.exp(loss), "lo": math.exp(lo), "hi": math.exp(hi)}}
    lo, hi = stats.wilson(round(sum(values)), n) if binary else stats.bootstrap_mean(values, iters)
    return {"value": sum(values) / n, "lo": lo, "hi": hi, "n": n}


def _compare(metric: str, binary: bool, base: dict[Key, Any], other: dict[Key, Any], iters: int) -> dict[str, Any] | None:
    """`other` against `base` on the items both answered; None when they share none."""
    keys = [key for key in base if key in other]
    if not keys:
        return None
    if metric == LOSS:
        # per-token losses weighted by the baseline's token counts: with one tokenizer, exactly the difference of the pooled losses
        a, b = ([per[k][0] / per[k][1] for k in keys] for per in (base, other))
        delta, lo, hi, p = stats.paired_bootstrap(a, b, iters, weights=[base[k][1] for k in keys])
    else:
        a, b = [base[k] for k in keys], [other[k] for k in keys]
        delta, lo, hi, p = stats.paired_bootstrap(a, b, iters)
    test = "sign-flip"
    if binary:
        p, test = stats.mcnemar([x == 1 for x in a], [y == 1 for y in b]), "mcnemar"
    return {"delta": delta, "lo": lo, "hi": hi, "p": p, "test": test, "n": len(keys),
            "verdict": stats.verdict(delta, p, higher_is_better=metric != LOSS)}


def _breakdown(results: list[ItemResult], field: str, metric: str, binary: bool, labels: list[str],
               iters: int) -> dict[str, dict[str, Any]]:
    """Group (a type, topic, level or set) -> model -> estimate, over the items of that group; items without the field left out."""
    groups: dict[str, list[ItemResult]] = {}
    for r in results:
        if getattr(r, field):
            groups.setdefault(getattr(r, field), []).append(r)
    breakdown = {}
    for group in sorted(groups):
        values = _values(groups[group], metric)
        if values:
            breakdown[group] = _estimates(metric, binary, values, labels, iters)
    return breakdown


def gate(summary: dict[str, Any]) -> list[str]:
    """Why the run fails the gate: each model significantly worse than the baseline on MCQ accuracy or coverage. Empty: it passes."""
    reasons = []
    for metric in GATED:
        entry = summary["metrics"].get(metric)
        for label, comparison in (entry["vs_baseline"] if entry else {}).items():
            if comparison["verdict"] == "worse":
                reasons.append(f"{label} is significantly worse than {summary['baseline']} on {metric} ({entry['title']}): "
                               f"{_change(metric, entry, label, summary['baseline'])}")
    return reasons


def headline(summary: dict[str, Any]) -> str:
    """One line: the leading metric, baseline -> tuned with the difference, its interval and the verdict."""
    metrics = summary["metrics"]
    if not metrics:
        return "nothing was scored"
    metric = next((m for m in HEADLINE if m in metrics), next(iter(metrics)))
    entry, baseline, tuned = metrics[metric], summary["baseline"], _tuned(summary)
    if tuned in entry["vs_baseline"]:
        return f"{metric}: {baseline} -> {tuned} {_change(metric, entry, tuned, baseline)}"
    label, estimate = next(iter(entry["models"].items()))
    return f"{metric}: {label} {_estimate_text(metric, estimate)}"


def _change(metric: str, entry: dict[str, Any], label: str, baseline: str, against: str = "vs_baseline") -> str:
    """'0.41 -> 0.55 (+0.14, 95% CI [-0.02, +0.30], p=0.090, no significant difference, 7 items)'."""
    c = entry[against][label]
    before, after = entry["models"][baseline]["value"], entry["models"][label]["value"]
    return (f"{_number(metric, before)} -> {_number(metric, after)} ({_signed(metric, c['delta'])}, "
            f"95% CI [{_signed(metric, c['lo'])}, {_signed(metric, c['hi'])}], {_p(c['p'])}, {c['verdict']}, {c['n']} items)")


# --- report.md --------------------------------------------------------------------------------------


def write_report(folder: Path, info: dict[str, Any], results: list[ItemResult], iters: int = stats.ITERS) -> dict[str, Any]:
    """Write summary.json, the plots and report.md into the run folder; return the summary."""
    folder = Path(folder)
    summary = summarise(info, results, iters)
    write_atomic(folder / SUMMARY, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    plots = draw_plots(folder, summary, results)
    write_atomic(folder / REPORT, render(summary, results, plots))
    return summary


def render(summary: dict[str, Any], results: list[ItemResult], plots: dict[str, str | None]) -> str:
    """report.md's text; `plots` maps each plot file to None when drawn, or why it was not."""
    baseline, labels = summary["baseline"], _summary_labels(summary)
    lines = [f"# {summary.get('subject', '')} evaluation, {summary.get('created', '')}", "", f"**{summary['headline']}**", ""]
    lines += _model_lines(summary)
    lines += ["", f"Sets: {', '.join(map(_set_text, summary.get('sets', []))) or '(none)'}.", "", _gate_text(summary), ""]
    if few := _few_items_note(summary):
        lines += [few, ""]
    lines += ["## All items", "", *_main_table(summary, labels), ""]
    if any(entry.get("vs_without_rag") for entry in summary["metrics"].values()):
        lines += ["## With and without the knowledge base", "", "Each model against itself without retrieval, on the same items.", "",
                  *_rag_table(summary), ""]
    for field in GROUPS:
        groups = {g for entry in summary["metrics"].values() for g in entry["by"][field]}
        if groups and (field != "set" or len(groups) > 1):
            lines += [f"## By {field}", "", *_group_table(summary, labels, field), ""]
    lines += ["## Plots", ""]
    for name, skipped in plots.items():
        lines.append(f"![{name}]({name})" if skipped is None else f"- {name}: not drawn: {skipped}.")
    lines.append("")
    tuned = _tuned(summary)
    if tuned:
        lines += [f"## Largest wins and losses of {tuned} against {baseline}", ""]
        wins, losses = _largest_changes(results, baseline, tuned)
        for heading, changes, direction in (("Wins", wins, "higher"), ("Losses", losses, "lower")):
            lines += [f"### {heading}", ""]
            for change in changes:
                lines += _quote(*change)
            if not changes:
                lines += [f"No item where {tuned} scored {direction} than {baseline}.", ""]
    return "\n".join(lines)


def _set_text(entry: dict[str, Any] | str) -> str:
    """A set as run.json records it: its name, with its questions and diagrams counted."""
    if isinstance(entry, str):
        return entry
    diagrams = f", {entry['diagrams']} diagrams" if entry.get("diagrams") else ""
    return f"{entry['name']} ({entry['questions']} questions{diagrams})"


def _gate_text(summary: dict[str, Any]) -> str:
    if not _tuned(summary):
        return f"Gate: nothing to compare {summary['baseline']} with."
    if not summary["gate"]:
        return (f"Gate: passes (no model is significantly worse than {summary['baseline']} on MCQ accuracy or "
                "mark-scheme coverage).")
    return "Gate: **fails**:\n" + "\n".join(f"- {reason}" for reason in summary["gate"])


def _few_items_note(summary: dict[str, Any]) -> str:
    """The honest sentence for a small test set: how wide an interval is at that size, and what that means for the verdicts."""
    sizes = {max(e["n"] for e in entry["models"].values()) for entry in summary["metrics"].values()}
    small = sorted(n for n in sizes if n < FEW_ITEMS)
    if not small:
        return ""
    fewest, most = small[0], small[-1]
    items = f"{fewest} item{'s' if fewest > 1 else ''}" if fewest == most else f"{fewest} to {most} items per metric"
    widths = " to ".join(dict.fromkeys(f"±{_half_width(n):.2f}" for n in (most, fewest)))
    return (f"With {items}, a 95% interval on an accuracy near 0.5 is about {widths} wide, so \"no significant difference\" "
            "is the expected outcome unless one model is better on most items; more questions (the validation split, the whole bank, "
            "or MCQ files) narrow it.")


def _half_width(n: int) -> float:
    lo, hi = stats.wilson(n // 2, n)
    return (hi - lo) / 2


def _rag_table(summary: dict[str, Any]) -> list[str]:
    rows = []
    for metric, entry in summary["metrics"].items():
        for label, comparison in entry.get("vs_without_rag", {}).items():
            twin = label.removesuffix(RAG_LABEL)
            rows.append([f"`{metric}`", twin, _estimate_text(metric, entry["models"][twin]), _estimate_text(metric, entry["models"][label]),
                         _delta_text(metric, comparison, markdown=True)])
    return _markdown_table(["metric", "model", "without", "with the knowledge base", "difference"], rows)


def _main_table(summary: dict[str, Any], labels: list[str]) -> list[str]:
    baseline, others = summary["baseline"], [label for label in labels if label != summary["baseline"]]
    rows = []
    for metric, entry in summary["metrics"].items():
        cells = [_estimate_text(metric, entry["models"][label]) if label in entry["models"] else "-" for label in labels]
        deltas = [_delta_text(metric, entry["vs_baseline"][label], markdown=True) if label in entry["vs_baseline"] else "-"
                  for label in others]
        rows.append([f"{entry['title']} (`{metric}`)" if entry["title"] != metric else f"`{metric}`", *cells, *deltas])
    return _markdown_table(["metric", *labels, *(f"{label} vs {baseline}" for label in others)], rows)


def _group_table(summary: dict[str, Any], labels: list[str], field: str) -> list[str]:
    """One row per group and metric: each model's estimate, compactly, and each model's difference from the baseline's value."""
    baseline, others = summary["baseline"], [label for label in labels if label != summary["baseline"]]
    groups = sorted({g for entry in summary["metrics"].values() for g in entry["by"][field]})
    rows = []
    for group in groups:
        for metric, entry in summary["metrics"].items():
            per_model = entry["by"][field].get(group)
            if not per_model:
                continue
            cells = [_compact(metric, per_model[label]) if label in per_model else "-" for label in labels]
            deltas = [_signed(metric, per_model[label]["value"] - per_model[baseline]["value"])
                      if label in per_model and baseline in per_model else "-" for label in others]
            rows.append([group, metric, *cells, *deltas])
    return _markdown_table([field, "metric", *labels, *(f"{label} - {baseline}" for label in others)], rows)


def _largest_changes(results: list[ItemResult], baseline: str, tuned: str) -> tuple[list, list]:
    """The items where `tuned` gained most over `baseline`, and lost most: its mean score difference over the metrics both have."""
    before = {_key(r): r for r in results if r.model == baseline}
    changes = []
    for after in results:
        if after.model == tuned and (base := before.get(_key(after))):
            shared = [m for m in after.scores if m in base.scores]
            if shared:
                change = sum(after.scores[m].fraction - base.scores[m].fraction for m in shared) / len(shared)
                changes.append((change, base, after))
    wins = sorted((c for c in changes if c[0] > 0), key=lambda c: -c[0])[:QUOTED]
    losses = sorted((c for c in changes if c[0] < 0), key=lambda c: c[0])[:QUOTED]
    return wins, losses


def _quote(change: float, base: ItemResult, tuned: ItemResult) -> list[str]:
    """One item, quoted: its question, then each model's scores and reply."""
    where = ", ".join(x for x in (base.type, base.topic, base.level, base.set) if x)
    user = next((m.get("content", "") for m in reversed(base.prompt) if m.get("role") == "user"), "")
    key = f", key {base.gold}" if base.gold else ""
    lines = [f"**{base.item}** ({where}{key}): {change:+.2f}", "", *_blockquote(user or "(no prompt recorded)", QUESTION_CHARS), ""]
    for r in (base, tuned):
        scores = ", ".join(f"{name} {s.marks:g}/{s.out_of:g}" for name, s in r.scores.items())
        scores += "".join(f"; {method} chose {letter or 'none'}" for method, letter in r.chosen.items())
        lines += [f"*{r.model}* ({scores}):", "", *_blockquote(r.output or "(empty reply)", OUTPUT_CHARS), ""]
    return lines


def _blockquote(text: str, limit: int) -> list[str]:
    text = text.strip()
    if len(text) > limit:
        text = text[:limit].rstrip() + " [...]"
    return [f"> {line}".rstrip() for line in text.splitlines()]


# --- plots -------------------------------------------------------------------------------------------


def draw_plots(folder: Path, summary: dict[str, Any], results: list[ItemResult]) -> dict[str, str | None]:
    """Draw each plot whose data are present: plot file -> None when drawn, or why it was not."""
    labels = _summary_labels(summary)
    drawn = {
        "by-type.png": _plot_by_type(folder / "by-type.png", summary, labels)
        or "no question type has an MCQ, final-answer or mark-point score",
        "mcq-confusion.png": _plot_confusion(folder / "mcq-confusion.png", results, labels)
        or "no MCQ item has a gold letter and a chosen one",
        "coverage.png": _plot_coverage(folder / "coverage.png", summary, results, labels) or "no item has a mark-scheme coverage score",
    }
    return {name: None if outcome is True else outcome for name, outcome in drawn.items()}


def _plot_by_type(out: Path, summary: dict[str, Any], labels: list[str]) -> bool:
    """Per question type, a bar per model with its 95% interval; one panel per main metric."""
    metrics = [m for m in MAIN if m in summary["metrics"] and summary["metrics"][m]["by"]["type"]]
    if not metrics:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(1.5 + 4.5 * len(metrics), 4.5), dpi=120, squeeze=False)
    width = 0.8 / len(labels)
    for ax, metric in zip(axes[0], metrics):
        by_type = summary["metrics"][metric]["by"]["type"]
        for i, label in enumerate(labels):
            bars = [(x, by_type[t][label]) for x, t in enumerate(by_type) if label in by_type[t]]
            if bars:
                xs, estimates = zip(*bars)
                values = [e["value"] for e in estimates]
                errors = [[max(0.0, e["value"] - e["lo"]) for e in estimates], [max(0.0, e["hi"] - e["value"]) for e in estimates]]
                ax.bar([x + (i - (len(labels) - 1) / 2) * width for x in xs], values, width, yerr=errors, capsize=3,
                       color=f"C{i}", label=label)  # a model keeps its colour in every plot
        ax.set_xticks(range(len(by_type)), list(by_type), rotation=30, ha="right")
        ax.set_ylim(0, 1.05)
        ax.set_title(title(metric), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("score (bars: 95% interval)")
    axes[0][-1].legend(fontsize=8)
    _save(fig, out)
    return True


def _plot_confusion(out: Path, results: list[ItemResult], labels: list[str]) -> bool:
    """Gold letter against chosen letter (or none), one panel per model and MCQ method."""
    mcq = [r for r in results if r.gold and r.chosen]
    # Every option letter (the log-likelihoods name them all), so a letter no model chose still shows as an empty column.
    letters = sorted({r.gold for r in mcq} | {c for r in mcq for c in r.chosen.values() if c} | {k for r in mcq for k in r.logliks})
    columns = [*letters, "none"]
    panels = {}
    for label in labels:
        for method in _metrics_in(r.chosen for r in mcq):
            chosen = [(r.gold, r.chosen[method] or "none") for r in mcq if r.model == label and method in r.chosen]
            if chosen:
                panels[label, method] = [[chosen.count((gold, column)) for column in columns] for gold in letters]
    if not panels:
        return False
    most = max(max(row) for counts in panels.values() for row in counts)
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(1 + 3.6 * len(panels), 3.8), dpi=120, squeeze=False)
    for ax, ((label, method), counts) in zip(axes[0], panels.items()):
        ax.imshow(counts, cmap="Blues", vmin=0, vmax=most)  # one scale for every panel, so their shades compare
        for row, per_gold in enumerate(counts):
            for column, count in enumerate(per_gold):
                ax.text(column, row, str(count), ha="center", va="center", fontsize=8, color="white" if count > most / 2 else "black")
        ax.set_xticks(range(len(columns)), columns)
        ax.set_yticks(range(len(letters)), letters)
        ax.set_xlabel("chosen")
        ax.set_ylabel("gold")
        ax.set_title(f"{label}: {method}", fontsize=10)
    _save(fig, out)
    return True


def _plot_coverage(out: Path, summary: dict[str, Any], results: list[ItemResult], labels: list[str]) -> bool:
    """Each model's per-item coverage as jittered points, with the mean and its 95% interval; one panel per marker."""
    metrics = [m for m in COVERAGE if m in summary["metrics"]]
    if not metrics:
        return False
    import numpy as np

    plt = _pyplot()
    jitter = np.random.default_rng(0)  # fixed: the same run draws the same picture
    fig, axes = plt.subplots(1, len(metrics), figsize=(1 + 1.6 * len(labels) * len(metrics), 4.2), dpi=120, squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        values = _values(results, metric)
        estimates = summary["metrics"][metric]["models"]
        for x, label in enumerate(labels):
            points = list(values.get(label, {}).values())
            ax.scatter(x + jitter.uniform(-0.18, 0.18, len(points)), points, s=14, alpha=0.5, color=f"C{x}")
            if label in estimates:
                e = estimates[label]
                ax.errorbar(x, e["value"], yerr=[[e["value"] - e["lo"]], [e["hi"] - e["value"]]], fmt="D", color="black", capsize=6)
        ax.set_xticks(range(len(labels)), labels, rotation=15)
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(title(metric), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("share of marking points earned\n(diamond: mean, 95% interval)")
    _save(fig, out)
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> None:
    """Write the figure by temp file and rename, so a reader never sees half a PNG."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)


# --- saved runs: finding, loading, showing, comparing ------------------------------------------------


def runs_dir(workspace: Workspace, subject: str) -> Path:
    return workspace.subject_dir(subject) / "evals"


def find_run(workspace: Workspace, subject: str, name: str | None) -> Path:
    """A run folder: by its name under the subject's evals, or a path; None: the newest finished run (one with summary.json)."""
    folder = runs_dir(workspace, subject)
    runs = sorted(p for p in folder.iterdir() if (p / RUN_INFO).is_file()) if folder.is_dir() else []
    if name is None:
        finished = [p for p in runs if (p / SUMMARY).is_file()]
        if not finished:
            raise TutorError(f"no finished eval run of {subject} under {folder}; `tutor --subject {subject} eval` makes one")
        return finished[-1]
    for path in (folder / name, Path(name)):
        if path.is_dir():
            if not (path / RUN_INFO).is_file():
                raise TutorError(f"{path}: not a tutor eval run (no {RUN_INFO})")
            return path
    raise UnknownName(f"eval run of {subject}", name, [p.name for p in runs])


def load_run(folder: Path) -> tuple[dict[str, Any], list[ItemResult]]:
    """run.json and every ItemResult of a run folder, to re-report it."""
    folder = Path(folder)
    for name in (RUN_INFO, RESULTS):
        if not (folder / name).is_file():
            raise TutorError(f"{folder}: not a tutor eval run with results (no {name})")
    return _read_json(folder / RUN_INFO), read_jsonl(folder / RESULTS, ItemResult)


def read_summary(folder: Path) -> dict[str, Any]:
    """A run's summary.json, for `eval show` and `eval compare`."""
    path = Path(folder) / SUMMARY
    if not path.is_file():
        raise TutorError(f"{folder}: no {SUMMARY}: the run did not finish; its report can be rewritten from {RESULTS}")
    return _read_json(path)


def show_rows(summary: dict[str, Any]) -> tuple[list[str], list[tuple[str, ...]]]:
    """`tutor eval show`'s table: per metric, each model's value with interval and n, then each one's difference from the baseline."""
    baseline, labels = summary["baseline"], _summary_labels(summary)
    others = [label for label in labels if label != baseline]
    rows = []
    for metric, entry in summary["metrics"].items():
        cells = [_estimate_text(metric, entry["models"][label]) if label in entry["models"] else "-" for label in labels]
        deltas = [_delta_text(metric, entry["vs_baseline"][label]) if label in entry["vs_baseline"] else "-" for label in others]
        rows.append((metric, *cells, *deltas))
    return ["metric", *labels, *(f"{label} vs {baseline}" for label in others)], rows


def compare_rows(summary_a: dict[str, Any], summary_b: dict[str, Any]) -> tuple[list[str], list[tuple[str, ...]]]:
    """`tutor eval compare A B`: per metric both runs have, each model in both (by label, and the tuned models of each), A, B and B - A.

    The runs may have scored different items, so the difference carries no
    test: only a paired comparison within one run does.
    """
    labels_b = _summary_labels(summary_b)
    pairs = [(label, label, label) for label in _summary_labels(summary_a) if label in labels_b]
    tuned_a, tuned_b = _tuned(summary_a), _tuned(summary_b)
    if tuned_a and tuned_b and tuned_a != tuned_b:
        pairs.append((f"tuned ({tuned_a} / {tuned_b})", tuned_a, tuned_b))
    rows = []
    for metric, entry_a in summary_a["metrics"].items():
        entry_b = summary_b["metrics"].get(metric)
        for name, label_a, label_b in pairs if entry_b else []:
            a, b = entry_a["models"].get(label_a), entry_b["models"].get(label_b)
            if a and b:
                rows.append((metric, name, _estimate_text(metric, a), _estimate_text(metric, b), _signed(metric, b["value"] - a["value"])))
    return ["metric", "model", "A", "B", "B - A"], rows


# --- small helpers -------------------------------------------------------------------------------------


def _key(r: ItemResult) -> Key:
    return r.set, r.kind, r.item


def _labels(info: dict[str, Any], results: list[ItemResult]) -> list[str]:
    """The models in run.json's order (a label with two roles once), then any that only the results name."""
    return list(dict.fromkeys([m["label"] for m in info.get("models", [])] + [r.model for r in results]))


def _summary_labels(summary: dict[str, Any]) -> list[str]:
    scored = [label for entry in summary["metrics"].values() for label in entry["models"]]
    return list(dict.fromkeys([m["label"] for m in summary.get("models", [])] + scored))


def _tuned(summary: dict[str, Any]) -> str | None:
    """The first model that is not the baseline, nor the baseline with the knowledge base: the one the headline, the wins
    and `compare`'s 'tuned' are about (so `--models base,base+rag,latest` still heads with base -> latest)."""
    others = [label for label in _summary_labels(summary) if label != summary["baseline"]]
    return next((label for label in others if label != summary["baseline"] + RAG_LABEL), next(iter(others), None))


def _model_lines(summary: dict[str, Any]) -> list[str]:
    """A line per model label: its base model and the adapter of each role it was evaluated with."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for model in summary.get("models", []):
        by_label.setdefault(model["label"], []).append(model)
    lines = []
    for label, models in by_label.items():
        adapters = ", ".join(f"{m['adapter']} ({m.get('role', 'answer')} role)" for m in models if m.get("adapter"))
        lines.append(f"- **{label}**: {models[0].get('base_model', '')}" + (f", adapter {adapters}" if adapters else "")
                     + (" (the baseline)" if label == summary["baseline"] else ""))
    return lines


def _metrics_in(dicts) -> list[str]:
    """The metric names used as keys of some of `dicts`, in the report's order."""
    seen = {name for d in dicts for name in d}
    return [m for m in TITLES if m in seen] + sorted(seen - set(TITLES))


def _number(metric: str, x: float) -> str:
    return f"{x:.3f}" if metric == LOSS else f"{x:.2f}"


def _signed(metric: str, x: float) -> str:
    return f"{x:+.3f}" if metric == LOSS else f"{x:+.2f}"


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _estimate_text(metric: str, e: dict[str, Any]) -> str:
    """'0.50 [0.24, 0.76] n=10'; the loss adds its perplexity."""
    text = f"{_number(metric, e['value'])} [{_number(metric, e['lo'])}, {_number(metric, e['hi'])}] n={e['n']}"
    if "perplexity" in e:
        ppl = e["perplexity"]
        text += f", perplexity {ppl['value']:.1f} [{ppl['lo']:.1f}, {ppl['hi']:.1f}]"
    return text


def _compact(metric: str, e: dict[str, Any]) -> str:
    return f"{_number(metric, e['value'])} [{_number(metric, e['lo'])}, {_number(metric, e['hi'])}] ({e['n']})"


def _delta_text(metric: str, c: dict[str, Any], markdown: bool = False) -> str:
    """'+0.10 [-0.20, +0.40] p=0.620 no significant difference'; better and worse stand out in markdown."""
    said = f"**{c['verdict']}**" if markdown and c["verdict"] != "no significant difference" else c["verdict"]
    return f"{_signed(metric, c['delta'])} [{_signed(metric, c['lo'])}, {_signed(metric, c['hi'])}] {_p(c['p'])} {said}"


def _markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return [f"| {' | '.join(headers)} |", f"|{'---|' * len(headers)}", *(f"| {' | '.join(row)} |" for row in rows)]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TutorError(f"{path}: unreadable ({err})") from None
