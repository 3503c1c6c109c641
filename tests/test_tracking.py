"""W&B mode resolution, the tracker's files (offline W&B run included), and the MFU arithmetic."""

import json
import math

import pytest
import torch

from mimolab import MiMoVL, MiMoVLConfig
from mimolab.train.tracking import Tracker, flops_per_token, mfu, wandb_mode


def test_mode_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode() == "offline"  # no key anywhere: never try the network
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"
    assert wandb_mode("offline") == "offline" and wandb_mode("off") == "disabled"  # the argument wins
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ValueError, match="sometimes"):
        wandb_mode()


def test_offline_tracker_writes_jsonl_and_a_syncable_wandb_run(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    with Tracker(tmp_path, {"lr": 1e-3}, name="t") as tracker:
        tracker.log({"step": 1, "loss": 2.5, "grad_norm": float("nan")}, step=1)
        tracker.log({"step": 2, "loss": torch.tensor(1.5)}, step=2)
        tracker.log_table("samples", ["prompt", "reward"], [["a", 1.0], ["b", 0.0]])
        tracker.summary({"skipped": 3})
        assert tracker.mode == "offline"
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records == [{"step": 1, "loss": 2.5, "grad_norm": None}, {"step": 2, "loss": 1.5}]
    assert len((tmp_path / "tables" / "samples.jsonl").read_text().splitlines()) == 2
    assert json.loads((tmp_path / "summary.json").read_text()) == {"skipped": 3}
    assert list(tracker.wandb_dir.glob("*.wandb")), "an offline run directory for `wandb sync`"


def test_disabled_tracker_still_writes_metrics(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with Tracker(tmp_path) as tracker:
        tracker.log({"step": 1, "loss": 1.0})
    assert not (tmp_path / "wandb").exists() and (tmp_path / "metrics.jsonl").read_text().count("\n") == 1


@pytest.mark.parametrize("preset", ["smoke", "mimo-vl-7b"])
def test_flops_per_token_counts_the_real_parameters(preset):
    config = MiMoVLConfig.from_name(preset)
    with torch.device("meta"):
        model = MiMoVL(config)
    non_embedding = sum(p.numel() for n, p in model.language_model.named_parameters() if "embed_tokens" not in n)
    t = config.text
    assert flops_per_token(config, 0) == 6 * non_embedding
    assert flops_per_token(config, 1024) - flops_per_token(config, 0) == 12 * t.num_hidden_layers * t.hidden_size * 1024
    if preset == "mimo-vl-7b":
        assert 6.0e9 < non_embedding < 7.0e9  # MiMo-7B without its embeddings (and without MTP)
    assert mfu(1000.0, 6e9, 1e15) == pytest.approx(0.006) and mfu(1.0, 1.0, None) is None
    assert not math.isnan(flops_per_token(config, 8))
