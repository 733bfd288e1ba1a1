"""GRPO reward for multiple choice: 1 when the completion commits to the key."""

from tutor import hookimpl
from tutor.default_plugins.evaluators import score_mcq
from tutor.models import Reward, RewardBatch


def mcq_correct(batch: RewardBatch) -> list[float]:
    return [score_mcq(q, c).fraction if q is not None and q.is_mcq else 0.0 for q, c in zip(batch.questions, batch.completions, strict=True)]


@hookimpl
def register_rewards(register):
    register(Reward(name="mcq-correct", description="1.0 when an MCQ completion chooses the key, else 0.", task="answer", score=mcq_correct))
