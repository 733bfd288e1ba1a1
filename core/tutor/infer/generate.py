"""Greedy generation for many prompts at once: what eval (and training's epoch checks) answer questions with.

One at a time, a 2-core CPU spends much of each decoding step reading the
weights, not multiplying by them: a step for 24 rows costs little more than
a step for one. So prompts are answered in batches by transformers' own
`model.generate`, left-padded, with `answer`'s settings (greedy, repetition
penalty 1.1). A batched reply is the one-at-a-time reply up to float rounding
in batched arithmetic.

Prompts are sorted by length before they are cut into batches, so a batch
pads its rows against prompts of about the same length.

A batch runs until its longest reply ends, stepping rows that have finished.
An earlier version decoded with continuous batching in a loop of our own over
the model's forward: rows left as they ended and waiting prompts took their
place. On this stack it was slower, not faster: each prompt's own prefill,
the regrouping of KV caches and the per-row penalty cost more than the
wasted row-steps they saved (physics test split, 384 new tokens: 429 s
against 100 s for `model.generate` in batches).

Measured by bench/eval.py (50 physics bank questions, at most 128 new
tokens, SmolLM2-135M in float32, 2-core AMD EPYC with avx512_bf16), against
one at a time: batches of 24 (eval's default) 72.6 s against 227.6 s, 3.13x,
all 50 replies identical. Batches of 16 gave 2.8-2.9x and of 50 were slower
than of 25 (75 s against 95 s): past about two dozen rows a step stops being
nearly free on two cores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ..errors import TutorError

REPETITION_PENALTY = 1.1  # as ask: small models loop without it


class Reply(NamedTuple):
    text: str
    cut: bool  # stopped by max_new_tokens rather than by the model's end of turn
    tokens: int  # new tokens generated


def prompt_text(tokenizer, messages: list[dict[str, str]]) -> str:
    """A conversation as the model's chat template writes it, ready for the assistant's turn."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def generate_batch(model, tokenizer, conversations: list[list[dict[str, str]]], *, max_new_tokens: int = 384, batch_size: int = 24,
                   advance: Callable[[int], None] | None = None) -> list[Reply]:
    """Greedy replies to every conversation, in their order; `advance(n)` each time n more replies are finished.

    At most batch_size rows decode together; batch_size 1 decodes one at a time (the baseline bench/eval.py measures against).
    """
    import torch

    if max_new_tokens < 1 or batch_size < 1:
        raise TutorError(f"generation needs max_new_tokens and batch_size of at least 1, not {max_new_tokens} and {batch_size}")
    # The template already holds the special tokens it wants (BOS where the model uses one).
    prompts = [tokenizer(prompt_text(tokenizer, messages), add_special_tokens=False)["input_ids"] for messages in conversations]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # longest first: too big for memory fails at once
    stops = stop_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stops)
    replies: list[Reply | None] = [None] * len(prompts)
    # Batches of equal size, not full ones and a remainder: 50 prompts in batches of 16 are 13+13+12+12, since a
    # batch of 2 at the end would take as many steps as a full one for an eighth of the replies.
    batches = -(-len(order) // batch_size)
    size = -(-len(order) // batches) if batches else batch_size
    for start in range(0, len(order), size):
        chosen = order[start:start + size]
        width = max(len(prompts[i]) for i in chosen)
        # Left padding, hidden by the attention mask: every row's reply starts at the same column.
        ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in chosen], device=model.device)
        mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in chosen], device=model.device)
        with torch.no_grad():
            output = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                    repetition_penalty=REPETITION_PENALTY, eos_token_id=sorted(stops), pad_token_id=pad,
                                    temperature=None, top_p=None, top_k=None)
        for row, index in enumerate(chosen):
            replies[index] = _reply(tokenizer, output[row, width:].tolist(), stops)
        if advance:
            advance(len(chosen))
    return replies  # type: ignore[return-value]


def stop_ids(model, tokenizer) -> set[int]:
    """Every token that ends the assistant's turn: the tokenizer's EOS and the generation config's (a list for some models)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def until_stop(tokens: list[int], stops: set[int]) -> tuple[list[int], bool]:
    """(the new tokens before the first stop token, whether one came): a finished row of a batch is padded after it."""
    end = next((n for n, token in enumerate(tokens) if token in stops), None)
    return (tokens, False) if end is None else (tokens[:end], True)


def _reply(tokenizer, tokens: list[int], stops: set[int]) -> Reply:
    """A row's reply: its new tokens before the first stop token; cut when none came."""
    kept, stopped = until_stop(tokens, stops)
    text = tokenizer.decode(kept, skip_special_tokens=True).rstrip("\ufffd").strip()
    return Reply(text, cut=not stopped, tokens=len(kept))
