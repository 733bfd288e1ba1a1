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
