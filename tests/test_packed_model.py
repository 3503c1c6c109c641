"""Packed rows: several samples (text, images, a video) in one row, separated by cu_seqlens."""

import torch

from mimolab import MiMoVL
from model_helpers import pixels_for, sample_ids, tiny_config

CFG = tiny_config()
SAMPLES = [
    {"images": [[1, 4, 6]], "n_text": 4, "seed": 1},
    {"n_text": 9, "seed": 2},
    {"videos": [[2, 8, 8]], "n_text": 3, "seed": 3},
    {"images": [[1, 4, 4], [1, 8, 4]], "n_text": 2, "seed": 4},
]


def alone(sample):
    ids = torch.tensor([sample_ids(CFG, sample.get("images", ()), sample.get("videos", ()), sample["n_text"], sample["seed"])])
    inputs = {"input_ids": ids}
    if sample.get("images"):
        inputs.update(pixel_values=pixels_for(sample["images"], sample["seed"]), image_grid_thw=torch.tensor(sample["images"]))
    if sample.get("videos"):
        inputs.update(pixel_values_videos=pixels_for(sample["videos"], sample["seed"]),
                      video_grid_thw=torch.tensor(sample["videos"]), second_per_grid_ts=torch.tensor([1.0]))
    return inputs


def packed(samples):
    parts = [alone(s) for s in samples]
    lengths = [p["input_ids"].shape[1] for p in parts]
    row = {"input_ids": torch.cat([p["input_ids"] for p in parts], dim=1),
           "cu_seqlens": torch.tensor([0, *lengths]).cumsum(0).to(torch.int32)}
    for key in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
        chunks = [p[key] for p in parts if key in p]
        if chunks:
            row[key] = torch.cat(chunks)
    return row, lengths


def test_each_packed_sample_gets_its_own_logits_and_positions():
    torch.manual_seed(0)
    model = MiMoVL(CFG).eval()
    row, lengths = packed(SAMPLES)
    with torch.no_grad():
        logits = model(**row).logits[0]
        positions, _ = model.rope_index(row["input_ids"], cu_seqlens=row["cu_seqlens"], image_grid_thw=row["image_grid_thw"],
                                        video_grid_thw=row["video_grid_thw"], second_per_grid_ts=row["second_per_grid_ts"])
        start = 0
        for sample, n in zip(SAMPLES, lengths):
            single = alone(sample)
            ref = model(**single).logits[0]
            ref_pos, _ = model.rope_index(single["input_ids"], image_grid_thw=single.get("image_grid_thw"),
                                          video_grid_thw=single.get("video_grid_thw"),
                                          second_per_grid_ts=single.get("second_per_grid_ts"))
            assert positions[:, 0, start].tolist() == [0, 0, 0]  # restarts per sample
            assert torch.equal(positions[:, 0, start:start + n], ref_pos[:, 0])
            assert (logits[start:start + n] - ref).abs().max() < 1e-5
            start += n


def test_changing_one_sample_leaves_the_others_unchanged():
    torch.manual_seed(0)
    model = MiMoVL(CFG).eval()
    row, lengths = packed(SAMPLES)
    changed = [dict(s) for s in SAMPLES]
    changed[1] = {"n_text": 9, "seed": 99}  # same length, other tokens
    row2, _ = packed(changed)
    with torch.no_grad():
        a, b = model(**row).logits[0], model(**row2).logits[0]
    cu = row["cu_seqlens"].tolist()
    for i in range(len(SAMPLES)):
        same = torch.equal(a[cu[i]:cu[i + 1]], b[cu[i]:cu[i + 1]])
        assert same == (i != 1)


def test_packed_loss_never_predicts_across_a_boundary():
    """Packed loss = token-weighted mean of each sample's own loss."""
    torch.manual_seed(0)
    model = MiMoVL(CFG).eval()
    row, lengths = packed(SAMPLES)
    with torch.no_grad():
        loss = model(**row, labels=row["input_ids"]).loss
        total, count = 0.0, 0
        for sample in SAMPLES:
            single = alone(sample)
            n = single["input_ids"].shape[1] - 1  # targets inside the sample
            total += model(**single, labels=single["input_ids"]).loss * n
            count += n
    torch.testing.assert_close(loss, total / count, atol=1e-5, rtol=0)
