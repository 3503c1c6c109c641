"""Conversations -> samples: loss only on assistant replies, placeholders, truncation, bad records."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mimolab import MiMoVL, MiMoVLConfig
from mimolab.data.mixture import BadRecord, MixtureSampler
from mimolab.data.sources import jsonl_source
from mimolab.data.tokenize import record_tokenizer, tokenize_conversation
from mimolab.processing import MiMoVLProcessor, image_processor
from mimolab.tokenizer import train_synthetic_tokenizer

CFG = MiMoVLConfig.from_name("smoke")


@pytest.fixture(scope="module")
def processor():
    return MiMoVLProcessor(train_synthetic_tokenizer(), image_processor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16),
                           video_min_pixels=28 * 28 * 4, video_max_pixels=28 * 28 * 4)


def image(seed=0, size=(84, 56)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size[::-1], 3), dtype=np.uint8))


def chat(answer="There are 3 circles.", img=None):
    return [{"role": "user", "content": [{"type": "image", "image": img or image()}, {"type": "text", "text": "How many?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]}]


def test_loss_covers_exactly_the_assistant_reply(processor):
    s = tokenize_conversation(chat(), processor, CFG, max_length=512, task="counting")
    target = [t for t, l in zip(s.input_ids, s.labels) if l != -100]
    assert processor.tokenizer.decode(target) == "There are 3 circles.<|im_end|>"
    assert s.input_ids.count(CFG.image_token_id) == int(torch.tensor(s.image_grid_thw).prod()) // 4
    assert s.position_ids.shape == (3, len(s.input_ids)) and s.task == "counting"


def test_multi_turn_every_reply_is_a_target(processor):
    messages = chat("3.") + [{"role": "user", "content": "And squares?"}, {"role": "assistant", "content": "2."}]
    s = tokenize_conversation(messages, processor, CFG, max_length=512)
    text = processor.tokenizer.decode([t if l != -100 else processor.tokenizer.pad_token_id for t, l in zip(s.input_ids, s.labels)])
    assert text.replace("<|endoftext|>", "") == "3.<|im_end|>2.<|im_end|>"


def test_tokenized_sample_trains_the_model(processor):
    torch.manual_seed(0)
    s = tokenize_conversation(chat(), processor, CFG, max_length=512)
    model = MiMoVL(CFG)
    out = model(torch.tensor([s.input_ids]), labels=torch.tensor([s.labels]), position_ids=s.position_ids[:, None],
                pixel_values=s.pixel_values, image_grid_thw=torch.tensor(s.image_grid_thw))
    assert torch.isfinite(out.loss)


def test_truncation_never_splits_an_image(processor):
    messages = chat("first answer", image(1)) + [
        {"role": "user", "content": [{"type": "image", "image": image(2)}, {"type": "text", "text": "and this?"}]},
        {"role": "assistant", "content": "second answer"}]
    full = tokenize_conversation(messages, processor, CFG, max_length=4096)
    second_image_start = [i for i, t in enumerate(full.input_ids) if t == CFG.vision_start_token_id][1]
    cut = tokenize_conversation(messages, processor, CFG, max_length=second_image_start + 3)  # inside image 2
    assert cut.input_ids == full.input_ids[:second_image_start] and len(cut.image_grid_thw) == 1
    assert cut.pixel_values.shape[0] == int(torch.tensor(cut.image_grid_thw).prod())
    assert processor.tokenizer.decode([t for t, l in zip(cut.input_ids, cut.labels) if l != -100]) == "first answer<|im_end|>"
    with pytest.raises(BadRecord, match="no answer left"):  # a cut before any answer leaves nothing to learn
        tokenize_conversation(messages, processor, CFG, max_length=10)


@pytest.mark.parametrize("record,reason", [
    ({"task": "x", "messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
    ({"task": "x", "messages": [{"role": "user", "content": [{"type": "image", "image": "nope.png"}]},
                                {"role": "assistant", "content": "a"}]}, "missing image"),
    (BadRecord("not JSON", "{oops"), "not JSON"),  # what jsonl_source yields for a line that is not JSON
])
def test_bad_records_name_their_reason(processor, record, reason, tmp_path):
    tokenize = record_tokenizer(processor, CFG, max_length=512)
    record = dict(record, _base_dir=str(tmp_path)) if isinstance(record, dict) else record
    with pytest.raises(BadRecord) as err:
        tokenize(record, "src")
    assert err.value.reason == reason


def test_corrupt_and_oversized_images_are_bad_records(processor, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    tokenize = record_tokenizer(processor, CFG, max_length=40)
    broken = {"messages": chat(img="broken.png"), "_base_dir": str(tmp_path)}
    broken["messages"][0]["content"][0]["image"] = "broken.png"
    with pytest.raises(BadRecord) as err:
        tokenize(broken, "src")
    assert err.value.reason == "unreadable image"
    with pytest.raises(BadRecord) as err:  # 16 merged tokens fit; this image needs more than 40? use a tiny budget
        record_tokenizer(processor, CFG, max_length=3)({"messages": chat()}, "src")
    assert err.value.reason == "image larger than the token budget"


def test_user_jsonl_streams_with_counted_skips(processor, tmp_path):
    (tmp_path / "images").mkdir()
    image(3).save(tmp_path / "images" / "a.png")
    good = {"task": "counting", "messages": [
        {"role": "user", "content": [{"type": "image", "image": "images/a.png"}, {"type": "text", "text": "How many?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "2"}]}]}
    lines = [json.dumps(good), "{broken json", json.dumps({"task": "x", "messages": [{"role": "user", "content": "q"}]}),
             json.dumps(good)]
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    sampler = MixtureSampler({"mine": jsonl_source(tmp_path / "data.jsonl")}, {"mine": 1.0},
                             record_tokenizer(processor, CFG, max_length=512))
    samples = list(sampler)
    assert len(samples) == 2 and all(s.task == "counting" for s in samples)
    assert dict(sampler.skips.counts) == {"not JSON": 1, "no assistant turn": 1}
    assert "not JSON x1" in sampler.skips.summary()
