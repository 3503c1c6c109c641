"""Tokenizers: the synthetic world's byte-level BPE (ids, round trips, saving), the chat template
(Qwen2.5-VL's own text, thinking switch), and the same template on the real Qwen2.5-VL vocabulary."""

import json

import numpy as np
import pytest
from PIL import Image
from transformers import AutoTokenizer

from mimolab.config import QWEN_SPECIAL_BASE, QWEN_SPECIAL_TOKENS, SPECIAL_TOKENS, special_token_ids
from mimolab.processing import MiMoVLProcessor, image_processor
from mimolab.tokenizer import (
    QWEN25_VL_CHAT_TEMPLATE, QWEN_SYSTEM_PROMPT, chat_template, default_corpus, load_tokenizer,
    train_synthetic_tokenizer,
)
from qwen_vocab import QWEN2_PATTERN, load_ranks, qwen_tokenizer, tiktoken_file

TEXTS = ["Hello world! The answer is 12345.", "你好，世界。这是一个测试。", "def f(x):\n    return x**2  # code\n",
         "   many   spaces\n\n\n\ttabs\r\n", "café naïve 😀 emoji ÅΩ", '[{"bbox_2d": [12, 34, 560, 78], "label": "cat"}]',
         "<think>\nstep\n</think>\n\n\\boxed{7}", "", " ", "a<|im_end|>b <|image_pad|>c"]

CHATS = [
    [{"role": "user", "content": "2+2?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
     {"role": "user", "content": "again"}],
    [{"role": "user", "content": [{"type": "image", "image": "a.png"}, {"type": "text", "text": "What is it?"}]},
     {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
     {"role": "user", "content": [{"type": "video", "video": "v.mp4"}, {"image_url": "u"}, {"text": "And this?"}]}],
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_synthetic_tokenizer()


@pytest.fixture(scope="module")
def qwen():
    return qwen_tokenizer()  # skips when qwen-tokenizer is not installed


# ------------------------------------------------------------------------------------- synthetic
@pytest.mark.parametrize("vocab_size,corpus", [(2048, None), (1024, "world-like"), (512, "tiny")])
def test_special_tokens_fill_the_tail(vocab_size, corpus):
    texts = {None: None, "tiny": ["a b c"], "world-like": default_corpus() * 3 + TEXTS}[corpus]
    tok = train_synthetic_tokenizer(texts, vocab_size=vocab_size)
    ids = special_token_ids(vocab_size)
    assert len(tok) == vocab_size and list(ids) == SPECIAL_TOKENS
    assert {t: tok.convert_tokens_to_ids(t) for t in ids} == ids
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.pad_token_id == ids["<|endoftext|>"]


def test_round_trip_and_single_digits(tokenizer):
    for text in TEXTS:
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert tokenizer.tokenize("x 2025") == ["x", "Ġ", "2", "0", "2", "5"]  # Qwen2's regex: one digit each
    ids = special_token_ids(len(tokenizer))
    assert tokenizer("<|im_start|>a<think>")["input_ids"][::2] == [ids["<|im_start|>"], ids["<think>"]]


def test_decoding_without_specials_keeps_thinking_tags(tokenizer):
    ids = tokenizer("<|im_start|>assistant\n<think>\nhm\n</think>\n\n42<|im_end|><|endoftext|>")["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "assistant\n<think>\nhm\n</think>\n\n42"


def test_saved_directory_loads_identically(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    for loaded in (AutoTokenizer.from_pretrained(tmp_path), load_tokenizer(tmp_path)):
        for text in TEXTS:
            assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
        for chat in CHATS:
            for thinking in (True, False):
                kw = dict(tokenize=False, add_generation_prompt=True, enable_thinking=thinking)
                assert loaded.apply_chat_template(chat, **kw) == tokenizer.apply_chat_template(chat, **kw)
        assert loaded.decode(loaded("<think>x</think>")["input_ids"], skip_special_tokens=True) == "<think>x</think>"
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        load_tokenizer(tmp_path / "missing")


def test_template_read_from_a_released_style_chat_template_json(tokenizer, tmp_path):
    """Released Qwen2.5-VL directories keep the template in the processor's chat_template.json."""
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").unlink()
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": QWEN25_VL_CHAT_TEMPLATE}))
    assert load_tokenizer(tmp_path).chat_template == QWEN25_VL_CHAT_TEMPLATE


# ------------------------------------------------------------------------------------- template
@pytest.mark.parametrize("chat", CHATS)
def test_template_is_qwen25_vl_with_the_thinking_switch(tokenizer, chat):
    """Rendered with Qwen's system prompt and thinking on, ours equals the official template."""
    for add in (True, False):
        official = tokenizer.apply_chat_template(chat, chat_template=QWEN25_VL_CHAT_TEMPLATE, tokenize=False,
                                                 add_generation_prompt=add)
        ours = tokenizer.apply_chat_template(chat, chat_template=chat_template(QWEN_SYSTEM_PROMPT), tokenize=False,
                                             add_generation_prompt=add)
        assert ours == official
        off = tokenizer.apply_chat_template(chat, chat_template=chat_template(QWEN_SYSTEM_PROMPT), tokenize=False,
                                            add_generation_prompt=add, enable_thinking=False)
        assert off == official + ("<think>\n\n</think>\n\n" if add else "")


def test_template_default_system_prompt_and_no_think_suffixes(tokenizer):
    render = lambda chat, **kw: tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True, **kw)
    on = render([{"role": "user", "content": "2+2?"}])
    assert on == ("<|im_start|>system\nYou are MiMo, an AI assistant developed by Xiaomi.<|im_end|>\n"
                  "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n")
    for text in ("2+2? /no_think", "2+2?\n<no_think>\n"):
        assert render([{"role": "user", "content": text}]).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    listed = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Count. /no_think"}]}]
    assert render(listed).endswith("<think>\n\n</think>\n\n")
    # only the last user message counts
    earlier = [{"role": "user", "content": "a /no_think"}, {"role": "assistant", "content": "b"},
               {"role": "user", "content": "c"}]
    assert render(earlier).endswith("<|im_start|>assistant\n")


# ------------------------------------------------------------------------------------- real vocabulary
def test_qwen_vocabulary_equals_tiktoken(qwen):
    tiktoken = pytest.importorskip("tiktoken")
    enc = tiktoken.Encoding("qwen", pat_str=QWEN2_PATTERN, mergeable_ranks=load_ranks(tiktoken_file()),
                            special_tokens={})
    rng = np.random.default_rng(0)
    alphabet = list("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 \n\t.,;:!?'\"()[]{}<>=+-*/\\_#@$%^&|~`") + \
        list("你好世界数学图像视频的是了") + ["é", "ß", "Ω", "😀", "  ", "\r\n", "'s", "'ll"]
    randoms = ["".join(rng.choice(alphabet, size=int(rng.integers(1, 80)))) for _ in range(200)]
    source = open(tiktoken_file().parent.parent / "__init__.py", encoding="utf-8").read()
    for text in TEXTS[:-1] + randoms + [source]:  # (the last of TEXTS holds special tokens: tiktoken has none)
        assert qwen(text)["input_ids"] == enc.encode(text), repr(text)
    assert len(qwen) == QWEN_SPECIAL_BASE + len(QWEN_SPECIAL_TOKENS)


def test_qwen_special_ids_and_rendered_chat_with_an_image(qwen):
    assert [qwen.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS] == list(range(151643, 151665))
    proc = MiMoVLProcessor(qwen, image_processor())
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]}]
    for size, n in (((224, 224), 64), ((640, 480), 391)):
        ids = proc(proc.apply_chat_template(chat), images=[Image.new("RGB", size, "red")])["input_ids"][0].tolist()
        assert ids[:3] == [151644, 8948, 198]  # <|im_start|> system \n
        start = ids.index(151652)  # <|vision_start|>
        assert ids[start + 1:start + 1 + n] == [151655] * n and ids[start + 1 + n] == 151653  # pads, <|vision_end|>
        assert ids.count(151655) == n and ids.count(151645) == 2  # <|im_end|> closes system and user
        assert ids[-3:] == [151644, 77091, 198]  # <|im_start|> assistant \n
    off = proc(proc.apply_chat_template(chat, enable_thinking=False), images=[Image.new("RGB", (224, 224))])
    tail = qwen.decode(off["input_ids"][0])  # (Qwen2.5 has no <think> token: it is spelled in pieces)
    assert tail.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
