"""Tokenizers: a checkpoint's own (AutoTokenizer), or the synthetic world's small byte-level BPE.

The synthetic tokenizer is trained with the ``tokenizers`` library like GPT-2/Qwen (byte-level,
so any text round-trips), and its last ids are Qwen2.5-VL's special tokens in Qwen's order plus
MiMo's thinking tags (``mimolab.config.SPECIAL_TOKENS``), so presets know their ids without
loading anything. It carries a Qwen2.5-VL chat template extended for thinking and is saved as a
standard tokenizer directory that ``transformers.AutoTokenizer`` loads.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mimolab.config import SPECIAL_TOKENS, SYNTHETIC_VOCAB_SIZE, special_token_ids

DEFAULT_SYSTEM_PROMPT = "You are MiMo, an AI assistant developed by Xiaomi."

# Qwen2.5-VL's chat template (images and videos become <|vision_start|><|image_pad|><|vision_end|>,
# expanded later to one pad per merged patch; no whitespace control, every newline is explicit), plus: `enable_thinking=False` pre-fills an empty
# think block, the way MiMo-VL's first release turned thinking off.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)


def default_corpus() -> list[str]:
    """A small built-in corpus; the synthetic world's own text is the better training set."""
    words = ("the a red green blue yellow purple orange circle square triangle star small large left right top bottom "
             "center how many objects are there count answer box click type button menu field dialog chart value "
             "table row column video second seconds appears leaves moves frame think step first then so total sum "
             "difference product equals because therefore describe image picture read text number").split()
    lines = [" ".join(words[i:i + 9]) for i in range(0, len(words), 3)]
    lines += [f"{a} + {b} = {a + b}" for a in range(0, 100, 7) for b in range(0, 100, 11)]
    lines += ['[{"bbox_2d": [12, 34, 56, 78], "label": "red circle"}]', "click(112, 56)", 'type("hello")',
              "[00:01, 00:04]", "\\boxed{42}", "<think>\n...\n</think>\n\n"]
    return lines


def train_synthetic_tokenizer(texts: Iterable[str] | None = None, vocab_size: int = SYNTHETIC_VOCAB_SIZE,
                              out_dir: str | Path | None = None):
    """A byte-level BPE of exactly ``vocab_size`` ids whose tail is SPECIAL_TOKENS, as a
    ``PreTrainedTokenizerFast`` with the chat template; saved to ``out_dir`` when given."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    base = vocab_size - len(SPECIAL_TOKENS)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=base, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=[])
    tok.train_from_iterator(list(texts) if texts is not None else default_corpus(), trainer=trainer)
    if tok.get_vocab_size() > base:
        raise RuntimeError(f"BPE vocabulary grew to {tok.get_vocab_size()} > {base}")
    # pad the learned vocabulary up to `base` so the special tokens land on their fixed ids
    filler = [f"<|reserved_{i}|>" for i in range(base - tok.get_vocab_size())]
    tok.add_special_tokens(filler)
    tok.add_special_tokens(SPECIAL_TOKENS)
    ids = special_token_ids(vocab_size)
    got = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    if got != ids:
        raise RuntimeError(f"special tokens landed on unexpected ids: {got}")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None, chat_template=CHAT_TEMPLATE,
                                   model_max_length=32768, clean_up_tokenization_spaces=False)
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def load_tokenizer(path: str | Path):
    """A checkpoint directory's own tokenizer (and chat template) via AutoTokenizer."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir() or not any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        raise FileNotFoundError(f"{path} holds no tokenizer files (tokenizer.json / tokenizer_config.json)")
    return AutoTokenizer.from_pretrained(str(path))
