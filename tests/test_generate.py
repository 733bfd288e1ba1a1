"""Batched greedy generation: the same replies as transformers' own `generate` on one prompt at a time, token for token.

The model is the tiny random Llama of tiny_model.py with its matrices drawn
again, wider (std 0.3): as saved (std 0.02) it repeats one token forever, so
every way of decoding would agree. Its replies mean nothing, so they are
compared exactly. It never ends a turn by itself within a few dozen tokens,
so the tests name extra stop tokens (through the generation config, where
real models keep theirs), picked from its free replies so that rows end at
different steps: finished rows are padded while the others go on.
"""

import pytest
from tutor.errors import TutorError
from tutor.infer.generate import REPETITION_PENALTY, Reply, generate_batch, prompt_text

MAX_NEW = 24
WORDS = "force energy mass the of acceleration velocity newton joule watt a ball is dropped from rest".split()
# Seven prompts of different lengths (5 to 65 words), so rows are padded against each other.
CONVERSATIONS = [[{"role": "user", "content": " ".join(WORDS[(3 * n + k) % len(WORDS)] for k in range(5 + 10 * n))}]
                 for n in (3, 0, 6, 1, 5, 2, 4)]


@pytest.fixture(scope="module")
def tiny(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for weights in model.parameters():
            if weights.dim() == 2:  # the embedding and the projections; the norms stay ones
                weights.normal_(0, 0.3)
    # Its matrices are 32 wide: a second thread only waits on the first, and on a busy machine it waits a hundredfold.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield model, AutoTokenizer.from_pretrained(tiny_model)
    torch.set_num_threads(threads)


def plain_generate(model, tokenizer, conversation, stops: list[int], max_new_tokens: int = MAX_NEW) -> list[int]:
    """transformers' `generate` on one prompt, with ask's settings: its new tokens."""
    import torch

    inputs = tokenizer(prompt_text(tokenizer, conversation), add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, repetition_penalty=REPETITION_PENALTY,
                                eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
    return output[0, inputs["input_ids"].shape[1]:].tolist()


def expected_reply(tokenizer, tokens: list[int], stops: list[int], max_new_tokens: int = MAX_NEW) -> Reply:
    """What a reply of these new tokens must read: the tokens before the first stop; cut when none came.

    A character whose bytes the limit cut in half decodes as U+FFFD at the end: not part of the reply.
    """
    end = next((n for n, token in enumerate(tokens) if token in stops), None)
    kept = tokens[:end]
    assert end is not None or len(tokens) == max_new_tokens
    return Reply(tokenizer.decode(kept, skip_special_tokens=True).rstrip("\ufffd").strip(), cut=end is None, tokens=len(kept))


@pytest.fixture
def stops(tiny):
    """End of turn plus three tokens from the free replies, set as the model's stop tokens: replies end after 0 to MAX_NEW tokens."""
    model, tokenizer = tiny
    free = [plain_generate(model, tokenizer, conversation, [tokenizer.eos_token_id]) for conversation in CONVERSATIONS[:3]]
    chosen = [tokenizer.eos_token_id, free[0][6], free[1][0], free[2][15]]  # the second prompt stops on its first token
    original = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = chosen
    yield chosen
    model.generation_config.eos_token_id = original


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_replies_are_transformers_generate_one_prompt_at_a_time(tiny, stops, batch_size):
    model, tokenizer = tiny
    expected = [expected_reply(tokenizer, plain_generate(model, tokenizer, conversation, stops), stops) for conversation in CONVERSATIONS]
    assert generate_batch(model, tokenizer, CONVERSATIONS, max_new_tokens=MAX_NEW, batch_size=batch_size) == expected
    # The case is a real test of batching: rows end at different steps, some by a stop token, some by the limit.
    assert len({reply.tokens for reply in expected}) >= 3 and {reply.cut for reply in expected} == {True, False}
    assert expected[1] == Reply("", cut=False, tokens=0)


def test_cut_and_tokens_count_the_new_tokens_before_the_stop(tiny, stops):
    model, tokenizer = tiny
    free = plain_generate(model, tokenizer, CONVERSATIONS[0], stops, max_new_tokens=40)
    assert next(n for n, token in enumerate(free) if token in stops) == 6  # the stops fixture's choice, no earlier stop
    limited = generate_batch(model, tokenizer, CONVERSATIONS[:1], max_new_tokens=4, batch_size=2)
    assert limited == [expected_reply(tokenizer, free[:4], stops, max_new_tokens=4)] and limited[0][1:] == (True, 4)
    # A stop token as the very last allowed token ends the turn: not cut.
    assert generate_batch(model, tokenizer, CONVERSATIONS[:1], max_new_tokens=7, batch_size=2)[0][1:] == (False, 6)
    assert generate_batch(model, tokenizer, CONVERSATIONS[:1], max_new_tokens=40)[0][1:] == (False, 6)


def test_advance_counts_every_reply_once_as_it_finishes(tiny, stops):
    model, tokenizer = tiny
    one_by_one, batched = [], []
    generate_batch(model, tokenizer, CONVERSATIONS, max_new_tokens=MAX_NEW, batch_size=1, advance=one_by_one.append)
    generate_batch(model, tokenizer, CONVERSATIONS, max_new_tokens=MAX_NEW, batch_size=3, advance=batched.append)
    assert one_by_one == [1] * len(CONVERSATIONS)
    assert sum(batched) == len(CONVERSATIONS) and all(n >= 1 for n in batched) and len(batched) > 1


def test_an_active_lora_adapter_generates_as_with_generate(tiny, stops):
    import torch
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny
    torch.manual_seed(1)
    tuned = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    try:
        replies = generate_batch(tuned, tokenizer, CONVERSATIONS, max_new_tokens=MAX_NEW, batch_size=4)
        expected = [expected_reply(tokenizer, plain_generate(tuned, tokenizer, c, stops), stops) for c in CONVERSATIONS]
        with tuned.disable_adapter():
            base = generate_batch(tuned, tokenizer, CONVERSATIONS, max_new_tokens=MAX_NEW, batch_size=4)
    finally:
        tuned.unload()  # the module's model goes back to its own weights for the other tests
    assert replies == expected
    assert replies != base  # the adapter was in use


def test_no_conversations_no_replies_and_bad_sizes_are_refused(tiny):
    model, tokenizer = tiny
    assert generate_batch(model, tokenizer, []) == []
    with pytest.raises(TutorError, match="max_new_tokens and batch_size of at least 1, not 0 and 24"):
        generate_batch(model, tokenizer, CONVERSATIONS, max_new_tokens=0)
    with pytest.raises(TutorError, match="not 8 and 0"):
        generate_batch(model, tokenizer, CONVERSATIONS, max_new_tokens=8, batch_size=0)
