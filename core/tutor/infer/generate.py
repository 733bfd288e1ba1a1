"""Greedy generation for many prompts at once: what eval (and training's epoch checks) answer questions with.

One at a time, a 2-core CPU spends much of each decoding step reading the
weights, not multiplying by them: a step for 16 rows costs about 3 times a
step for one. But a batch of 16 run to its end (one `model.generate` call)
keeps stepping rows that have finished until its longest reply ends; on the
physics bank about a third of all row-steps were such waste, and batching
16 gave only 2.7-2.8 times one at a time.

So this is continuous batching over a KV cache, in a loop of our own over
the model's forward:
  - each prompt is prefilled on its own (no padding; its logits are those
    one-at-a-time decoding sees) and joins the running batch;
  - each step feeds every running row its last token, at its own position,
    with an attention mask that hides the left padding of shorter rows;
  - a row that ends (a stop token, or max_new_tokens) leaves the batch at
    once, and a waiting prompt takes its place, so every step stays full
    until the queue runs dry. When the rows change, the caches are joined
    by left-padding keys and values to the longest row (padding is masked),
    trimmed of columns no row still needs.
The repetition penalty is transformers' own RepetitionPenaltyLogitsProcessor,
applied to each row's real tokens (prompt and reply so far): batching with
`model.generate` penalised the padding token too, which for SmolLM2 is its
end of turn, and so lengthened batched replies.

The settings are `ask`'s (greedy, repetition penalty 1.1): batch_size 1 is
token for token `model.generate` one prompt at a time, and a batched reply
is that reply, up to float rounding in batched arithmetic.

Measured by bench/eval.py --only generate (50 physics bank questions, 128
new tokens, SmolLM2-135M in float32, 2-core AMD EPYC), batched over one at
a time: `model.generate` per batch of 16, 2.7-2.8x. This loop: 1.7x on 8 short
replies (96 new tokens); its bench/eval.py ratio is still to be measured on a quiet machine.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import TutorError

REPETITION_PENALTY = 1.1  # as ask: small models loop without it
ROOM = 64  # columns a cache keeps free to append to in place


class Reply(NamedTuple):
    text: str
    cut: bool  # stopped by max_new_tokens rather than by the model's end of turn
    tokens: int  # new tokens generated


def prompt_text(tokenizer, messages: list[dict[str, str]]) -> str:
    """A conversation as the model's chat template writes it, ready for the assistant's turn."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


@dataclass
class _Row:
    """One conversation being answered: its tokens so far, the prompt's and then the reply's."""

    index: int  # in the caller's list
    ids: list[int]
    prompt_length: int

    @property
    def new(self) -> list[int]:
        return self.ids[self.prompt_length:]

    @property
    def cached(self) -> int:
        """Tokens in the KV cache: all but the last, which is the next step's input."""
        return len(self.ids) - 1


def generate_batch(model, tokenizer, conversations: list[list[dict[str, str]]], *, max_new_tokens: int = 384, batch_size: int = 16,
                   advance: Callable[[int], None] | None = None) -> list[Reply]:
    """Greedy replies to every conversation, in their order; `advance(n)` each time n more replies are finished.

    At most batch_size rows decode together; batch_size 1 decodes one at a time (the baseline bench/eval.py measures against).
    """
    import torch

    if max_new_tokens < 1 or batch_size < 1:
        raise TutorError(f"generation needs max_new_tokens and batch_size of at least 1, not {max_new_tokens} and {batch_size}")
    # The template already holds the special tokens it wants (BOS where the model uses one).
    prompts = [tokenizer(prompt_text(tokenizer, messages), add_special_tokens=False)["input_ids"] for messages in conversations]
    waiting = deque(sorted(range(len(prompts)), key=lambda i: -len(prompts[i])))  # longest first: too big for memory fails at once
    decoder = _Decoder(model, _stop_ids(model, tokenizer), max_new_tokens)
    replies: list[Reply | None] = [None] * len(prompts)
    rows, cache = [], None
    with torch.no_grad():
        while waiting or rows:
            joining = []
            while waiting and len(rows) + len(joining) < batch_size:
                index = waiting.popleft()
                joining.append(decoder.prefill(_Row(index, list(prompts[index]), len(prompts[index]))))
            if rows:
                decoder.step(rows, cache)
            done = [row for row in rows + [row for row, _ in joining] if decoder.finished(row)]
            for row in done:
                replies[row.index] = _reply(tokenizer, row.new, decoder.stops)
            if done and advance:
                advance(len(done))
            if done or joining:
                rows, cache = _regroup(rows, cache, [(row, alone) for row, alone in joining if not decoder.finished(row)], decoder)
    return replies  # type: ignore[return-value]


class _Decoder:
    """The model's forward, one token at a time, greedy with the repetition penalty."""

    def __init__(self, model, stops: set[int], max_new_tokens: int):
        from transformers import RepetitionPenaltyLogitsProcessor

        self.model, self.stops, self.max_new_tokens = model, stops, max_new_tokens
        self.penalty = RepetitionPenaltyLogitsProcessor(REPETITION_PENALTY)

    def finished(self, row: _Row) -> bool:
        return len(row.ids) > row.prompt_length and (row.ids[-1] in self.stops or len(row.new) >= self.max_new_tokens)

    def prefill(self, row: _Row):
        """Run the row's prompt through the model alone, choose its first token; the row and its own cache."""
        import torch
        from transformers import DynamicCache

        cache = DynamicCache()
        output = self.model(input_ids=torch.tensor([row.ids], device=self.model.device), cache=cache, use_cache=True, logits_to_keep=1)
        self._choose([row], output.logits[:, -1])
        return row, cache

    def step(self, rows: list[_Row], cache) -> None:
        """One token more for every row: each sees its own tokens only, at its own positions."""
        import torch

        device = self.model.device
        width = cache.get_seq_length()
        cached = torch.tensor([row.cached for row in rows], device=device)
        # Left padding hidden, the new token seen; no mask where no row is padded (one at a time), as `generate` does.
        mask = None if all(row.cached == width for row in rows) else torch.arange(width + 1, device=device) >= (width - cached)[:, None]
        output = self.model(input_ids=torch.tensor([[row.ids[-1]] for row in rows], device=device), attention_mask=mask,
                            position_ids=cached[:, None], cache=cache, use_cache=True, logits_to_keep=1)
        self._choose(rows, output.logits[:, -1])

    def _choose(self, rows: list[_Row], logits) -> None:
        """Append each row's greedy token, after the penalty on every token of its prompt and reply so far (as `generate` does)."""
        import torch

        logits = logits.float()
        scores = torch.cat([self.penalty(torch.tensor([row.ids], device=logits.device), logits[n:n + 1]) for n, row in enumerate(rows)])
        for row, token in zip(rows, scores.argmax(dim=-1).tolist()):
            row.ids.append(token)


def _regroup(rows: list[_Row], cache, joining: list[tuple[_Row, object]], decoder: _Decoder):
    """The running rows that are not finished, then the joining ones, with one cache for them all.

    Each row's keys and values end at the last column, left-padded with zeros (which the step's mask hides) to the longest
    row's; columns that only finished rows needed are dropped.
    """
    from transformers.cache_utils import Cache

    kept = [n for n, row in enumerate(rows) if not decoder.finished(row)]
    rows = [rows[n] for n in kept] + [row for row, _ in joining]
    if not rows:
        return [], None
    width = max(row.cached for row in rows)
    parts = ([(cache, kept)] if kept else []) + [(alone, [0]) for _, alone in joining]
    layers = []
    for depth in range(len(parts[0][0].layers)):
        stores = []
        for states in ("keys", "values"):
            first = getattr(parts[0][0].layers[depth], states)  # [rows, heads, columns, head size]
            store = first.new_zeros(len(rows), first.shape[1], width + ROOM, first.shape[3])
            top = 0
            for part, chosen in parts:
                old = getattr(part.layers[depth], states)
                columns = min(width, old.shape[-2])
                store[top:top + len(chosen), :, width - columns:width] = old[chosen, :, -columns:]
                top += len(chosen)
            stores.append(store)
        layers.append(_roomy_layer_class()(*stores, width))
    return rows, Cache(layers=layers)


@functools.cache
def _roomy_layer_class():
    """transformers' DynamicLayer, but appending in place into room kept after its columns.

    DynamicLayer concatenates: every token copies the whole cache, which for 16 rows of 400 tokens on SmolLM2 is a fifth of a
    decoding step (the copy is memory-bound). Here a step writes one column; only running out of room copies.
    """
    import torch
    from transformers.cache_utils import DynamicLayer

    class RoomyLayer(DynamicLayer):
        def __init__(self, keys, values, length: int):
            super().__init__()
            self.device, self.is_initialized = keys.device, True
            self.stores = [keys, values]
            self._show(length)

        def update(self, key_states, value_states, *args, **kwargs):
            start = self.keys.shape[-2]
            end = start + key_states.shape[-2]
            if end > self.stores[0].shape[-2]:
                self.stores = [torch.nn.functional.pad(store, (0, 0, 0, end - store.shape[-2] + ROOM)) for store in self.stores]
            self.stores[0][..., start:end, :] = key_states
            self.stores[1][..., start:end, :] = value_states
            self._show(end)
            return self.keys, self.values

        def _show(self, length: int) -> None:
            self.keys, self.values = (store[..., :length, :] for store in self.stores)

    return RoomyLayer


def _stop_ids(model, tokenizer) -> set[int]:
    """Every token that ends the assistant's turn: the tokenizer's EOS and the generation config's (a list for some models)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _reply(tokenizer, tokens: list[int], stops: set[int]) -> Reply:
    """A finished row's reply: its new tokens but the stop token that ended it; cut when none did (max_new_tokens did)."""
    stopped = tokens[-1] in stops  # a finished row has at least one new token
    kept = tokens[:-1] if stopped else tokens
    text = tokenizer.decode(kept, skip_special_tokens=True).rstrip("\ufffd").strip()
    return Reply(text, cut=not stopped, tokens=len(kept))
