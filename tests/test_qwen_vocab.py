"""The real Qwen2.5-VL vocabulary: encodings, special ids, chat template and a checkpoint directory
that carries its own tokenizer."""

import numpy as np
import pytest
import torch
from PIL import Image

from mimolab import MiMoVL, MiMoVLConfig
from mimolab.model.generation import generate
from mimolab.processing import MiMoVLProcessor, image_processor
from qwen_vocab import QWEN2_PATTERN, qwen_tokenizer, tiktoken_file

TEXTS = ["Hello world! 12345 numbers", "你好，世界。这是一个测试", "def f(x):\n    return x**2  # code",
         "   many   spaces\n\n\ttabs", "café naïve 😀 emoji", '[{"bbox_2d": [12, 34, 560, 78]}] \\boxed{42}']


@pytest.fixture(scope="module")
def tok():
    return qwen_tokenizer()


def test_encodings_equal_tiktoken(tok):
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import load_tiktoken_bpe

    enc = tiktoken.Encoding("qwen", pat_str=QWEN2_PATTERN, mergeable_ranks=load_tiktoken_bpe(str(tiktoken_file())),
                            special_tokens={})
    for text in TEXTS:
        assert tok(text)["input_ids"] == enc.encode(text), text


def test_chat_with_an_image_uses_the_official_ids(tok):
    proc = MiMoVLProcessor(tok, image_processor())
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
    image = Image.fromarray(np.zeros((224, 224, 3), dtype=np.uint8))
    ids = proc(proc.apply_chat_template(chat), images=[image])["input_ids"][0].tolist()
    assert ids[0] == 151644  # <|im_start|>
    start = ids.index(151652)  # <|vision_start|>
    assert ids[start + 1:start + 65] == [151655] * 64 and ids[start + 65] == 151653  # 224x224 -> 64 tokens
    off = proc.apply_chat_template(chat, enable_thinking=False)
    assert tok(off)["input_ids"][-6:] == tok("<|im_start|>assistant\n<think>\n\n</think>\n\n")["input_ids"][-6:]


def test_checkpoint_directory_with_its_own_tokenizer(tok, tmp_path):
    """A Qwen-vocabulary checkpoint: weights, config, tokenizer and preprocessor in one directory."""
    torch.manual_seed(0)
    cfg = MiMoVLConfig.from_name("smoke").replace(
        text={"vocab_size": 151680}, image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
        vision_end_token_id=151653, bos_token_id=151643, eos_token_id=151645, pad_token_id=151643)
    MiMoVL(cfg).save_pretrained(tmp_path)
    MiMoVLProcessor(tok, image_processor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)).save_pretrained(tmp_path)
    model = MiMoVL.from_pretrained(tmp_path)
    proc = MiMoVLProcessor.from_pretrained(tmp_path)
    assert proc.image_processor.size["longest_edge"] == 28 * 28 * 16
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    inputs = proc(proc.apply_chat_template(chat), images=[Image.new("RGB", (100, 60), "red")])
    out = generate(model, inputs["input_ids"], inputs["attention_mask"], tokenizer=proc.tokenizer, max_new_tokens=4,
                   pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"])
    assert len(out.sequences[0]) == 4 and out.texts[0] == proc.tokenizer.decode(out.sequences[0])
