"""Tokenizers: a checkpoint's own (AutoTokenizer), or the synthetic world's small byte-level BPE.

The synthetic tokenizer is trained with the ``tokenizers`` library and pre-tokenises exactly like
Qwen2 (its split regex, single digits, then byte-level), so any text round-trips. Its last ids are
Qwen2.5-VL's special tokens in Qwen's order plus MiMo's thinking tags
(``mimolab.config.SPECIAL_TOKENS``), so presets know their ids without loading anything. Like
Qwen's own tokenizer, only the control tokens are "special" (dropped by
``decode(skip_special_tokens=True)``); ``<tool_call>``, the FIM tokens and ``<think>``/``</think>``
are ordinary added tokens, so a decoded reply keeps its thinking tags.

The chat template is Qwen2.5-VL's own text (``QWEN25_VL_CHAT_TEMPLATE``) with two changes: the
default system prompt is MiMo's, and the generation prompt can pre-fill an empty think block
(``enable_thinking=False``, or a last user message ending with ``/no_think`` / ``<no_think>``),
the way MiMo-VL turns thinking off. ``split_thinking`` parses a reply back into (thinking, answer).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from mimolab.config import SPECIAL_TOKENS, SYNTHETIC_VOCAB_SIZE, THINK_TOKENS, special_token_ids

DEFAULT_SYSTEM_PROMPT = "You are MiMo, an AI assistant developed by Xiaomi."
QWEN_SYSTEM_PROMPT = "You are a helpful assistant."

# Qwen2's pre-tokenisation regex (digits one by one; tiktoken's cl100k splits them in threes).
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                 r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")

# In Qwen2.5's tokenizer these added tokens are not "special": decoding keeps them. MiMo's thinking
# tags are treated the same way, so `skip_special_tokens=True` never loses the reasoning.
NOT_SPECIAL = {"<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
               "<|repo_name|>", "<|file_sep|>", *THINK_TOKENS}

# Qwen2.5-VL-*-Instruct's chat_template.json, verbatim (the 'image_url' test included).
QWEN25_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The thinking switch: remember the last user message's text while looping (a namespace, because
# Jinja's loop scope hides plain `set`), then pre-fill an empty think block after the prompt.
_REMEMBER_USER = (
    "{% if message['role'] == 'user' %}{% if message['content'] is string %}"
    "{% set think.user = message['content'] %}{% else %}{% set think.user = '' %}"
    "{% for c in message['content'] %}{% if 'text' in c %}{% set think.user = c['text'] %}"
    "{% endif %}{% endfor %}{% endif %}{% endif %}"
)
_THINKING_PROMPT = (
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if (enable_thinking is defined and not enable_thinking) or think.user.rstrip().endswith('/no_think')"
    " or think.user.rstrip().endswith('<no_think>') %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def chat_template(system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> str:
    """Qwen2.5-VL's template with ``system_prompt`` as the default system turn, thinking-aware."""
    if any(mark in system_prompt for mark in ("{{", "{%", "{#")):
        raise ValueError("the system prompt must not contain Jinja delimiters: it is pasted into the template text")
    loop_open = "{% for message in messages %}"
    template = QWEN25_VL_CHAT_TEMPLATE.replace(QWEN_SYSTEM_PROMPT, system_prompt)
    template = template.replace(loop_open, "{% set think = namespace(user='') %}" + loop_open + _REMEMBER_USER, 1)
    generation = "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    assert template.endswith(generation)
    return template[: -len(generation)] + _THINKING_PROMPT


CHAT_TEMPLATE = chat_template()


def default_corpus() -> list[str]:
    """A small built-in corpus; the synthetic world's own text is the better training set."""
    words = ("the a red green blue yellow purple orange circle square triangle star small large left right top bottom "
             "center how many objects are there count answer box click type button menu field dialog chart value "
             "table row column video second seconds appears leaves moves frame think step first then so total sum "
             "difference product equals because therefore describe image picture read text number").split()
    lines = [" ".join(words[i:i + 9]) for i in range(0, len(words), 3)]
    lines += [f"{a} + {b} = {a + b}" for a in range(0, 100, 7) for b in range(0, 100, 11)]
    lines += ['[{"bbox_2d": [12, 34, 56, 78], "label": "red circle"}]', "click(112, 56)", 'type("hello")',
              "[00:01, 00:04]", "\\boxed{42}", "<think>\n...\n</think>\n\n", "Count them. /no_think"]
    return lines


def _byte_level_bpe(texts: Iterable[str], size: int):
    """A Qwen2-style byte-level BPE of at most ``size`` tokens (the 256 bytes included)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=[])
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def train_synthetic_tokenizer(texts: Iterable[str] | None = None, vocab_size: int = SYNTHETIC_VOCAB_SIZE,
                              out_dir: str | Path | None = None):
    """A byte-level BPE of exactly ``vocab_size`` ids whose tail is SPECIAL_TOKENS, as a
    ``PreTrainedTokenizerFast`` with the chat template; saved to ``out_dir`` when given."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    base = vocab_size - len(SPECIAL_TOKENS)
    if base < 256:
        raise ValueError(f"vocab_size {vocab_size} leaves no room for the 256 byte tokens and {len(SPECIAL_TOKENS)} specials")
    tok = _byte_level_bpe(list(texts) if texts is not None else default_corpus(), base)
    if tok.get_vocab_size() > base:
        raise RuntimeError(f"BPE vocabulary grew to {tok.get_vocab_size()} > {base}")
    # a small corpus learns fewer merges: pad with unused tokens so the specials land on their fixed ids
    tok.add_special_tokens([f"<|reserved_{i}|>" for i in range(base - tok.get_vocab_size())])
    tok.add_tokens([AddedToken(t, special=t not in NOT_SPECIAL, normalized=False) for t in SPECIAL_TOKENS])
    got = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    if got != special_token_ids(vocab_size) or tok.get_vocab_size() != vocab_size:
        raise RuntimeError(f"special tokens landed on unexpected ids: {got}")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None, chat_template=CHAT_TEMPLATE,
                                   model_max_length=32768, clean_up_tokenization_spaces=False)
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def load_tokenizer(path: str | Path):
    """A checkpoint directory's own tokenizer and chat template, via AutoTokenizer.

    Released Qwen2.5-VL / MiMo-VL directories may keep the template in ``chat_template.json`` (a
    processor file that AutoTokenizer does not read): it is picked up from there."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir() or not any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        raise FileNotFoundError(f"{path} holds no tokenizer files (tokenizer.json / tokenizer_config.json)")
    tok = AutoTokenizer.from_pretrained(str(path))
    if getattr(tok, "chat_template", None) is None:
        if (path / "chat_template.jinja").exists():
            tok.chat_template = (path / "chat_template.jinja").read_text()
        elif (path / "chat_template.json").exists():
            tok.chat_template = json.loads((path / "chat_template.json").read_text())["chat_template"]
    return tok


# ------------------------------------------------------------------------------------- thinking
def split_thinking(text: str) -> tuple[str, str]:
    """(thinking, answer) of a response ``<think>...</think>answer``. Without tags the whole text is
    the answer; an unterminated ``<think>`` means all thinking and no answer; a lone ``</think>``
    (the prompt pre-filled ``<think>``) closes the thinking that precedes it."""
    match = re.search(r"<think>(.*?)</think>", text, flags=re.S)
    if match:
        return match.group(1).strip(), text[match.end():].strip()
    if "<think>" in text:
        return text.split("<think>", 1)[1].strip(), ""
    if "</think>" in text:
        thinking, answer = text.split("</think>", 1)
        return thinking.strip(), answer.strip()
    return "", text.strip()


def with_no_think(messages: list[dict], marker: str = " /no_think") -> list[dict]:
    """A copy whose last user message ends with ``marker`` (`` /no_think``: the 2508 release's
    switch; ``"\\n<no_think>"``: the first release's)."""
    messages = [dict(m) for m in messages]
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    content = messages[last]["content"]
    if isinstance(content, str):
        messages[last]["content"] = content.rstrip() + marker
    else:
        items = [dict(c) for c in content]
        texts = [i for i, c in enumerate(items) if "text" in c]
        if texts:
            items[texts[-1]]["text"] = items[texts[-1]]["text"].rstrip() + marker
        else:
            items.append({"type": "text", "text": marker.strip()})
        messages[last]["content"] = items
    return messages
