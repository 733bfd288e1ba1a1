"""Continuous batching for `tutor serve`: every running request decodes in one forward pass, whatever its adapter.

A scheduler thread owns the model. Each decoding step feeds every running
request its last token, at its own position, in one forward call; peft's
`adapter_names=` gives each row its own LoRA adapter (`"__base__"`: none), so
physics, chemistry and the plain base share a step and no global active
adapter is ever switched. (With plain LoRA adapters, lora.StackedLora does
what `adapter_names` does, a third faster.)

- A new request joins at the next step, not when the batch ends: its prompt is
  prefilled alone (so its first token is the one it would get alone) and its
  KV cache is joined to the batch's by left-padding, which the step's mask
  hides.
- A request leaves the batch the step it ends: a stop token, its max_tokens,
  one of its stop strings, or its client gone (`cancelled()`), so a
  disconnected client frees its slot at once.
- A request's shared prefix (its system prompt, which every question of a
  subject repeats) is prefilled once per adapter and kept: the next request
  with it starts from a copy of its keys and values.
- Greedy rows are what they would be alone (the no-cross-talk test checks this
  token for token); sampled rows draw from their own seeded generator.

The cache layout and the in-place appending layer are those the eval stage's
continuous-batching loop was measured with (tutor 7873d53): there, against
`model.generate` over a fixed list of prompts, it lost; here requests arrive
one by one and must not wait for each other, which `model.generate` cannot do.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..infer.generate import REPETITION_PENALTY

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed batch
ROOM = 64  # columns a cache keeps free to append to in place
MIN_PREFIX = 16  # a shared prefix shorter than this is not worth keeping
PREFIXES_KEPT = 16  # prefixes cached (about 7 MB each for a 150-token system prompt on SmolLM2-135M)


@dataclass
class Output:
    text: str
    finish_reason: str  # "stop", "length" or "cancelled"
    prompt_tokens: int
    completion_tokens: int


@dataclass(eq=False)
class Job:
    """One request: its prompt and settings, then its tokens as they are decoded."""

    prompt: list[int]
    adapter: str | None  # a peft adapter name; None: the base model
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False  # run to max_tokens (benchmarks): the stop token is then text like any other
    prefix: int = 0  # leading prompt tokens shared with other requests (the system prompt): prefilled once per adapter
    on_text: Callable[[str], None] | None = None
    cancelled: Callable[[], bool] = lambda: False
    # filled in by the scheduler
    ids: list[int] = field(default_factory=list)
    sent: str = ""
    finish: str | None = None
    text: str = ""
    output: Output | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    generator: object = None

    @property
    def new(self) -> list[int]:
        return self.ids[len(self.prompt):]

    @property
    def cached(self) -> int:
        """Tokens in the KV cache: all but the last, which is the next step's input."""
        return len(self.ids) - 1

    @property
    def sampling(self) -> bool:
        return bool(self.temperature and self.temperature > 0)

    def wait(self) -> Output:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.output  # type: ignore[return-value]


class Scheduler:
    """The model's decoding loop in a thread of its own; `submit` a Job and `job.wait()` for its Output."""

    def __init__(self, model, tokenizer, stops: set[int], *, max_batch: int = 8, mixed: bool = True, lora=None):
        """`lora`: a lora.StackedLora over the model's adapters; else, with `mixed`, peft's adapter_names; else the model as is."""
        from transformers import RepetitionPenaltyLogitsProcessor

        self.model, self.tokenizer, self.stops, self.max_batch, self.mixed = model, tokenizer, stops, max_batch, mixed
        self.lora = lora
        self.prefixes: OrderedDict = OrderedDict()  # (adapter, prefix tokens) -> its keys and values per layer, newest last
        self.prefix_hits = 0
        self.penalty = RepetitionPenaltyLogitsProcessor(REPETITION_PENALTY)
        self.waiting: deque[Job] = deque()
        self.running: list[Job] = []
        self.wake = threading.Condition()
        self.closed = False
        self.counts = defaultdict(lambda: {"requests": 0, "completion_tokens": 0, "prompt_tokens": 0, "cancelled": 0})
        self.steps = 0
        self.row_steps = 0
        self.peak = 0  # the most requests one step has decoded together
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._loop, name="tutor-batcher", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> Job:
        with self.wake:
            if self.closed:
                raise RuntimeError("the server is shutting down")
            self.waiting.append(job)
            self.wake.notify()
        return job

    def close(self) -> None:
        with self.wake:
            self.closed = True
            self.wake.notify()
        self.thread.join(timeout=30)

    # --- the loop ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        import torch

        cache = None
        while True:
            with self.wake:
                while not self.closed and not self.waiting and not self.running:
                    self.wake.wait()
                if self.closed:
                    break
                joining = []
                while self.waiting and len(self.running) + len(joining) < self.max_batch:
                    joining.append(self.waiting.popleft())
            try:
                with torch.no_grad():
                    joined = []
                    for job in joining:
                        if job.cancelled():
                            self._finish(job, "cancelled")
                            continue
                        joined.append(self._prefill(job))
                    if self.running:
                        self._step(self.running, cache)
                    for job in self.running + [job for job, _ in joined]:
                        self._after_token(job)
                    if joined or any(job.finish for job in self.running):
                        self.running, cache = _regroup(self.running, cache, [(j, c) for j, c in joined if not j.finish])
            except BaseException as err:  # noqa: BLE001 - every request of the batch gets the error; the loop goes on
                for job in self.running + joining:
                    if not job.done.is_set():
                        job.error = err
                        job.done.set()
                self.running, cache = [], None

    def _prefill(self, job: Job):
        """The job's prompt through the model alone, with its adapter; its first token, and its own cache."""
        import torch
        from transformers import DynamicCache

        job.ids = list(job.prompt)
        if job.sampling:
            job.generator = torch.Generator(device=self.model.device)
            job.generator.manual_seed(job.seed if job.seed is not None else int(time.time_ns() % 2**63))
        cache = DynamicCache()
        rest = job.ids
        if MIN_PREFIX <= job.prefix < len(job.ids):
            # Always in two pieces when there is a shared prefix, cached or not, so that a reply does not depend on what
            # other requests came before it.
            key = (job.adapter, tuple(job.ids[:job.prefix]))
            stored = self.prefixes.get(key)
            if stored is None:
                self.model(input_ids=torch.tensor([job.ids[:job.prefix]], device=self.model.device), cache=cache, use_cache=True,
                           logits_to_keep=1, **self._adapters([job]))
                self.prefixes[key] = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
                while len(self.prefixes) > PREFIXES_KEPT:
                    self.prefixes.popitem(last=False)
            else:
                self.prefixes.move_to_end(key)
                self.prefix_hits += 1
                for depth, (keys, values) in enumerate(stored):
                    cache.update(keys.clone(), values.clone(), depth)
            rest = job.ids[job.prefix:]
        output = self.model(input_ids=torch.tensor([rest], device=self.model.device), cache=cache, use_cache=True, logits_to_keep=1,
                            **self._adapters([job]))
        self._choose([job], output.logits[:, -1])
        return job, cache

    def _step(self, jobs: list[Job], cache) -> None:
        """One token more for every running job: each sees its own tokens only, at its own positions."""
        import torch

        device = self.model.device
        width = cache.get_seq_length()
        cached = torch.tensor([job.cached for job in jobs], device=device)
        mask = None if all(job.cached == width for job in jobs) else torch.arange(width + 1, device=device) >= (width - cached)[:, None]
        output = self.model(input_ids=torch.tensor([[job.ids[-1]] for job in jobs], device=device), attention_mask=mask,
                            position_ids=cached[:, None], cache=cache, use_cache=True, logits_to_keep=1, **self._adapters(jobs))
        self.steps += 1
        self.row_steps += len(jobs)
        self.peak = max(self.peak, len(jobs))
        self._choose(jobs, output.logits[:, -1])

    def _adapters(self, jobs: list[Job]) -> dict:
        """Each row's adapter for the next forward: set on the stacked LoRA, or peft's keyword."""
        if self.lora is not None:
            self.lora.select([job.adapter for job in jobs])
            return {}
        return {"adapter_names": [job.adapter or BASE_ADAPTER for job in jobs]} if self.mixed else {}

    def _choose(self, jobs: list[Job], logits) -> None:
        """Each job's next token, after the repetition penalty on its own prompt and reply so far (as `generate` applies it)."""
        import torch

        logits = logits.float()
        longest = max(len(job.ids) for job in jobs)
        # Padded with each row's own first token: the penalty counts a token once however often it appears, so this is exact.
        seen = torch.tensor([job.ids + [job.ids[0]] * (longest - len(job.ids)) for job in jobs], device=logits.device)
        scores = self.penalty(seen, logits)
        greedy = scores.argmax(dim=-1).tolist()
        for n, job in enumerate(jobs):
            job.ids.append(greedy[n] if not job.sampling else _sample(scores[n], job))
        now = time.monotonic()
        for job in jobs:
            if job.first_token is None:
                job.first_token = now

    def _after_token(self, job: Job) -> None:
        """Hand the job's new text to its client; finish it if it ended."""
        new = job.new
        stopped = bool(new) and new[-1] in self.stops and not job.ignore_eos
        kept = new[:-1] if stopped else new
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        finish = "stop" if stopped else None
        for stop in job.stop:
            at = text.find(stop)
            if at >= 0:
                text, finish = text[:at], "stop"
        if finish is None and len(new) >= job.max_tokens:
            finish = "length"
        if finish is None and job.cancelled():
            finish = "cancelled"
        job.text = text
        if finish is None:
            self._send(job, _shown(text, job.stop))
        else:
            self._send(job, text.rstrip("\ufffd"))
            self._finish(job, finish)

    def _send(self, job: Job, shown: str) -> None:
        if job.on_text and len(shown) > len(job.sent) and shown.startswith(job.sent):
            piece, job.sent = shown[len(job.sent):], shown
            try:
                job.on_text(piece)
            except Exception:  # noqa: BLE001 - a client that cannot take text is a client gone
                job.cancelled = lambda: True

    def _finish(self, job: Job, finish: str) -> None:
        new = job.new
        kept = len(new) - (1 if new and new[-1] in self.stops and not job.ignore_eos else 0)
        job.finish = finish
        job.output = Output(text=job.text.rstrip("\ufffd"), finish_reason=finish, prompt_tokens=len(job.prompt), completion_tokens=kept)
        counts = self.counts[job.adapter or BASE_ADAPTER]
        counts["requests"] += 1
        counts["prompt_tokens"] += len(job.prompt)
        counts["completion_tokens"] += kept
        counts["cancelled"] += finish == "cancelled"
        job.done.set()


def _shown(text: str, stops: list[str]) -> str:
    """What may be sent of `text` so far: not a character still being decoded (U+FFFD), nor a tail that may become a stop string."""
    text = text.rstrip("\ufffd")
    hold = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                hold = max(hold, size)
                break
    return text[:len(text) - hold]


def _sample(scores, job: Job) -> int:
    """A token drawn at the job's temperature, within its top_p, from its own generator."""
    import torch

    probs = torch.softmax(scores / job.temperature, dim=-1)
    if job.top_p is not None and job.top_p < 1:
        ordered, order = probs.sort(descending=True)
        keep = ordered.cumsum(-1) - ordered < job.top_p  # the smallest set whose mass reaches top_p (the first always kept)
        probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
    return int(torch.multinomial(probs, 1, generator=job.generator).item())


def _regroup(jobs: list[Job], cache, joining: list[tuple[Job, object]]):
    """The running jobs that are not finished, then the joining ones, with one cache for them all.

    Each row's keys and values end at the last column, left-padded with zeros (which the step's mask hides) to the longest
    row's; columns that only finished rows needed are dropped.
    """
    from transformers.cache_utils import Cache

    kept = [n for n, job in enumerate(jobs) if not job.finish]
    jobs = [jobs[n] for n in kept] + [job for job, _ in joining]
    if not jobs:
        return [], None
    width = max(job.cached for job in jobs)
    parts = ([(cache, kept)] if kept else []) + [(alone, [0]) for _, alone in joining]
    layers = []
    for depth in range(len(parts[0][0].layers)):
        stores = []
        for states in ("keys", "values"):
            like = getattr(parts[0][0].layers[depth], states)
            store = like.new_zeros(len(jobs), like.shape[1], width + ROOM, like.shape[3])
            top = 0
            for part, chosen in parts:
                old = getattr(part.layers[depth], states)
                columns = min(width, old.shape[-2])
                store[top:top + len(chosen), :, width - columns:width] = old[chosen, :, -columns:]
                top += len(chosen)
            stores.append(store)
        layers.append(_roomy_layer_class()(*stores, width))
    return jobs, Cache(layers=layers)


@functools.cache
def _roomy_layer_class():
    """transformers' DynamicLayer, appending in place into room kept after its columns.

    DynamicLayer concatenates, so every token copies the whole cache (memory-bound: a fifth of a step for 16 rows of 400
    tokens on SmolLM2). Here a step writes one column; only running out of room copies.
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
