"""Quantized inference (mimolab/model/quantize.py): int8 replaces exactly the language model's linear layers,
computes what its stored int8 weights say, stays close to the float model, and refuses what it cannot do."""

import pytest
import torch
import torch.nn as nn

from mimolab import MiMoVL
from mimolab.model.generation import generate
from mimolab.model.quantize import planned_weight_bytes, quantizable, quantization_of, weight_bytes

from model_helpers import build_batch, model_inputs, random_mimolab, tiny_config

pytest.importorskip("torchao")
CFG = tiny_config()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("float")
    random_mimolab(CFG, seed=3).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pair(checkpoint):
    return MiMoVL.from_pretrained(checkpoint), MiMoVL.from_pretrained(checkpoint, quantize="int8")


def batch():
    rows = [{"images": [(1, 4, 6)], "n_text": 4}, {"n_text": 9}, {"images": [(1, 6, 4)], "n_text": 2}]
    return model_inputs(build_batch(CFG, rows))


def is_plain(weight: torch.Tensor) -> bool:
    return type(weight.data) is torch.Tensor


def test_int8_replaces_the_language_model_linears_and_nothing_else(pair):
    full, quant = pair
    names = {name for name, _ in quantizable(quant)}
    assert names and all(name.startswith("language_model.layers.") for name in names)
    for name, module in quant.named_modules():
        if isinstance(module, nn.Linear):
            assert is_plain(module.weight) != (name in names), name  # quantized exactly where expected
    assert quantization_of(quant) == "int8" and quantization_of(full) is None
    # the ViT and projector, the embedding and the head: bit-identical to the unquantized model's
    full_state, quant_state = full.state_dict(), quant.state_dict()
    kept = [k for k in full_state if k.startswith("visual.") or "embed_tokens" in k or k.startswith("lm_head")]
    assert any(k.startswith("visual.merger.") for k in kept) and any("embed_tokens" in k for k in kept)
    for key in kept:
        assert is_plain(quant_state[key]) and torch.equal(full_state[key], quant_state[key]), key


@torch.no_grad()
def test_int8_logits_are_the_dequantized_weights_and_close_to_float(pair, checkpoint):
    full, quant = pair
    inputs = batch()
    # a float model holding the int8 weights' values (int8 data times the per-row scale) computes the same logits:
    # the quantized model runs its stored weights, no more, no less
    dequant = MiMoVL.from_pretrained(checkpoint)
    for (name, target), (_, source) in zip(quantizable(dequant), quantizable(quant)):
        w = source.weight
        target.weight.copy_((w.qdata.float() - w.zero_point.float()) * w.scale)
    q, d, f = (m(**inputs).logits for m in (quant, dequant, full))
    real = inputs["attention_mask"].bool()
    assert (q - d).abs()[real].max() < 1e-4
    # against the float model (unit-gain random weights, peaked attention: errors grow through the layers): measured
    # 0.091 max drift over logits up to 3.7 in size (2.5%); trained checkpoints: bench_quantize.py
    drift, size = (q - f).abs()[real].max(), f[real].abs().max()
    assert 0 < drift < 0.05 * size
    assert (q.argmax(-1) == f.argmax(-1))[real].float().mean() > 0.9  # measured 0.977


def test_int8_greedy_agrees_with_float(pair):
    full, quant = pair
    inputs = batch()
    ids, mask = inputs.pop("input_ids"), inputs.pop("attention_mask")
    a = generate(full, ids, mask, max_new_tokens=24, eos_token_ids=[-1], **inputs).sequences
    b = generate(quant, ids, mask, max_new_tokens=24, eos_token_ids=[-1], **inputs).sequences
    agree = sum(x == y for s, t in zip(a, b) for x, y in zip(s, t)) / sum(map(len, a))
    assert agree >= 0.9, (a, b)  # measured: 1.0 on this model
    assert len({tuple(s) for s in a}) == 3  # the rows really differ


def test_planned_weight_bytes_equal_the_measured_ones(checkpoint, pair):
    full, _ = pair
    bf16 = MiMoVL.from_pretrained(checkpoint, dtype=torch.bfloat16)
    int8 = MiMoVL.from_pretrained(checkpoint, dtype=torch.bfloat16, quantize="int8")
    assert planned_weight_bytes(full, "fp32") == weight_bytes(full)
    assert planned_weight_bytes(full, "bf16") == weight_bytes(bf16)
    assert planned_weight_bytes(full, "int8") == weight_bytes(int8) < weight_bytes(bf16)
    with torch.device("meta"):  # shapes alone: the same figure without weights
        meta = MiMoVL(CFG)
    assert planned_weight_bytes(meta, "int8") == weight_bytes(int8)
    assert planned_weight_bytes(meta, "nf4") < planned_weight_bytes(meta, "int8")


def test_a_quantized_model_refuses_to_be_saved(pair, tmp_path):
    _, quant = pair
    with pytest.raises(ValueError, match="quantized .*cannot be saved.*quantize="):
        quant.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_quantize_values_are_clear_errors(checkpoint):
    with pytest.raises(ValueError, match=r"quantize must be one of \('int8', 'int4', 'nf4'\).*'int3'"):
        MiMoVL.from_pretrained(checkpoint, quantize="int3")
    for mode in ("int4", "nf4"):  # bitsandbytes' 4-bit kernels: a CUDA device and the gpu extra
        with pytest.raises(ValueError, match=rf"quantize='{mode}' runs on a CUDA GPU.*device 'cpu'.*\.\[gpu\]"):
            MiMoVL.from_pretrained(checkpoint, quantize=mode)
    with pytest.raises(ValueError, match="mode must be"):
        planned_weight_bytes(MiMoVL(CFG), "fp8")


def test_cli_eval_quantize_error_names_the_extra_and_device(checkpoint):
    from mimolab.cli import main

    with pytest.raises(SystemExit, match=r"mimolab eval: quantize='nf4' runs on a CUDA GPU.*\.\[gpu\]"):
        main(["eval", str(checkpoint), "--quantize", "nf4", "--tasks", ""])
