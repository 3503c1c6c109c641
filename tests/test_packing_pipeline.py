"""Packing rows of a token budget and the token-share mixture sampler (no model needed, except
the last test, which runs a packed row through the smoke model)."""

import itertools

import pytest
import torch

from mimolab import MiMoVL, MiMoVLConfig
from mimolab.data.mixture import BadRecord, MixtureSampler
from mimolab.data.packing import PackingStats, TokenizedSample, pack
from mimolab.model.positions import get_rope_index

CFG = MiMoVLConfig.from_name("smoke")


def text_sample(n: int, task: str = "text", start: int = 1) -> TokenizedSample:
    ids = [(start + i) % 1000 for i in range(n)]
    return TokenizedSample(ids, ids, torch.arange(n).expand(3, -1).clone(), task=task)


def image_sample(grid=(1, 4, 4), n_text=5, seed=0) -> TokenizedSample:
    g = torch.Generator().manual_seed(seed)
    n_img = grid[0] * grid[1] * grid[2] // 4
    ids = [7, CFG.vision_start_token_id, *[CFG.image_token_id] * n_img, CFG.vision_end_token_id,
           *torch.randint(0, 1000, (n_text,), generator=g).tolist()]
    pos, _ = get_rope_index(torch.tensor([ids]), image_token_id=CFG.image_token_id, video_token_id=CFG.video_token_id,
                            image_grid_thw=torch.tensor([list(grid)]))
    pixels = torch.randn(grid[0] * grid[1] * grid[2], 3 * 2 * 14 * 14, generator=g)
    return TokenizedSample(ids, ids, pos[:, 0], task="caption", pixel_values=pixels, image_grid_thw=[list(grid)])


def test_rows_hold_exactly_the_budget_and_every_sample_once():
    samples = [text_sample(n, start=n) for n in (30, 50, 20, 64, 10, 40, 33, 7)]
    stats = PackingStats()
    rows = list(pack(samples, budget=64, pad_id=0, max_open=2, stats=stats))
    assert all(r.input_ids.shape == (1, 64) for r in rows)
    seen = sorted(int(r.cu_seqlens[i + 1] - r.cu_seqlens[i]) for r in rows for i in range(len(r.tasks)))
    assert seen == sorted(len(s) for s in samples)
    assert stats.tokens == sum(len(s) for s in samples) and stats.samples == len(samples)
    assert stats.efficiency > sum(len(s) for s in samples) / (len(samples) * 64)  # beats one sample per row


def test_too_long_samples_are_counted_not_packed():
    stats = PackingStats()
    rows = list(pack([text_sample(100), text_sample(10)], budget=64, pad_id=0, stats=stats))
    assert stats.skipped_too_long == 1 and sum(r.n_tokens for r in rows) == 10


def test_packed_row_positions_restart_and_match_model_forward():
    """The packed row through the model gives each sample the logits it gets alone."""
    torch.manual_seed(0)
    model = MiMoVL(CFG).eval()
    samples = [image_sample(seed=1), text_sample(9, start=3), image_sample((1, 4, 6), 3, seed=2)]
    (row,) = list(pack(samples, budget=96, pad_id=CFG.pad_token_id))
    with torch.no_grad():
        packed = model(**{k: v for k, v in row.model_inputs().items() if k != "labels"}).logits[0]
        start = 0
        for s in row_samples(row, samples):
            alone = model(torch.tensor([s.input_ids]), pixel_values=s.pixel_values,
                          image_grid_thw=torch.tensor(s.image_grid_thw) if s.image_grid_thw else None).logits[0]
            torch.testing.assert_close(packed[start:start + len(s)], alone, atol=1e-5, rtol=0)
            assert int(row.position_ids[0, 0, start]) == 0
            start += len(s)


def row_samples(row, samples):
    """The samples of a row in packed order (matched by their ids)."""
    order, start = [], 0
    for i in range(len(row.tasks)):
        n = int(row.cu_seqlens[i + 1] - row.cu_seqlens[i])
        ids = row.input_ids[0, start:start + n].tolist()
        order.append(next(s for s in samples if s.input_ids == ids))
        start += n
    return order


def counting_source(task: str, length: int):
    def open_at(start: int):
        for i in itertools.count(start):
            yield {"task": task, "index": i, "length": length}
    return open_at


def tokenize(record, source):
    if record["index"] % 7 == 3 and source == "b":
        raise BadRecord("corrupt image", f"record {record['index']}")
    return text_sample(record["length"], task=source, start=record["index"])


def make_sampler():
    sources = {"a": counting_source("a", 10), "b": counting_source("b", 30), "c": counting_source("c", 5)}
    return MixtureSampler(sources, {"a": 0.5, "b": 0.3, "c": 0.2}, tokenize)


def test_token_shares_follow_the_targets():
    sampler = make_sampler()
    list(itertools.islice(iter(sampler), 600))
    shares = sampler.token_shares()
    for name, target in {"a": 0.5, "b": 0.3, "c": 0.2}.items():
        assert shares[name] == pytest.approx(target, abs=0.01)
    assert sampler.skips.counts["corrupt image"] > 0  # bad records skipped and counted


def test_resumed_stream_yields_what_an_uninterrupted_one_would():
    full = [(s.task, s.input_ids[0]) for s in itertools.islice(iter(make_sampler()), 200)]
    first = make_sampler()
    head = [(s.task, s.input_ids[0]) for s in itertools.islice(iter(first), 120)]
    state = first.state_dict()
    resumed = make_sampler()
    resumed.load_state_dict(state)
    tail = [(s.task, s.input_ids[0]) for s in itertools.islice(iter(resumed), 80)]
    assert head + tail == full


def test_shares_must_name_existing_sources():
    with pytest.raises(ValueError, match="do not exist"):
        MixtureSampler({"a": counting_source("a", 3)}, {"a": 1.0, "zzz": 1.0}, tokenize)
