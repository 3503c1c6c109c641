"""mimolab's model against transformers' Qwen2_5_VLForConditionalGeneration on the same weights."""

import pytest
import torch

from mimolab import MiMoVL
from model_helpers import batch_of, make_pair, tiny_config, without

CASES = {
    # name: (config changes, rows of the batch)
    "windows56-full1-gqa2": ({}, [{"images": [[1, 8, 12]]}]),
    "windows112-nofull": ({"vision": {"window_size": 112, "fullatt_block_indexes": ()}},
                          [{"images": [[1, 20, 4], [1, 6, 10]]}]),
    "windows56-allfull-mha": ({"vision": {"fullatt_block_indexes": (0, 1)}, "text": {"num_key_value_heads": 4}},
                              [{"images": [[1, 8, 14]]}, {"n_text": 9}]),
    "gqa4-untied": ({"text": {"num_key_value_heads": 1, "tie_word_embeddings": False}},
                    [{"images": [[1, 6, 10]], "n_text": 2}, {"images": [[1, 4, 4], [1, 4, 8]]}]),
    "video-and-images": ({"vision": {"depth": 3, "fullatt_block_indexes": (1,)}},
                         [{"images": [[1, 4, 6]], "videos": [[2, 8, 8]], "seconds": [1.0]}, {"videos": [[3, 12, 8]], "seconds": [0.5]}]),
}


@pytest.mark.parametrize("left_pad", [True, False], ids=["left-pad", "right-pad"])
@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_transformers(name, left_pad, tmp_path):
    changes, rows = CASES[name]
    cfg = tiny_config(**changes)
    hf, ours = make_pair(cfg, tmp_path)
    batch = batch_of(cfg, rows, left_pad=left_pad)
    with torch.no_grad():
        ref = hf(**batch).logits
        got = ours(**without(batch, "mm_token_type_ids")).logits
    real = batch["attention_mask"].bool()
    assert (got - ref)[real].abs().max() < 1e-4


def test_loss_matches_transformers(tmp_path):
    cfg = tiny_config()
    hf, ours = make_pair(cfg, tmp_path)
    batch = batch_of(cfg, [{"images": [[1, 4, 6]]}, {"n_text": 12}], left_pad=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    labels = labels.masked_fill(batch["mm_token_type_ids"] > 0, -100)
    with torch.no_grad():
        ref = hf(**batch, labels=labels).loss
        got = ours(**without(batch, "mm_token_type_ids"), labels=labels).loss
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_rope_index_matches_transformers(tmp_path):
    cfg = tiny_config()
    hf, ours = make_pair(cfg, tmp_path)
    batch = batch_of(cfg, [{"images": [[1, 4, 6], [1, 8, 4]], "videos": [[2, 8, 8]]}, {"n_text": 30}])
    ref, ref_deltas = hf.model.get_rope_index(batch["input_ids"], batch["mm_token_type_ids"], batch["image_grid_thw"],
                                              batch["video_grid_thw"], batch["second_per_grid_ts"], batch["attention_mask"])
    got, deltas = ours.rope_index(batch["input_ids"], image_grid_thw=batch["image_grid_thw"],
                                  video_grid_thw=batch["video_grid_thw"], second_per_grid_ts=batch["second_per_grid_ts"],
                                  attention_mask=batch["attention_mask"])
    real = batch["attention_mask"].bool()
    assert torch.equal(got[:, real], ref[:, real]) and torch.equal(deltas, ref_deltas)


def test_long_video_positions_follow_original_qwen():
    """After a video whose temporal extent exceeds its spatial one, text resumes at the block's
    largest position + 1 (original Qwen2.5-VL, which MiMo-VL was trained with); transformers 5
    would resume at start + max(h, w) / merge."""
    cfg = tiny_config()
    model = MiMoVL(cfg)
    # 3 text tokens, vision_start, a (t=4, h=4, w=4) video -> 4 * 2 * 2 = 16 tokens, vision_end, 2 text
    ids = torch.tensor([[1, 2, 3, cfg.vision_start_token_id] + [cfg.video_token_id] * 16 + [cfg.vision_end_token_id, 5, 6]])
    pos, delta = model.rope_index(ids, video_grid_thw=torch.tensor([[4, 4, 4]]), second_per_grid_ts=torch.tensor([1.0]))
    start = 4  # the video starts at position 4 (3 text tokens + vision_start)
    temporal = pos[0, 0, 4:20].tolist()
    assert temporal == [start + 2 * t for t in range(4) for _ in range(4)]  # 2 tokens/s * 1 s per temporal patch
    assert pos[:, 0, 4:20].max() == start + 6
    assert pos[:, 0, 20].tolist() == [start + 7] * 3  # vision_end: max + 1
    assert pos[:, 0, 21:].tolist() == [[start + 8, start + 9]] * 3
    assert int(delta) == start + 10 - ids.shape[1]


@pytest.mark.parametrize("backend", ["eager", "flash_attention_2"])
def test_attention_backends_agree(backend, tmp_path):
    if backend == "flash_attention_2":
        from mimolab.model.attention import flash_available
        if not flash_available():
            pytest.skip("flash-attn needs a CUDA GPU and the `gpu` extra")
    cfg = tiny_config()
    _, sdpa = make_pair(cfg, tmp_path)
    other = MiMoVL.from_pretrained(tmp_path, attn_implementation=backend)
    batch = without(batch_of(cfg, [{"images": [[1, 8, 12]]}, {"n_text": 11}]), "mm_token_type_ids")
    with torch.no_grad():
        a, b = sdpa(**batch).logits, other(**batch).logits
    real = batch["attention_mask"].bool()
    assert (a - b)[real].abs().max() < 1e-5
