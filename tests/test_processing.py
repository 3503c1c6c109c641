"""Preprocessing equals transformers' where transformers runs; chat formatting; placeholders."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from mimolab.config import special_token_ids
from mimolab.processing import (
    MiMoVLProcessor, expand_placeholders, image_processor, load_video, process_images, process_video,
    sample_frame_indices, split_thinking,
)
from mimolab.tokenizer import train_synthetic_tokenizer


def random_image(h, w, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def tokenizer():
    return train_synthetic_tokenizer()


@pytest.mark.parametrize("h,w,expected", [(224, 224, [1, 16, 16]), (480, 640, [1, 34, 46]), (37, 100, None), (301, 17, None)])
def test_images_equal_transformers(h, w, expected):
    image = random_image(h, w)
    ours = process_images([image])
    ref = Qwen2VLImageProcessorPil()(images=[image], return_tensors="pt")
    assert torch.equal(ours["pixel_values"], ref["pixel_values"].float())
    assert torch.equal(ours["image_grid_thw"], ref["image_grid_thw"])
    if expected:
        assert ours["image_grid_thw"][0].tolist() == expected


def test_image_batch_and_pixel_limits_equal_transformers():
    images = [random_image(90, 200, 1), random_image(500, 300, 2), random_image(28, 28, 3)]
    proc = image_processor(min_pixels=28 * 28 * 8, max_pixels=28 * 28 * 40)
    ours = process_images(images, proc)
    ref = Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 8, max_pixels=28 * 28 * 40)(images=images, return_tensors="pt")
    assert torch.equal(ours["pixel_values"], ref["pixel_values"].float())
    assert torch.equal(ours["image_grid_thw"], ref["image_grid_thw"])
    assert all(8 * 4 <= int(g.prod()) <= 40 * 4 for g in ours["image_grid_thw"])


def per_frame_reference(frames, min_pixels, max_pixels):
    """Video patches rebuilt from transformers' image processor run on each frame: an image patch
    holds its frame twice along time; a video patch holds frame 2k then frame 2k+1."""
    proc = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
    singles = [proc(images=[f], return_tensors="pt") for f in frames]
    if len(frames) % 2:
        singles.append(singles[-1])
    grid = singles[0]["image_grid_thw"][0]
    rows = []
    for a, b in zip(singles[0::2], singles[1::2]):
        pa = a["pixel_values"].view(-1, 3, 2, 14, 14)[:, :, 0]
        pb = b["pixel_values"].view(-1, 3, 2, 14, 14)[:, :, 0]
        rows.append(torch.stack([pa, pb], dim=2).reshape(-1, 3 * 2 * 14 * 14))
    return torch.cat(rows).float(), [len(singles) // 2, int(grid[1]), int(grid[2])]


@pytest.mark.parametrize("n_frames", [4, 5])
def test_video_equals_per_frame_transformers_reference(n_frames):
    frames = [random_image(60, 90, seed=i) for i in range(n_frames)]
    ours = process_video(frames, min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16, fps=2.0)
    ref, grid = per_frame_reference(frames, 28 * 28 * 4, 28 * 28 * 16)
    assert ours["video_grid_thw"][0].tolist() == grid
    assert torch.equal(ours["pixel_values_videos"], ref)
    assert ours["second_per_grid_ts"].tolist() == [1.0]  # 2 frames per temporal patch at 2 fps


def test_frame_sampling_follows_fps_and_gif_timing(tmp_path):
    assert sample_frame_indices(30, source_fps=10, fps=2) == [0, 5, 10, 15, 20, 25]
    assert sample_frame_indices(3, source_fps=2, fps=2) == [0, 1]  # even count for 2-frame temporal patches
    frames = [random_image(28, 28, seed=i) for i in range(8)]
    gif = tmp_path / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=250)  # 4 fps, 2 s
    assert len(load_video(gif, fps=2.0)) == 4
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        f.save(folder / f"{i:03d}.png")
    assert len(load_video(folder, fps=2.0, source_fps=2.0)) == 8
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_video(tmp_path / "missing.mp4")


def test_placeholder_expansion_counts_and_errors():
    grids = torch.tensor([[1, 4, 6], [1, 2, 2]])
    text, used = expand_placeholders("a<|image_pad|>b<|image_pad|>c", grids, None)
    assert text.count("<|image_pad|>") == 6 + 1 and used == (2, 0)
    with pytest.raises(ValueError, match="more <\\|image_pad\\|> placeholders"):
        expand_placeholders("<|image_pad|><|image_pad|><|image_pad|>", grids, None)


def test_processor_builds_model_inputs_and_checks_counts(tokenizer):
    proc = MiMoVLProcessor(tokenizer, image_processor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16),
                           video_min_pixels=28 * 28 * 4, video_max_pixels=28 * 28 * 4)
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "what?"}]}]
    text = proc.apply_chat_template(chat)
    frames = [random_image(56, 56, seed=i) for i in range(4)]
    out = proc([text, "plain text"], images=[random_image(70, 50)], videos=[frames])
    ids = out["input_ids"]
    assert int((ids == proc.image_token_id).sum()) == int(out["image_grid_thw"].prod()) // 4
    assert int((ids == proc.video_token_id).sum()) == int(out["video_grid_thw"].prod()) // 4
    assert out["attention_mask"][1, 0] == 0 and out["attention_mask"][1, -1] == 1  # left padding
    assert torch.equal(out["mm_token_type_ids"] == 1, ids == proc.image_token_id)
    with pytest.raises(ValueError, match="placeholders"):
        proc(text, images=[random_image(56, 56), random_image(56, 56)], videos=[frames])


def test_chat_template_thinking_switch(tokenizer):
    chat = [{"role": "user", "content": "2+2?"}]
    on = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    off = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert on.endswith("<|im_start|>assistant\n") and off == on + "<think>\n\n</think>\n\n"
    assert on.startswith("<|im_start|>system\nYou are MiMo")


def test_no_think_suffix_style(tokenizer):
    proc = MiMoVLProcessor(tokenizer)
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Count them."}]}]
    text = proc.apply_chat_template(chat, enable_thinking=False, no_think_style="suffix")
    assert "Count them. /no_think<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    assert chat[0]["content"][1]["text"] == "Count them."  # the caller's messages are not modified


def test_synthetic_tokenizer_ids_and_round_trip(tokenizer, tmp_path):
    ids = special_token_ids(len(tokenizer))
    assert len(tokenizer) == 2048
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in ids} == ids
    proc = MiMoVLProcessor(tokenizer)
    proc.save_pretrained(tmp_path)
    loaded = MiMoVLProcessor.from_pretrained(tmp_path)
    text = "A small red circle at [12, 40] 数字 42\n\t  <think>\nok\n</think>\n\n\\boxed{7}"
    assert loaded.tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    assert loaded.apply_chat_template(chat) == proc.apply_chat_template(chat)


@pytest.mark.parametrize("text,expected", [
    ("<think>\nstep 1\n</think>\n\n42", ("step 1", "42")),
    ("42", ("", "42")),
    ("<think>\nstill thinking", ("still thinking", "")),
    ("<think>\n\n</think>\n\nfast", ("", "fast")),
])
def test_split_thinking(text, expected):
    assert split_thinking(text) == expected


def test_processor_output_runs_both_models_alike(tokenizer, tmp_path):
    """Processor -> transformers' Qwen2.5-VL and mimolab on the same weights: same logits."""
    import copy

    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from mimolab import MiMoVL, MiMoVLConfig

    cfg = MiMoVLConfig.from_name("smoke")
    torch.manual_seed(0)
    hf = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**copy.deepcopy(cfg.to_hf_dict()))).eval()
    hf.save_pretrained(tmp_path)
    ours = MiMoVL.from_pretrained(tmp_path)
    proc = MiMoVLProcessor(tokenizer, image_processor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 30),
                           video_min_pixels=28 * 28 * 4, video_max_pixels=28 * 28 * 16)
    # (a 2-temporal-patch video whose spatial extent exceeds its temporal one: see positions.py on
    # transformers 5's different restart after long videos)
    chats = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Count the circles."}]}],
             [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "When does it move?"}]}]]
    texts = [proc.apply_chat_template(c) for c in chats]
    frames = [random_image(56, 84, seed=i) for i in range(4)]
    batch = proc(texts, images=[random_image(120, 90)], videos=[frames])
    with torch.no_grad():
        ref = hf(**batch).logits
        got = ours(**{k: v for k, v in batch.items() if k != "mm_token_type_ids"}).logits
    real = batch["attention_mask"].bool()
    assert (got - ref)[real].abs().max() < 1e-4


def test_released_style_preprocessor_config_is_read(tmp_path):
    """MiMo-VL / Qwen2.5-VL checkpoints store min_pixels / max_pixels at the top level."""
    import json

    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "min_pixels": 3136, "max_pixels": 28 * 28 * 20, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2_5_VLImageProcessor"}))
    proc = image_processor(path=tmp_path)
    grid = process_images([random_image(500, 500)], proc)["image_grid_thw"][0]
    assert int(grid.prod()) <= 20 * 4 and proc.size["longest_edge"] == 28 * 28 * 20
