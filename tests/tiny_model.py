"""A tiny random Llama built in a second, for tests that need a real model but not a good one.

2 layers of width 32 with a 1,000-token BPE trained on the physics bank, and a
ChatML template (the layout SmolLM2 uses): training, generation and scoring
run through the real torch/transformers/peft code paths in seconds.
"""

from pathlib import Path

# A ChatML template (the layout SmolLM2 uses), written for these tests.
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_tiny_model(folder: Path) -> Path:
    """Save the tiny model and its tokenizer in `folder` (a base model any `--model`/[model] base accepts)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from tutor.bank import load_bank
    from tutor.registry import get_subject

    physics = get_subject("physics")
    bank = load_bank(physics, physics.subject.bank)
    texts = [q.stem for q in bank.questions] + [a.text for a in bank.answers] + [d.code for d in bank.diagrams]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=1000, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHATML
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_smol_model(folder: Path, tokenizer_source: str | Path, initializer_range: float = 0.2) -> Path:
    """A tiny random Llama with SmolLM2-135M's own tokenizer, chat template and token ids, in `folder`.

    For tests that need llama.cpp's GGUF converter to accept the model: it recognises a tokenizer by the hash
    of how it pre-tokenizes, so the custom BPE of `build_tiny_model` would be refused. `tokenizer_source` is a
    folder holding SmolLM2's tokenizer (the embedded model's: tutor.basemodels.resolve().location). Its weights
    are drawn ten times wider than transformers' default (initializer_range 0.2), so greedy continuations vary
    from token to token instead of repeating one: a round trip that changes the weights shows.
    """
    import json

    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    source = json.loads((Path(tokenizer_source) / "config.json").read_text()) if (Path(tokenizer_source) / "config.json").is_file() else {}
    ids = {key: source.get(key, getattr(tokenizer, key, None)) for key in ("bos_token_id", "eos_token_id", "pad_token_id")}
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=source.get("tie_word_embeddings", True),
                         rms_norm_eps=1e-5, initializer_range=initializer_range, **ids)
    config.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
