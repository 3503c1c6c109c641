"""Options beyond the released layout: SwiGLU projector, MTP heads, gradient checkpointing."""

import torch

from mimolab import MiMoVL, MiMoVLConfig

CFG = MiMoVLConfig.from_name("smoke")


def sample(cfg, grid=(1, 4, 4), n_text=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = grid[0] * grid[1] * grid[2] // 4
    ids = torch.tensor([[*torch.randint(0, 2000, (3,), generator=g).tolist(), cfg.vision_start_token_id,
                         *[cfg.image_token_id] * n, cfg.vision_end_token_id,
                         *torch.randint(0, 2000, (n_text,), generator=g).tolist()]])
    pixels = torch.randn(grid[0] * grid[1] * grid[2], 3 * 2 * 14 * 14, generator=g)
    return dict(input_ids=ids, pixel_values=pixels, image_grid_thw=torch.tensor([list(grid)]), labels=ids.clone())


def test_swiglu_projector_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = CFG.replace(projector_type="swiglu")
    model = MiMoVL(cfg).eval()
    assert hasattr(model.visual.merger.mlp, "gate_proj")
    model.save_pretrained(tmp_path)
    loaded = MiMoVL.from_pretrained(tmp_path)
    assert loaded.config.projector_type == "swiglu"
    batch = sample(cfg)
    torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, atol=0, rtol=0)


def test_mtp_heads_add_a_loss_that_trains_them(tmp_path):
    torch.manual_seed(0)
    cfg = CFG.replace(text={"num_mtp_layers": 2})
    model = MiMoVL(cfg)
    batch = sample(cfg)
    out = model(**batch, mtp_loss_weight=0.3)
    plain = model(**{k: v for k, v in batch.items() if k != "labels"})
    main = torch.nn.functional.cross_entropy(plain.logits[0, :-1], batch["labels"][0, 1:])
    torch.testing.assert_close(out.loss, main + 0.3 * out.mtp_loss)
    out.loss.backward()
    grads = [p.grad for p in model.language_model.mtp_layers.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    model.save_pretrained(tmp_path)
    assert MiMoVL.from_pretrained(tmp_path).config.text.num_mtp_layers == 2


def test_mtp_off_by_default():
    assert CFG.text.num_mtp_layers == 0 and len(MiMoVL(CFG).language_model.mtp_layers) == 0


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = MiMoVL(CFG)
    batch = sample(CFG)
    model.train()
    model(**batch).loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_gradient_checkpointing(True)
    model(**batch).loss.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], atol=1e-6, rtol=1e-5, msg=name)


def test_vision_segment_loop_equals_block_mask(monkeypatch):
    """Large inputs (and any on a CPU) attend segment by segment instead of through an N^2 mask: same result."""
    import mimolab.model.vision as vision

    torch.manual_seed(0)
    model = MiMoVL(CFG).eval()
    grids = torch.tensor([[1, 12, 16], [2, 8, 8]])
    pixels = torch.randn(int(grids.prod(-1).sum()), 3 * 2 * 14 * 14)
    with torch.no_grad():
        looped = model.visual(pixels, grids)  # on a CPU
        monkeypatch.setattr(vision, "segments_without_mask", lambda device: False)
        masked = model.visual(pixels, grids)
        monkeypatch.setattr(vision, "MAX_MASKED_PATCHES", 10)
        looped_when_large = model.visual(pixels, grids)
    torch.testing.assert_close(looped, masked, atol=1e-6, rtol=0)
    torch.testing.assert_close(looped_when_large, masked, atol=1e-6, rtol=0)


def test_packed_rows_attend_per_sample_like_the_block_mask(monkeypatch):
    """On a CPU a packed row's samples attend one by one (no mask): logits and gradients as with the row's
    block-diagonal mask, in SDPA and in eager attention."""
    import mimolab.model.vlm as vlm
    from mimolab.data.packing import TokenizedSample, collate_packed

    samples = []
    for i, n in enumerate((9, 17, 5)):
        ids = [(7 * i + t) % 1000 for t in range(n)]
        samples.append(TokenizedSample(ids, ids, torch.arange(n).expand(3, -1).clone()))
    row = collate_packed(samples, 40, CFG.pad_token_id)  # three samples and a padding tail
    for backend in ("sdpa", "eager"):
        torch.manual_seed(0)
        model = MiMoVL(CFG.replace(attn_implementation=backend))
        results = []
        for per_sample in (True, False):
            monkeypatch.setattr(vlm, "segments_without_mask", lambda device, on=per_sample: on)
            out = model(**row.model_inputs())
            out.loss.backward()
            results.append((out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                                  if p.grad is not None}))
            model.zero_grad()
        torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=0)
        assert results[0][1].keys() == results[1][1].keys()
        for name, grad in results[0][1].items():
            torch.testing.assert_close(grad, results[1][1][name], atol=1e-6, rtol=1e-4, msg=name)


def test_equal_vision_segments_run_as_a_batch_like_the_block_mask(monkeypatch):
    """Same-size images: windows become a batch; the result equals the block-diagonal mask path."""
    import mimolab.model.vision as vision

    torch.manual_seed(0)
    model = MiMoVL(CFG).eval()
    grids = torch.tensor([[1, 8, 8], [1, 8, 8]])
    pixels = torch.randn(int(grids.prod(-1).sum()), 3 * 2 * 14 * 14)
    with torch.no_grad():
        batched = model.visual(pixels, grids)
        real_segments = vision._segments

        def masked_only(*args):
            seg = real_segments(*args)
            if seg["batch"] > 1:
                seg["mask"] = vision.additive(vision.build_mask(
                    args[1], args[1], causal=False,
                    segment_ids=vision.segment_ids_from_cu_seqlens(seg["cu_seqlens"], args[1])[None]), args[2])
                seg["batch"] = 1
            return seg

        monkeypatch.setattr(vision, "_segments", masked_only)
        monkeypatch.setattr(vision, "segments_without_mask", lambda device: False)
        masked = model.visual(pixels, grids)
    torch.testing.assert_close(batched, masked, atol=1e-6, rtol=0)
