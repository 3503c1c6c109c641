"""Checkpoint directories in the released format: both key layouts, the flat config, shards,
round trips through transformers, loading on the meta device, and errors that name the problem."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from mimolab import MiMoVL, MiMoVLConfig
from model_helpers import build_batch, make_hf_pair, max_diff, model_inputs, random_mimolab, tiny_config

UNTIED = tiny_config(text={"tie_word_embeddings": False})
TIED = tiny_config()  # the smoke preset ties the head to the embedding
ROWS = [{"images": [[1, 4, 6]]}, {"images": [[1, 6, 10]], "videos": [[2, 8, 4]], "n_text": 2}, {"n_text": 8}]


def logits(model, batch):
    with torch.no_grad():
        return model(**model_inputs(batch)).logits


def hf_logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture
def batch():
    return build_batch(UNTIED, ROWS)


@pytest.mark.parametrize("cfg", [UNTIED, TIED], ids=["untied", "tied"])
def test_save_loads_in_transformers_with_same_logits(tmp_path, cfg):
    ours = random_mimolab(cfg, seed=1)
    ours.save_pretrained(tmp_path / "ckpt")
    hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "ckpt").eval()
    assert hf.config.tie_word_embeddings == cfg.text.tie_word_embeddings
    b = build_batch(cfg, ROWS)
    assert max_diff(logits(ours, b), hf_logits(hf, b), b["attention_mask"]) < 1e-4
    # and back: mimolab reads it again bit for bit
    torch.testing.assert_close(logits(MiMoVL.from_pretrained(tmp_path / "ckpt"), b), logits(ours, b), atol=0, rtol=0)


def test_tied_head_stays_tied_after_loading(tmp_path):
    make_hf_pair(TIED, tmp_path)
    loaded = MiMoVL.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.language_model.embed_tokens.weight
    assert "lm_head.weight" not in load_file(tmp_path / "model.safetensors")  # transformers omits the tied copy


def test_sharded_save_writes_an_index_and_loads_everywhere(tmp_path, batch):
    ours = random_mimolab(UNTIED, seed=2)
    ours.save_pretrained(tmp_path / "ckpt", max_shard_bytes=200_000)
    index = json.loads((tmp_path / "ckpt" / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and not (tmp_path / "ckpt" / "model.safetensors").exists()
    assert sorted(shards) == sorted(p.name for p in (tmp_path / "ckpt").glob("model-*.safetensors"))
    assert len(index["weight_map"]) == len(ours.state_dict())
    loaded = MiMoVL.from_pretrained(tmp_path / "ckpt")
    torch.testing.assert_close(logits(loaded, batch), logits(ours, batch), atol=0, rtol=0)
    hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "ckpt").eval()
    assert max_diff(hf_logits(hf, batch), logits(ours, batch), batch["attention_mask"]) < 1e-4


def to_layout(tensors: dict, layout: str) -> dict:
    """Rename checkpoint keys to the "old" layout of the released checkpoints (``visual.*``,
    ``model.*``; transformers 5.23 still writes it) or the "new" transformers-5 module layout
    (``model.visual.*``, ``model.language_model.*``; what mimolab writes). ``lm_head.*`` is the same."""
    out = {}
    for key, value in tensors.items():
        key = key.replace("model.visual.", "visual.", 1).replace("model.language_model.", "model.", 1)
        if layout == "new" and key.startswith("visual."):
            key = "model." + key
        elif layout == "new" and key.startswith("model."):
            key = "model.language_model." + key[len("model."):]
        out[key] = value
    return out


def flat_config(new: dict) -> dict:
    """A transformers-5 config.json -> the flat style of the released checkpoints (transformers
    4.5x): text fields at top level, rope_theta at top level, rope_scaling with type mrope."""
    new = copy.deepcopy(new)
    text = new.pop("text_config")
    rope = text.pop("rope_parameters")
    text.pop("model_type", None)
    return {**new, **text, "rope_theta": rope["rope_theta"],
            "rope_scaling": {"type": "mrope", "mrope_section": rope["mrope_section"]}}


LAYOUT_PREFIXES = {"old": ("visual.blocks.", "model.layers."),
                   "new": ("model.visual.blocks.", "model.language_model.layers.")}


@pytest.mark.parametrize("cfg", [UNTIED, TIED], ids=["untied", "tied"])
@pytest.mark.parametrize("layout", ["old", "new"])
def test_both_key_layouts_with_a_flat_config_load(tmp_path, cfg, layout):
    hf, ours = make_hf_pair(cfg, tmp_path / "src")
    tensors = to_layout(load_file(tmp_path / "src" / "model.safetensors"), layout)
    vision_prefix, text_prefix = LAYOUT_PREFIXES[layout]
    count = lambda keys, prefix: sum(k.startswith(prefix) for k in keys)  # noqa: E731
    assert count(tensors, vision_prefix) == count(ours.state_dict(), "visual.blocks.")
    assert count(tensors, text_prefix) == count(ours.state_dict(), "language_model.layers.")
    ckpt = tmp_path / layout
    ckpt.mkdir()
    save_file(tensors, ckpt / "model.safetensors", metadata={"format": "pt"})
    flat = flat_config(json.loads((tmp_path / "src" / "config.json").read_text()))
    assert "text_config" not in flat and flat["rope_scaling"]["mrope_section"] == list(cfg.text.mrope_section)
    (ckpt / "config.json").write_text(json.dumps(flat))
    loaded = MiMoVL.from_pretrained(ckpt)
    assert loaded.config.replace(name="x") == ours.config.replace(name="x")
    b = build_batch(cfg, ROWS)
    torch.testing.assert_close(logits(loaded, b), logits(ours, b), atol=0, rtol=0)
    assert max_diff(logits(loaded, b), hf_logits(hf, b), b["attention_mask"]) < 1e-4


def test_flat_config_values_are_read():
    """Each value of a flat config.json lands in the right field (not a default)."""
    cfg = UNTIED.replace(text={"rope_theta": 12345.0, "mrope_section": (4, 2, 2), "rms_norm_eps": 3e-6,
                               "max_position_embeddings": 777},
                         vision={"window_size": 112, "tokens_per_second": 4, "fullatt_block_indexes": (0,)})
    again = MiMoVLConfig.from_hf_dict(flat_config(cfg.to_hf_dict()))
    assert again.replace(name=cfg.name) == cfg


def test_save_is_atomic_and_replaces_an_old_checkpoint(tmp_path, batch):
    first, second = random_mimolab(UNTIED, seed=3), random_mimolab(UNTIED, seed=4)
    first.save_pretrained(tmp_path / "ckpt", max_shard_bytes=200_000)
    second.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary or old directory left
    assert not list((tmp_path / "ckpt").glob("model-*"))  # the old shards went with the old checkpoint
    torch.testing.assert_close(logits(MiMoVL.from_pretrained(tmp_path / "ckpt"), batch), logits(second, batch))


def test_loading_builds_on_meta_and_assigns(tmp_path, monkeypatch):
    """No second copy: the model is built on the meta device (random init touches no real memory) and
    the tensors read are assigned in place of the meta ones."""
    make_hf_pair(UNTIED, tmp_path)
    init_devices, built_devices = set(), []
    original_init, original_weights = MiMoVL.__init__, MiMoVL._init_weights

    def init_weights(module, std=0.02):
        if hasattr(module, "weight"):
            init_devices.add(module.weight.device.type)
        original_weights(module, std)

    def init(self, config):
        original_init(self, config)
        built_devices.append({p.device.type for p in self.parameters()})

    monkeypatch.setattr(MiMoVL, "_init_weights", staticmethod(init_weights))
    monkeypatch.setattr(MiMoVL, "__init__", init)
    loaded = MiMoVL.from_pretrained(tmp_path)
    assert built_devices == [{"meta"}] and init_devices == {"meta"}
    assert all(t.device.type == "cpu" for t in [*loaded.parameters(), *loaded.buffers()])
    saved = to_layout(load_file(tmp_path / "model.safetensors"), "old")
    torch.testing.assert_close(loaded.language_model.layers[1].mlp.up_proj.weight,
                               saved["model.layers.1.mlp.up_proj.weight"], atol=0, rtol=0)


def test_load_in_another_dtype(tmp_path):
    make_hf_pair(UNTIED, tmp_path)
    loaded = MiMoVL.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}


def test_7b_preset_parameter_count_equals_transformers():
    cfg = MiMoVLConfig.from_name("mimo-vl-7b")
    with torch.device("meta"):
        ours = sum(p.numel() for p in MiMoVL(cfg).parameters())
        hf = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**copy.deepcopy(cfg.to_hf_dict())))
        ref = sum(p.numel() for p in hf.parameters())
    assert ours == ref
    assert ours == 8_306_217_216  # the figure in the reference sheet


# ---------------------------------------------------------------- errors
def broken(tmp_path, edit):
    make_hf_pair(UNTIED, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    edit(tensors)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    return tmp_path


def test_missing_key_is_named(tmp_path):
    path = broken(tmp_path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"missing keys \(1\).*language_model\.layers\.1\.mlp\.up_proj\.weight"):
        MiMoVL.from_pretrained(path)


def test_unexpected_key_is_named(tmp_path):
    path = broken(tmp_path, lambda t: t.__setitem__("model.extra.weight", torch.zeros(2)))
    with pytest.raises(ValueError, match=r"unexpected keys \(1\).*'model\.extra\.weight'"):
        MiMoVL.from_pretrained(path)


def test_shape_mismatch_is_named(tmp_path):
    path = broken(tmp_path, lambda t: t.__setitem__("lm_head.weight", torch.zeros(3, 3)))
    message = r"shape mismatches.*lm_head\.weight: checkpoint \(3, 3\) vs model \(2048, 64\)"
    with pytest.raises(ValueError, match=message):
        MiMoVL.from_pretrained(path)


def test_missing_directory_config_and_weights_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        MiMoVL.from_pretrained(tmp_path / "nowhere")
    make_hf_pair(UNTIED, tmp_path / "ckpt")
    (tmp_path / "ckpt" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        MiMoVL.from_pretrained(tmp_path / "ckpt")
    make_hf_pair(UNTIED, tmp_path / "ckpt2")
    (tmp_path / "ckpt2" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors or model\.safetensors\.index\.json"):
        MiMoVL.from_pretrained(tmp_path / "ckpt2")


def test_missing_shard_is_named(tmp_path):
    random_mimolab(UNTIED).save_pretrained(tmp_path, max_shard_bytes=200_000)
    shard = sorted(tmp_path.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=f"shard.*missing.*{shard.name}"):
        MiMoVL.from_pretrained(tmp_path)


@pytest.mark.parametrize("keep", [0.5, 0.001], ids=["data-cut", "header-cut"])
def test_truncated_file_is_a_clear_error(tmp_path, keep):
    make_hf_pair(UNTIED, tmp_path)
    f = tmp_path / "model.safetensors"
    f.write_bytes(f.read_bytes()[: int(f.stat().st_size * keep)])
    message = r"model\.safetensors is not a readable safetensors file \(truncated or corrupt"
    with pytest.raises(ValueError, match=message):
        MiMoVL.from_pretrained(tmp_path)


def test_wrong_model_type_is_named(tmp_path):
    make_hf_pair(UNTIED, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type 'llama'"):
        MiMoVL.from_pretrained(tmp_path)
