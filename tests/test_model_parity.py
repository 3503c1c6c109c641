"""mimolab's model against transformers' Qwen2_5_VLForConditionalGeneration on the same weights.

The weights are random and O(1)-scale (``randomize_``), so attention is peaked and a wrong
position, window or mask moves the logits far beyond the tolerances (see test_tolerance_is_meaningful).
Videos here have a short temporal extent; for longer ones mimolab deliberately follows the original
Qwen2.5-VL position rule, pinned by test_long_video_positions_follow_original_qwen.
"""

import pytest
import torch

import mimolab.model.vision as vision
from mimolab import MiMoVL
from model_helpers import (
    build_batch, build_sample, build_samples, make_hf_pair, max_diff, model_inputs, pack, tiny_config,
)

# name: (config changes, rows of the batch). Together they cover: windows of 56 and 112 px (2 and 4
# merged tokens), full-attention blocks (), (0,), (1,), (1, 2); heads/KV heads 1, 2, 4; tied and
# untied embeddings; odd image grids; rows with 0, 1 or 2 images; videos with t = 2 and 3 and
# fractional temporal intervals; windows of unequal size (masked path) and of equal size (batched path).
CASES = {
    "w56-full1-gqa2-tied": (
        {},
        [{"images": [[1, 6, 10]]}, {"images": [[1, 8, 14], [1, 4, 4]], "n_text": 3}, {"n_text": 25}]),
    "w112-nofull-mha-untied": (
        {"vision": {"window_size": 112, "fullatt_block_indexes": ()},
         "text": {"num_key_value_heads": 4, "tie_word_embeddings": False}},
        [{"images": [[1, 20, 4], [1, 6, 10]]}, {"images": [[1, 8, 14]], "n_text": 12}]),
    "w56-full0-gqa4-video": (
        {"vision": {"fullatt_block_indexes": (0,)}, "text": {"num_key_value_heads": 1, "tie_word_embeddings": False}},
        [{"images": [[1, 8, 14]], "videos": [[2, 8, 6]], "seconds": [0.5]}, {"n_text": 30}]),
    "w112-full12-videos": (
        {"vision": {"depth": 3, "window_size": 112, "fullatt_block_indexes": (1, 2)}},
        # interval 2 * 0.75 = 1.5 -> temporal ids 0, 1, 3 (quantised after scaling)
        [{"videos": [[3, 12, 8]], "seconds": [0.75]},
         {"images": [[1, 6, 10]], "videos": [[2, 4, 8]], "seconds": [1.0]}]),
    "equal-windows-batched": (
        {},
        [{"images": [[1, 8, 8]]}, {"images": [[1, 8, 8]], "videos": [[2, 8, 8]]}]),
}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """pair(name) -> (config, transformers model, mimolab model, checkpoint dir), built once per case."""
    cache = {}

    def get(name):
        if name not in cache:
            cfg = tiny_config(**CASES[name][0])
            path = tmp_path_factory.mktemp(name)
            cache[name] = (cfg, *make_hf_pair(cfg, path), path)
        return cache[name]

    return get


def run_both(hf, ours, batch):
    with torch.no_grad():
        return hf(**batch).logits, ours(**model_inputs(batch)).logits


@pytest.mark.parametrize("left_pad", [True, False], ids=["left-pad", "right-pad"])
@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_transformers(name, left_pad, pair):
    cfg, hf, ours, _ = pair(name)
    batch = build_batch(cfg, CASES[name][1], left_pad=left_pad)
    ref, got = run_both(hf, ours, batch)
    assert max_diff(got, ref, batch["attention_mask"]) < 1e-4


@pytest.mark.parametrize("name", list(CASES))
def test_rope_index_matches_transformers(name, pair):
    cfg, hf, ours, _ = pair(name)
    b = build_batch(cfg, CASES[name][1])
    ref, ref_deltas = hf.model.get_rope_index(b["input_ids"], b["mm_token_type_ids"], b.get("image_grid_thw"),
                                              b.get("video_grid_thw"), b.get("second_per_grid_ts"), b["attention_mask"])
    got, deltas = ours.rope_index(b["input_ids"], image_grid_thw=b.get("image_grid_thw"),
                                  video_grid_thw=b.get("video_grid_thw"),
                                  second_per_grid_ts=b.get("second_per_grid_ts"), attention_mask=b["attention_mask"])
    real = b["attention_mask"].bool()
    assert torch.equal(got[:, real], ref[:, real])
    assert torch.equal(deltas, ref_deltas)


@pytest.mark.parametrize("name", ["w56-full1-gqa2-tied", "w112-full12-videos"])
def test_vision_segment_loop_matches_transformers(name, pair, monkeypatch):
    """Large inputs attend segment by segment instead of with a block-diagonal mask: force that path."""
    monkeypatch.setattr(vision, "MAX_MASKED_PATCHES", 0)
    cfg, hf, ours, _ = pair(name)
    batch = build_batch(cfg, CASES[name][1], left_pad=False)
    ref, got = run_both(hf, ours, batch)
    assert max_diff(got, ref, batch["attention_mask"]) < 1e-4


def test_vision_features_match_transformers(pair):
    cfg, hf, ours, _ = pair("w112-nofull-mha-untied")
    s = build_sample(cfg, images=[[1, 20, 4], [1, 6, 10], [1, 8, 14]])
    with torch.no_grad():
        ref = hf.model.visual(s["pixel_values"], grid_thw=s["image_grid_thw"]).pooler_output
        got = ours.visual(s["pixel_values"], s["image_grid_thw"])
    assert got.shape == ref.shape == (20 + 15 + 28, cfg.text.hidden_size)  # t*h*w/4 tokens per image
    assert max_diff(got, ref) < 1e-4


@pytest.mark.parametrize("left_pad", [True, False], ids=["left-pad", "right-pad"])
def test_loss_matches_transformers(left_pad, pair):
    cfg, hf, ours, _ = pair("w56-full0-gqa4-video")
    rows = CASES["w56-full0-gqa4-video"][1] + [{"images": [[1, 4, 6]], "n_text": 7}]
    batch = build_batch(cfg, rows, left_pad=left_pad)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    labels = labels.masked_fill(batch["mm_token_type_ids"] > 0, -100)
    # the first real token has no prediction (with left padding a pad position, whose output is
    # undefined, would be scored for it)
    labels[torch.arange(len(labels)), batch["attention_mask"].argmax(1)] = -100
    with torch.no_grad():
        ref = hf(**batch, labels=labels).loss
        got = ours(**model_inputs(batch), labels=labels).loss
    assert ref > 1  # random weights: far from a trivial loss
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_backward_equals_autograd(dtype):
    """The norm's training path (written-out backward) gives the inference path's numbers bit for bit, and the
    gradients autograd takes through those same steps, to a float32 rounding."""
    import torch.nn.functional as F

    from mimolab.model.layers import RMSNorm

    torch.manual_seed(0)
    norm = RMSNorm(48, eps=1e-5)
    torch.nn.init.normal_(norm.weight)
    x = (3 * torch.randn(2, 7, 48)).to(dtype).requires_grad_()
    grad = torch.randn(2, 7, 48)
    out = norm(x)
    out.backward(grad)
    with torch.no_grad():
        assert torch.equal(out, norm(x))
    got = x.grad, norm.weight.grad
    x.grad = norm.weight.grad = None
    (norm.weight * F.rms_norm(x.float(), (48,), eps=1e-5).to(dtype)).backward(grad)  # autograd through the steps
    for a, b in zip(got, (x.grad, norm.weight.grad)):
        assert a.dtype == b.dtype and max_diff(a.float(), b.float()) <= 1e-6 * float(b.abs().max())


def test_gradients_match_transformers(pair):
    """Training runs mimolab's own backward (RMSNorm's is written out, layers.py): every parameter's gradient of the
    same loss on the same weights and batch equals transformers' autograd one, to float error relative to its size."""
    from mimolab.model.checkpoint import mimolab_key_to_checkpoint

    cfg, hf, ours, _ = pair("w56-full0-gqa4-video")
    batch = build_batch(cfg, CASES["w56-full0-gqa4-video"][1], left_pad=False)
    labels = batch["input_ids"].masked_fill((batch["attention_mask"] == 0) | (batch["mm_token_type_ids"] > 0), -100)
    hf.zero_grad(), ours.zero_grad()
    hf(**batch, labels=labels).loss.backward()
    ours(**model_inputs(batch), labels=labels).loss.backward()
    hf_grads = {name: p.grad for name, p in hf.named_parameters()}
    norms = [name for name, _ in ours.named_parameters() if "norm" in name or "ln_q" in name]
    assert len(norms) >= 2 * cfg.text.num_hidden_layers + 2 * cfg.vision.depth  # the written-out backward is in play
    for name, p in ours.named_parameters():
        ref = hf_grads[mimolab_key_to_checkpoint(name)]
        assert p.grad is not None and ref is not None, name
        assert max_diff(p.grad, ref) <= 1e-5 * max(1.0, float(ref.abs().max())), name
    hf.zero_grad(), ours.zero_grad()


def test_tolerance_is_meaningful(pair):
    """The mistakes a port makes move the logits by far more than 1e-4 with these weights."""
    cfg, hf, ours, _ = pair("w56-full1-gqa2-tied")
    batch = build_batch(cfg, CASES["w56-full1-gqa2-tied"][1])
    inputs, real = model_inputs(batch), batch["attention_mask"]
    pos, _ = ours.rope_index(batch["input_ids"], image_grid_thw=batch["image_grid_thw"], attention_mask=real)
    with torch.no_grad():
        ref = hf(**batch).logits
        flat = ours(**inputs, position_ids=pos[:1].expand(3, -1, -1)).logits  # 1D instead of 3D positions
        swapped = ours(**inputs, position_ids=pos[[0, 2, 1]]).logits  # height and width swapped
    assert max_diff(flat, ref, real) > 1e-2
    assert max_diff(swapped, ref, real) > 1e-2


def test_long_video_positions_follow_original_qwen():
    """After a video whose temporal extent exceeds its spatial one, text resumes at the block's
    largest position + 1 (original Qwen2.5-VL, which MiMo-VL was trained with); transformers 5
    would resume at start + max(h, w) / merge (huggingface/transformers#45381)."""
    cfg = tiny_config()
    model = MiMoVL(cfg)
    # 3 text tokens, vision_start, a (t=4, h=4, w=6) video -> 4 * 2 * 3 = 24 tokens, vision_end, 2 text
    video = [cfg.vision_start_token_id, *[cfg.video_token_id] * 24, cfg.vision_end_token_id]
    ids = torch.tensor([[1, 2, 3, *video, 5, 6]])
    pos, delta = model.rope_index(ids, video_grid_thw=torch.tensor([[4, 4, 6]]), second_per_grid_ts=torch.tensor([1.0]))
    s = 4  # the video starts at position 4 (3 text tokens + vision_start)
    # interval = tokens_per_second (2) * 1 s per temporal patch: temporal ids s, s+2, s+4, s+6
    expected_video = [[s + 2 * t for t in range(4) for _ in range(6)],
                      [s + h for _ in range(4) for h in range(2) for _ in range(3)],
                      [s + w for _ in range(4) for _ in range(2) for w in range(3)]]
    expected_text = [[0, 1, 2, 3] + [s + 7, s + 8, s + 9]] * 3  # after the video: max (s + 6) + 1
    assert pos[:, 0, 4:28].tolist() == expected_video
    assert pos[:, 0, :4].tolist() == [r[:4] for r in expected_text]
    assert pos[:, 0, 28:].tolist() == [r[4:] for r in expected_text]
    assert delta.tolist() == [[s + 10 - ids.shape[1]]]
    # transformers 5 would restart the text at s + max(h, w) / merge = s + 3, inside the video's span


@pytest.mark.parametrize("name", ["w56-full1-gqa2-tied", "w56-full0-gqa4-video", "w112-full12-videos"])
def test_eager_and_sdpa_agree(name, pair):
    cfg, _, sdpa, path = pair(name)
    eager = MiMoVL.from_pretrained(path, attn_implementation="eager")
    assert eager.config.attn_implementation == "eager" and sdpa.config.attn_implementation == "sdpa"
    batch = model_inputs(build_batch(cfg, CASES[name][1]))
    with torch.no_grad():
        a, b = sdpa(**batch).logits, eager(**batch).logits
    assert max_diff(a, b, batch["attention_mask"]) < 1e-5


def test_flash_attention_agrees_with_sdpa(pair):
    from mimolab.model.attention import flash_available
    if not flash_available():
        pytest.skip("flash-attn needs a CUDA GPU and the flash_attn package (the `gpu` extra)")
    # flash-attn computes in half precision only: compare both backends in bfloat16 on the GPU, on a
    # packed row (the language model uses flash-attn only for packed rows; the ViT always does)
    cfg, _, _, path = pair("w56-full0-gqa4-video")
    row, _ = pack(build_samples(cfg, CASES["w56-full0-gqa4-video"][1]))
    row = {k: v.cuda() for k, v in row.items()}
    logits = {}
    for backend in ("sdpa", "flash_attention_2"):
        model = MiMoVL.from_pretrained(path, attn_implementation=backend, dtype=torch.bfloat16, device="cuda")
        with torch.no_grad():
            logits[backend] = model(**row).logits.float()
    scale = float(logits["sdpa"].abs().max())
    assert max_diff(logits["flash_attention_2"], logits["sdpa"]) < 2e-2 * scale
