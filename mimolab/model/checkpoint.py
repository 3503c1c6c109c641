"""Checkpoint I/O: the only file that reads or writes weights.

Format: a Qwen2.5-VL directory as MiMo-VL is released (config.json with text and vision
sub-configs; model.safetensors, or shards + model.safetensors.index.json). Two key layouts exist:
transformers 5 saves ``model.visual.*`` / ``model.language_model.*`` / ``lm_head.*``; older saves
(the released MiMo-VL checkpoints) use ``visual.*`` / ``model.*`` / ``lm_head.*``. mimolab's own
module names are ``visual.*`` / ``language_model.*`` / ``lm_head.*``, so mapping is a prefix rename.

Loading builds the model on the meta device and assigns each tensor as it is read, so a 7B
checkpoint needs about its own size in RAM, never two copies. Saving writes into a temporary
directory and renames it into place, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from mimolab.config import MiMoVLConfig

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# checkpoint prefix -> mimolab prefix; the first matching rule wins (order matters: model.visual before model.)
_LOAD_RULES = [("model.visual.", "visual."), ("model.language_model.", "language_model."),
               ("visual.", "visual."), ("model.", "language_model."), ("lm_head.", "lm_head.")]
_SAVE_RULES = [("visual.", "model.visual."), ("language_model.", "model.language_model."), ("lm_head.", "lm_head.")]


def _rename(key: str, rules: list[tuple[str, str]]) -> str | None:
    for old, new in rules:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def checkpoint_key_to_mimolab(key: str) -> str | None:
    return _rename(key, _LOAD_RULES)


def mimolab_key_to_checkpoint(key: str) -> str:
    out = _rename(key, _SAVE_RULES)
    if out is None:
        raise KeyError(f"no checkpoint name for parameter {key!r}")
    return out


class CheckpointError(ValueError):
    """A directory that is not a loadable mimolab / Qwen2.5-VL checkpoint (with its processor)."""


def _read_json(file: Path, what: str) -> dict:
    """A JSON object from ``file``, or ``CheckpointError`` naming the file and what is wrong with it."""
    try:
        value = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{file} is not valid JSON ({err}): a corrupt or half-written {what}?") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{file} holds a JSON {type(value).__name__}, not the object a {what} is")
    return value


def _weight_files(path: Path) -> list[Path]:
    if (path / INDEX_FILE).exists():
        index = _read_json(path / INDEX_FILE, "safetensors index")
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise CheckpointError(f"{path / INDEX_FILE} has no 'weight_map' of tensor names to shard files")
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (path / f).exists()]
        if missing:
            raise FileNotFoundError(f"{path}: the index lists shard(s) that are missing: {missing}")
        return [path / f for f in files]
    if (path / SINGLE_FILE).exists():
        return [path / SINGLE_FILE]
    raise FileNotFoundError(f"{path}: no {SINGLE_FILE} or {INDEX_FILE}: not a safetensors checkpoint directory")


def read_config(path: str | Path) -> MiMoVLConfig:
    path = Path(path)
    if path.is_file():
        raise CheckpointError(f"{path} is a file: a checkpoint is loaded from its directory (config.json and "
                              f"the weights side by side), here {path.parent}")
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist")
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: no config.json: not a MiMo-VL / Qwen2.5-VL checkpoint directory")
    config = _read_json(path / "config.json", "model config")
    try:
        return MiMoVLConfig.from_hf_dict(config)
    except (KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path / 'config.json'} is not a Qwen2.5-VL config: "
                              f"{type(err).__name__} {err}") from None


MEDIA_TOKENS = {"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
                "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}


def check_tokenizer(config: MiMoVLConfig, tokenizer, path: str | Path) -> None:
    """``CheckpointError`` when a tokenizer cannot drive a model of ``config``: more token ids than the
    model's vocabulary (they would index past its embedding), media tokens at other ids than the config
    says (images would be read as text), or an end-of-turn id the tokenizer does not have. A vocabulary
    larger than the tokenizer is allowed: Qwen's is padded (151,936 rows for 151,665 tokens)."""
    n, vocab = len(tokenizer), config.text.vocab_size
    where = f"{path}: the model and the tokenizer do not match"
    if n > vocab:
        raise CheckpointError(f"{where}: the tokenizer has {n} tokens but the model's vocabulary holds {vocab} "
                              f"(ids {vocab}..{n - 1} would index past the embedding): a tokenizer of another model?")
    for field, token in MEDIA_TOKENS.items():
        token_id = tokenizer.convert_tokens_to_ids(token)
        if getattr(config, field) != token_id:
            raise CheckpointError(f"{where}: config.json's {field} is {getattr(config, field)} but the tokenizer's "
                                  f"{token} is {token_id}")
    if config.eos_token_id is not None and not 0 <= config.eos_token_id < n:
        raise CheckpointError(f"{where}: config.json's eos_token_id {config.eos_token_id} is not one of the "
                              f"tokenizer's {n} ids: generation would never stop on it")


def load_pretrained(model_class: type[nn.Module], path: str | Path, *, dtype: torch.dtype | None = None,
                    device: str | torch.device = "cpu", attn_implementation: str | None = None) -> nn.Module:
    """``model_class`` (``MiMoVL``, passed in so this file never imports the model: no import cycle)
    built on the meta device from ``path``'s config, then its weights assigned from the safetensors."""
    path = Path(path)
    config = read_config(path)
    if attn_implementation:
        config = config.replace(attn_implementation=attn_implementation)
    files = _weight_files(path)  # fail on a missing file before building anything
    with torch.device("meta"):
        model = model_class(config)
    expected = dict(model.named_parameters())  # tied head appears once, under the embedding's name
    tied = config.text.tie_word_embeddings
    seen, unexpected, mismatched = set(), [], []
    for file in files:
        loaded = {}
        try:
            with safe_open(str(file), framework="pt", device=str(device)) as f:
                for key in f.keys():
                    name = checkpoint_key_to_mimolab(key)
                    if tied and name == "lm_head.weight":
                        continue  # the head is the embedding matrix
                    if name not in expected:
                        unexpected.append(key)
                        continue
                    tensor = f.get_tensor(key)
                    if tuple(tensor.shape) != tuple(expected[name].shape):
                        mismatched.append(f"{key}: checkpoint {tuple(tensor.shape)} vs model {tuple(expected[name].shape)}")
                        continue
                    loaded[name] = tensor.to(dtype) if dtype is not None else tensor
        except SafetensorError as err:
            raise ValueError(f"{file} is not a readable safetensors file (truncated or corrupt?): {err}") from err
        model.load_state_dict(loaded, strict=False, assign=True)
        seen.update(loaded)
    missing = sorted(set(expected) - seen)
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
    if mismatched:
        problems.append(f"shape mismatches: {mismatched[:10]}")
    if problems:
        raise ValueError(f"cannot load {path}: " + "; ".join(problems))
    if tied:
        model.lm_head.weight = model.language_model.embed_tokens.weight  # assign=True broke the tie
    return model.eval()


def save_pretrained(model: nn.Module, path: str | Path, *, max_shard_bytes: int = 5 * 2**30) -> None:
    path = Path(path)
    config: MiMoVLConfig = model.config
    tensors = {}
    for name, tensor in model.state_dict().items():
        if ".lora_" in name:
            continue  # LoRA adapters are saved apart, in peft's format (mimolab.train.lora.save_lora)
        name = name.replace(".base_layer.", ".")  # a LoRA-wrapped linear's own weight
        if config.text.tie_word_embeddings and name == "lm_head.weight":
            continue  # transformers re-ties it from the embedding
        tensors[mimolab_key_to_checkpoint(name)] = tensor.detach().contiguous().cpu()
    shards = _shard(tensors, max_shard_bytes)
    with atomic_directory(path) as tmp:
        hf = config.to_hf_dict()
        hf["dtype"] = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
        (tmp / "config.json").write_text(json.dumps(hf, indent=2))
        if len(shards) == 1:
            save_file(shards[0], str(tmp / SINGLE_FILE), metadata={"format": "pt"})
        else:
            weight_map, total = {}, 0
            for i, shard in enumerate(shards, 1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / name), metadata={"format": "pt"})
                weight_map.update({k: name for k in shard})
                total += sum(t.numel() * t.element_size() for t in shard.values())
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2))


def _shard(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards, size = [{}], 0
    for key, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += nbytes
    return shards


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Write a directory all at once: yields an empty temporary sibling of ``target``, which replaces
    ``target`` when the block ends and is deleted if the block raises (a reader never sees half of it)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(new: Path, target: Path) -> None:
    """Put ``new`` at ``target``: an old directory there is moved aside first, deleted last."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
