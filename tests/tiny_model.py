"""A tiny random-weight Llama chat model, built in seconds with no download."""

from __future__ import annotations

from pathlib import Path

CORPUS = ["the quick brown fox jumps over the lazy dog", "hello world, how are you today?",
          "system user assistant: what is two plus two? four."]
# Refuses unknown roles the way real templates refuse malformed chats.
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + m['role']) }}{% endif %}"
    "<s>{{ m['role'] }}\n{{ m['content'] }}</s>"
    "{% endfor %}{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)
CONTEXT = 4096  # long enough that an unstopped generation would outlast any test deadline


def build(directory: Path, hidden: int = 32, layers: int = 2, every_byte: bool = True) -> Path:
    """Save a random Llama (2 layers of width 32 unless told) and a byte-level BPE tokenizer with
    a chat template to `directory`. With `every_byte`, the vocabulary holds all 256 bytes, so
    random weights also write partial UTF-8 characters; without, only the corpus's ASCII."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(CORPUS * 10, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if every_byte else []))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CONTEXT,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    model.generation_config.do_sample = False
    model.save_pretrained(directory)
    return directory
