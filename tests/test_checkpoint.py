"""Checkpoint directories in the released format: both key layouts, shards, errors, round trips."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from mimolab import MiMoVL, MiMoVLConfig
from model_helpers import batch_of, make_pair, tiny_config, without

CFG = tiny_config(text={"tie_word_embeddings": False})


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture
def batch():
    return without(batch_of(CFG, [{"images": [[1, 4, 6]]}, {"n_text": 8}]), "mm_token_type_ids")


def test_save_loads_in_transformers_with_same_logits(tmp_path, batch):
    torch.manual_seed(1)
    ours = MiMoVL(CFG).eval()
    ours.save_pretrained(tmp_path / "ckpt")
    hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "ckpt").eval()
    types = (batch["input_ids"] == CFG.image_token_id).long()
    with torch.no_grad():
        ref = hf(**batch, mm_token_type_ids=types).logits
    real = batch["attention_mask"].bool()
    assert (logits(ours, batch) - ref)[real].abs().max() < 1e-4


def test_sharded_save_writes_an_index_and_loads_everywhere(tmp_path, batch):
    torch.manual_seed(2)
    ours = MiMoVL(CFG).eval()
    ours.save_pretrained(tmp_path / "ckpt", max_shard_bytes=200_000)
    index = json.loads((tmp_path / "ckpt" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    torch.testing.assert_close(logits(MiMoVL.from_pretrained(tmp_path / "ckpt"), batch), logits(ours, batch), atol=0, rtol=0)
    Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "ckpt")  # transformers reads the shards too


def to_layout(tensors: dict, layout: str) -> dict:
    """Rename checkpoint keys to the old (visual.*, model.*) or transformers-5 (model.visual.*,
    model.language_model.*) layout, whichever the input used."""
    out = {}
    for key, value in tensors.items():
        key = key.replace("model.visual.", "visual.").replace("model.language_model.", "model.")
        if layout == "new":
            key = key.replace("visual.", "model.visual.", 1) if key.startswith("visual.") else key.replace("model.", "model.language_model.", 1)
        out[key] = value
    return out


@pytest.mark.parametrize("layout", ["old", "new"])
def test_both_key_layouts_and_flat_config_load(tmp_path, batch, layout):
    hf, ours = make_pair(CFG, tmp_path / "src")
    tensors = to_layout(load_file(tmp_path / "src" / "model.safetensors"), layout)
    prefix = "model.language_model.layers." if layout == "new" else "model.layers."
    assert any(k.startswith(prefix) for k in tensors)
    ckpt = tmp_path / layout
    ckpt.mkdir()
    save_file(tensors, ckpt / "model.safetensors", metadata={"format": "pt"})
    # the flat config.json of the released checkpoints (transformers 4.5x era)
    new_cfg = json.loads((tmp_path / "src" / "config.json").read_text())
    text = new_cfg.pop("text_config")
    rope = text.pop("rope_parameters")
    flat = {**new_cfg, **{k: v for k, v in text.items() if k != "model_type"},
            "rope_theta": rope["rope_theta"], "rope_scaling": {"type": "mrope", "mrope_section": rope["mrope_section"]}}
    (ckpt / "config.json").write_text(json.dumps(flat))
    loaded = MiMoVL.from_pretrained(ckpt)
    assert loaded.config.replace(name="x") == ours.config.replace(name="x")
    torch.testing.assert_close(logits(loaded, batch), logits(ours, batch), atol=0, rtol=0)


def test_save_is_atomic_and_replaces_an_old_checkpoint(tmp_path, batch):
    torch.manual_seed(3)
    first, second = MiMoVL(CFG).eval(), MiMoVL(CFG).eval()
    first.save_pretrained(tmp_path / "ckpt")
    second.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary or old directory left
    torch.testing.assert_close(logits(MiMoVL.from_pretrained(tmp_path / "ckpt"), batch), logits(second, batch))


def test_loading_builds_on_meta(tmp_path, monkeypatch):
    """No second copy: the model is built on the meta device and weights are assigned, not copied."""
    make_pair(CFG, tmp_path)
    devices = []
    original = MiMoVL.__init__

    def spy(self, config):
        original(self, config)
        devices.append(self.lm_head.weight.device.type)

    monkeypatch.setattr(MiMoVL, "__init__", spy)
    loaded = MiMoVL.from_pretrained(tmp_path)
    assert devices == ["meta"]
    assert all(p.device.type == "cpu" for p in loaded.parameters())


def test_7b_preset_parameter_count_equals_transformers():
    cfg = MiMoVLConfig.from_name("mimo-vl-7b")
    with torch.device("meta"):
        ours = sum(p.numel() for p in MiMoVL(cfg).parameters())
        import copy
        ref = sum(p.numel() for p in Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**copy.deepcopy(cfg.to_hf_dict()))).parameters())
    assert ours == ref == 8_306_217_216


def broken(tmp_path, edit):
    make_pair(CFG, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    edit(tensors)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    return tmp_path


def test_missing_key_is_named(tmp_path):
    path = broken(tmp_path, lambda t: t.pop(next(k for k in t if k.endswith("layers.1.mlp.up_proj.weight"))))
    with pytest.raises(ValueError, match=r"missing keys \(1\).*layers\.1\.mlp\.up_proj"):
        MiMoVL.from_pretrained(path)


def test_unexpected_key_is_named(tmp_path):
    path = broken(tmp_path, lambda t: t.__setitem__("model.language_model.extra.weight", torch.zeros(2)))
    with pytest.raises(ValueError, match=r"unexpected keys.*extra\.weight"):
        MiMoVL.from_pretrained(path)


def test_shape_mismatch_is_named(tmp_path):
    path = broken(tmp_path, lambda t: t.__setitem__("lm_head.weight", torch.zeros(3, 3)))
    with pytest.raises(ValueError, match=r"shape mismatches.*lm_head\.weight"):
        MiMoVL.from_pretrained(path)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MiMoVL.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        MiMoVL.from_pretrained(tmp_path / "empty")
    make_pair(CFG, tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        MiMoVL.from_pretrained(tmp_path / "ckpt")


def test_missing_shard_is_named(tmp_path):
    torch.manual_seed(0)
    MiMoVL(CFG).save_pretrained(tmp_path, max_shard_bytes=200_000)
    shard = sorted(tmp_path.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=shard.name):
        MiMoVL.from_pretrained(tmp_path)


def test_truncated_file_is_a_clear_error(tmp_path):
    make_pair(CFG, tmp_path)
    f = tmp_path / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        MiMoVL.from_pretrained(tmp_path)
