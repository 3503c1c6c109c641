"""Checkpoints that are broken or do not fit together get an error naming the file and the problem: a
config.json or an index that is not JSON, a path to the weights file instead of its directory, and a
model whose vocabulary or special-token ids do not match its processor's tokenizer (the demo and the
evaluation refuse it at load, before any weight is read, instead of failing on the first question)."""

import json

import pytest
import torch

from mimolab import MiMoVL
from mimolab.config import special_token_ids
from mimolab.data.pipeline import world_processor, world_tokenizer
from mimolab.demo import CheckpointError, ImageDemo, load_checkpoint
from mimolab.eval.run import run_eval
from mimolab.model.checkpoint import CheckpointError as ModelCheckpointError
from mimolab.train.checkpoints import save_final
from model_helpers import tiny_config


@pytest.fixture(scope="module")
def processor():
    return world_processor(world_tokenizer(n_per_task=3))  # 2048 ids, the smoke preset's


def sized(vocab: int, **changes):
    """The smoke architecture with a vocabulary of ``vocab`` ids, its special tokens at the tail."""
    ids = special_token_ids(vocab)
    fields = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                  bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    return tiny_config(text={"vocab_size": vocab}, **{**fields, **changes})


def checkpoint(path, processor, config=None):
    torch.manual_seed(0)
    return save_final(MiMoVL(config or sized(2048)), processor, path)


def test_the_demo_and_eval_error_is_the_checkpoint_error():
    assert CheckpointError is ModelCheckpointError and issubclass(CheckpointError, ValueError)


def test_config_and_index_that_are_not_json_name_the_file(tmp_path, processor):
    path = checkpoint(tmp_path / "a", processor)
    (path / "config.json").write_text('{"model_type": "qwen2_5_vl", ')  # cut mid-write
    with pytest.raises(CheckpointError, match=f"{path / 'config.json'} is not valid JSON"):
        MiMoVL.from_pretrained(path)
    (path / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"config\.json holds a JSON list, not the object a model config is"):
        MiMoVL.from_pretrained(path)

    sharded = tmp_path / "b"
    torch.manual_seed(0)
    MiMoVL(sized(2048)).save_pretrained(sharded, max_shard_bytes=200_000)
    index = sharded / "model.safetensors.index.json"
    good = index.read_text()
    index.write_text(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match=f"{index} is not valid JSON"):
        MiMoVL.from_pretrained(sharded)
    index.write_text(json.dumps({"metadata": {}}))
    with pytest.raises(CheckpointError, match=f"{index} has no 'weight_map'"):
        MiMoVL.from_pretrained(sharded)
    processor.save_pretrained(sharded)
    with pytest.raises(CheckpointError, match="could not be loaded.*has no 'weight_map'"):
        load_checkpoint(sharded)
    index.write_text(good)
    assert isinstance(MiMoVL.from_pretrained(sharded), MiMoVL)


def test_a_path_to_the_weights_file_asks_for_its_directory(tmp_path, processor):
    path = checkpoint(tmp_path / "a", processor)
    weights = path / "model.safetensors"
    message = f"{weights} is a file: .*directory.*{path}"
    with pytest.raises(CheckpointError, match=message):
        MiMoVL.from_pretrained(weights)
    with pytest.raises(CheckpointError, match=f"{weights} is a file: give the checkpoint directory"):
        load_checkpoint(weights)


@pytest.mark.parametrize("config,message", [
    (sized(1024), r"the tokenizer has 2048 tokens but the model's vocabulary holds 1024"),
    (sized(4096), r"config.json's image_token_id is 4084 but the tokenizer's <\|image_pad\|> is 2036"),
    (sized(2048, image_token_id=special_token_ids(2048)["<|video_pad|>"],
           video_token_id=special_token_ids(2048)["<|image_pad|>"]), r"config.json.s image_token_id is 2037 but .* is 2036"),
], ids=["vocabulary smaller than the tokenizer", "special ids of another vocabulary", "media ids swapped"])
def test_a_model_that_does_not_match_its_tokenizer_is_refused_at_load(tmp_path, processor, config, message):
    path = checkpoint(tmp_path / "ckpt", processor, config)
    with pytest.raises(CheckpointError, match="the model and the tokenizer do not match: " + message):
        load_checkpoint(path)
    demo = ImageDemo(checkpoint=path)
    assert not demo.load() and "do not match" in demo.status.value
    with pytest.raises(CheckpointError, match=message):
        run_eval(path, tasks=[], progress=False)


def test_a_matching_checkpoint_still_loads(tmp_path, processor):
    path = checkpoint(tmp_path / "ckpt", processor)
    model, loaded = load_checkpoint(path)
    assert model.config.image_token_id == loaded.image_token_id == 2036
    assert run_eval(path, tasks=[], progress=False) == []
