"""What an evaluation run records: one ItemResult per model and item, and the metrics they feed.

results.jsonl holds one ItemResult per line; summary.json and report.md are
computed from them alone (report.py), so a saved run can be re-reported,
shown and compared without a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from ..models import Model, Score

RESULTS = "results.jsonl"
SUMMARY = "summary.json"
REPORT = "report.md"
RUN_INFO = "run.json"  # what the run was asked to do: models, sets, options (written first)

# Metrics eval computes itself; every registered evaluator adds one more, named after it.
MCQ_LOGLIK = "mcq-loglik"  # MCQ accuracy from the log-likelihood of ' A', ' B', ... (lm-evaluation-harness)
DIAGRAM_COMPILES = "diagram-compiles"  # generated diagram code compiles at the first try
RAG_LABEL = " +rag"  # a model label's suffix when it was evaluated with the knowledge base (NAME+rag)
JUDGE = "judge"  # mark-scheme coverage as a model judge marks it (--judge teacher)
LOSS = "loss"  # mean token NLL of the gold answer (teacher-forced); perplexity is exp(loss)


class ItemResult(Model):
    """One model's result on one item: a bank question, a row of an MCQ file, or a diagram description."""

    model: str = Field(description="The model's label in this run: 'base', or an adapter run's name.")
    set: str = Field(description="What the item came from: 'test split', 'validation split', 'bank', or an MCQ file's name.")
    kind: Literal["question", "diagram"]
    item: str = Field(description="The question id ('file:line' for an MCQ file's row), or the diagram id.")
    type: str = ""
    topic: str = ""
    level: str = ""
    format: str = Field(default="", description="The question's format (mcq, calculation...), or the diagram's format.")
    prompt: list[dict[str, str]] = Field(default_factory=list, description="The chat messages the model answered.")
    output: str = ""
    cut: bool = Field(default=False, description="The reply stopped at max_new_tokens.")
    scores: dict[str, Score] = Field(default_factory=dict, description="Metric name -> score of this item.")
    gold: str = Field(default="", description="The MCQ key.")
    chosen: dict[str, str | None] = Field(default_factory=dict,
                                          description="The letter each MCQ metric read: {'mcq-loglik': 'B', 'mcq': None}.")
    logliks: dict[str, float] = Field(default_factory=dict, description="MCQ option letter -> log-likelihood of ' <letter>'.")
    loss: tuple[float, int] | None = Field(default=None, description="Summed NLL of the gold answer's tokens, and their number.")


@dataclass(frozen=True)
class ModelInfo:
    """A model of the run, as summary.json lists it."""

    label: str
    base_model: str
    adapter: str | None  # the adapter folder; None for the base model alone
    role: str = "answer"
