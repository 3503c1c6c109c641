"""Special-token ids survive a round trip through mimolab as the source wrote them (null stays null,
an id stays that id), and no id outside the vocabulary is ever written: transformers refuses a pad id
there (``Padding_idx must be within num_embeddings``)."""

import copy
import json
import warnings

import pytest
import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from mimolab import MiMoVL, MiMoVLConfig
from mimolab.config import PRESETS, SPECIAL_ID_FIELDS, special_token_ids
from mimolab.model.generation import generate
from model_helpers import build_batch, max_diff, model_inputs, randomize_, tiny_config

TEXT_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")  # transformers keeps these in text_config
MEDIA_IDS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
ROWS = [{"images": [[1, 4, 6]]}, {"n_text": 9}]


def sized(vocab: int, **changes) -> MiMoVLConfig:
    """The smoke architecture with a vocabulary of ``vocab`` ids, its special tokens at the tail."""
    ids = special_token_ids(vocab)
    return tiny_config(
        text={"vocab_size": vocab}, image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
        **{"pad_token_id": ids["<|endoftext|>"], **changes})


def written_ids(path) -> dict:
    """The special ids of a config.json where transformers reads them."""
    d = json.loads((path / "config.json").read_text())
    return {**{k: d[k] for k in MEDIA_IDS}, **{k: d["text_config"][k] for k in TEXT_IDS}}


def transformers_checkpoint(hf_dict: dict, path) -> Qwen2_5_VLForConditionalGeneration:
    """transformers' own tiny model from ``hf_dict``, with O(1) random weights, saved at ``path``."""
    model = randomize_(Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**copy.deepcopy(hf_dict))), seed=5).eval()
    model.save_pretrained(path)
    return model


def logits(model, batch, hf: bool):
    with torch.no_grad():
        return model(**(batch if hf else model_inputs(batch))).logits


@pytest.mark.parametrize("vocab", [300, 1100, 2048])
@pytest.mark.parametrize("pad", ["null", "given"])
def test_round_trip_keeps_the_source_ids_and_transformers_loads_it(tmp_path, vocab, pad):
    cfg = sized(vocab, pad_token_id=None if pad == "null" else 7)  # 7: an ordinary token, not bos or eos
    source = transformers_checkpoint(cfg.to_hf_dict(), tmp_path / "src")
    assert (written_ids(tmp_path / "src")["pad_token_id"] is None) == (pad == "null")

    ours = MiMoVL.from_pretrained(tmp_path / "src")
    assert {k: getattr(ours.config, k) for k in SPECIAL_ID_FIELDS} == written_ids(tmp_path / "src")
    ours.save_pretrained(tmp_path / "out")
    assert written_ids(tmp_path / "out") == written_ids(tmp_path / "src")

    again = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    assert again.config.text_config.pad_token_id == source.config.text_config.pad_token_id
    assert again.config.image_token_id == source.config.image_token_id
    batch = build_batch(cfg, ROWS)
    mask = batch["attention_mask"]
    want = logits(source, batch, hf=True)
    assert max_diff(logits(ours, batch, hf=False), want, mask) < 1e-4
    assert max_diff(logits(again, batch, hf=True), want, mask) == 0.0


def test_transformers_defaults_outside_a_small_vocabulary_are_not_written_back(tmp_path):
    """A custom model that sets no bos/eos/pad: transformers writes bos 151643, eos 151645 (naming no
    token of 300) and pad null. They come back as null, the pad stays null, and nothing breaks."""
    hf_dict = sized(300).to_hf_dict()
    for key in TEXT_IDS:
        hf_dict.pop(key)
        hf_dict["text_config"].pop(key)
    transformers_checkpoint(hf_dict, tmp_path / "src")
    assert [written_ids(tmp_path / "src")[k] for k in TEXT_IDS] == [151643, 151645, None]
    with pytest.warns(UserWarning, match="outside the vocabulary") as record:
        ours = MiMoVL.from_pretrained(tmp_path / "src")
    assert sorted(str(w.message).split()[1] for w in record) == ["bos_token_id", "eos_token_id"]
    assert (ours.config.bos_token_id, ours.config.eos_token_id, ours.config.pad_token_id) == (None, None, None)
    ours.save_pretrained(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert [saved["text_config"][k] for k in TEXT_IDS] == [saved[k] for k in TEXT_IDS] == [None] * 3
    Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "out")
    # no eos: generation runs to max_new_tokens; padding falls back to token 0
    out = generate(ours, torch.tensor([[5, 6, 7]]), max_new_tokens=4)
    assert len(out.sequences[0]) == 4 and out.finish_reasons == ["length"] and ours.config.padding_id == 0


def test_an_unusable_media_id_in_a_checkpoint_is_refused_by_name():
    hf_dict = sized(300).to_hf_dict()
    hf_dict["image_token_id"] = 151655  # transformers' default, when a custom model sets none
    with pytest.raises(ValueError, match=r"image_token_id = 151655 is outside the vocabulary \(0\.\.299\)"):
        MiMoVLConfig.from_hf_dict(hf_dict)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_write_only_ids_inside_their_vocabulary(name):
    cfg = MiMoVLConfig.from_name(name)
    d = cfg.to_hf_dict()
    for ids in ({k: d[k] for k in SPECIAL_ID_FIELDS}, {k: d["text_config"][k] for k in TEXT_IDS}):
        assert all(0 <= v < cfg.text.vocab_size for v in ids.values()), ids
    assert cfg.pad_token_id is not None and cfg.padding_id == cfg.pad_token_id


def test_a_preset_with_an_id_outside_its_vocabulary_cannot_be_made(tmp_path):
    with pytest.raises(ValueError, match=r"pad_token_id = 2048 is outside the vocabulary \(0\.\.2047\)"):
        MiMoVLConfig.from_name("smoke", pad_token_id=2048)
    # a smaller vocabulary without moving the special tokens leaves them outside it
    with pytest.raises(ValueError, match="image_token_id = 2036 is outside the vocabulary"):
        MiMoVLConfig.from_name("smoke", text={"vocab_size": 1024})
    # null is fine: written as null, and transformers loads it
    model = MiMoVL(tiny_config(pad_token_id=None))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a null pad is no problem: no warning
        model.save_pretrained(tmp_path)
        loaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.config.text_config.pad_token_id is None and written_ids(tmp_path)["pad_token_id"] is None
