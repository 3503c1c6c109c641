"""Packed rows: several samples (text only, images, a video) in one row, separated by cu_seqlens.
Each sample must get exactly what it gets alone: its own positions, logits and loss."""

import pytest
import torch

from mimolab import MiMoVL
from model_helpers import build_samples, max_diff, model_inputs, pack, random_mimolab, tiny_config

CFG = tiny_config()
ROWS = [
    {"images": [[1, 6, 10]], "n_text": 4},
    {"n_text": 9},
    {"videos": [[2, 8, 8]], "seconds": [0.5], "n_text": 3},
    {"images": [[1, 4, 4], [1, 8, 4]], "videos": [[3, 4, 8]], "seconds": [0.25], "n_text": 2},
    {"n_text": 1},
]


@pytest.fixture(scope="module")
def model():
    return random_mimolab(CFG, seed=0)


def run(model, inputs, **kw):
    with torch.no_grad():
        return model(**model_inputs(inputs), **kw)


def positions(model, inputs):
    keys = ("image_grid_thw", "video_grid_thw", "second_per_grid_ts", "cu_seqlens")
    return model.rope_index(inputs["input_ids"], **{k: inputs[k] for k in keys if k in inputs})[0]


def test_each_packed_sample_gets_its_own_logits_and_positions(model):
    samples = build_samples(CFG, ROWS)
    row, lengths = pack(samples)
    logits = run(model, row).logits[0]
    pos = positions(model, row)
    assert pos.shape == (3, 1, sum(lengths))
    cu = row["cu_seqlens"].tolist()
    for sample, a, b in zip(samples, cu[:-1], cu[1:]):
        assert pos[:, 0, a].tolist() == [0, 0, 0]  # restarts per sample
        assert torch.equal(pos[:, 0, a:b], positions(model, sample)[:, 0])
        assert max_diff(logits[a:b], run(model, sample).logits[0]) < 1e-5
    # without cu_seqlens the same row is one long sample: positions run on, logits change
    assert pos[0, 0, cu[1]] == 0 and positions(model, {**row, "cu_seqlens": None})[0, 0, cu[1]] > 0
    assert max_diff(run(model, {**row, "cu_seqlens": None}).logits[0, cu[1]:], logits[cu[1]:]) > 1e-2


def test_changing_one_sample_leaves_the_others_unchanged(model):
    samples = build_samples(CFG, ROWS)
    changed = list(samples)
    changed[1] = build_samples(CFG, [{}, {"n_text": 9, "seed": 99}])[1]  # same length, other tokens
    assert not torch.equal(changed[1]["input_ids"], samples[1]["input_ids"])
    (row, _), (row2, _) = pack(samples), pack(changed)
    a, b = run(model, row).logits[0], run(model, row2).logits[0]
    cu = row["cu_seqlens"].tolist()
    for i in range(len(samples)):
        diff = max_diff(a[cu[i]:cu[i + 1]], b[cu[i]:cu[i + 1]])
        assert (diff > 1e-2) if i == 1 else (diff < 1e-6)


def test_packed_loss_never_predicts_across_a_boundary(model):
    """Packed loss = the token-weighted mean of each sample's own loss: the first token of a sample is
    never a target of the previous sample's last position."""
    samples = build_samples(CFG, ROWS)
    row, lengths = pack(samples)
    loss = run(model, row, labels=row["input_ids"]).loss
    per_sample = torch.stack([run(model, s, labels=s["input_ids"]).loss for s in samples])
    targets = torch.tensor([n - 1 for n in lengths], dtype=torch.float32)  # each sample predicts n - 1 tokens
    torch.testing.assert_close(loss, (per_sample * targets).sum() / targets.sum(), atol=1e-5, rtol=0)
    # the loss the naive shift would give (boundary tokens predicted across samples) is different
    logits = run(model, row).logits[0]
    naive = torch.nn.functional.cross_entropy(logits[:-1], row["input_ids"][0, 1:])
    assert abs(float(naive - loss)) > 1e-3


def test_packed_labels_with_ignored_tokens(model):
    """Labels of -100 (prompt, placeholders) stay ignored when packed."""
    samples = build_samples(CFG, ROWS)
    masked = []
    for s in samples:
        labels = s["input_ids"].clone()
        labels[:, :3] = -100  # the prompt
        labels[s["mm_token_type_ids"] > 0] = -100
        masked.append(labels)
    row, _ = pack(samples)
    loss = run(model, row, labels=torch.cat(masked, dim=1)).loss
    total = count = 0
    for s, labels in zip(samples, masked):
        n = int((labels[0, 1:] != -100).sum())
        total = total + run(model, s, labels=labels).loss * n
        count += n
    torch.testing.assert_close(loss, total / count, atol=1e-5, rtol=0)


def test_eager_and_sdpa_agree_on_a_packed_row(model, tmp_path):
    model.save_pretrained(tmp_path)
    eager = MiMoVL.from_pretrained(tmp_path, attn_implementation="eager")
    row, _ = pack(build_samples(CFG, ROWS))
    assert max_diff(run(model, row).logits, run(eager, row).logits) < 1e-5


def test_cu_seqlens_must_cover_the_row(model):
    row, lengths = pack(build_samples(CFG, ROWS[:2]))
    message = f"cu_seqlens covers {sum(lengths) - 1} tokens but the sequence has {sum(lengths)}"
    with pytest.raises(ValueError, match=message):
        run(model, {**row, "cu_seqlens": row["cu_seqlens"] - torch.tensor([0, 0, 1], dtype=torch.int32)})
    text_only, _ = pack(build_samples(CFG, [ROWS[1], ROWS[4]]))
    with pytest.raises(ValueError, match="packed input \\(cu_seqlens\\) must have batch size 1"):
        run(model, {**text_only, "input_ids": text_only["input_ids"].expand(2, -1)})
