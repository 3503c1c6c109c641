"""LoRA through peft: only adapters train, adapters load onto transformers' Qwen2.5-VL with the
same logits, merging keeps the function, a LoRA stage checkpoints and resumes."""

import pytest
import torch
from model_helpers import build_sample, make_hf_pair, model_inputs, tiny_config

from mimolab import MiMoVL
from mimolab.train.lora import add_lora, has_lora, load_lora, lora_parameters, merge_lora, save_lora


def randomize_adapters(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_only_adapters_train_and_base_weights_stay_bit_identical():
    torch.manual_seed(0)
    model = MiMoVL(tiny_config())
    add_lora(model, parts=("llm", "vision", "projector"), r=4)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if ".lora_" not in n}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    assert any("visual.blocks.0.attn.qkv" in n for n in trainable) and any("visual.merger" in n for n in trainable)
    assert not any("lm_head" in n or "embed_tokens" in n for n in trainable)
    sample = model_inputs(build_sample(tiny_config(), images=[(1, 4, 4)]))
    optimizer = torch.optim.AdamW(lora_parameters(model), lr=1e-2)
    before = model(**sample).logits.detach()
    for _ in range(3):
        model(**sample, labels=sample["input_ids"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert not torch.allclose(model(**sample).logits, before)  # the adapters changed the function...
    for name, param in model.named_parameters():
        if ".lora_" not in name:
            assert torch.equal(param, base[name]), name  # ... and nothing else moved


def test_adapters_load_onto_transformers_qwen2_5_vl(tmp_path):
    from peft import PeftModel

    cfg = tiny_config()
    hf, ours = make_hf_pair(cfg, tmp_path / "base")
    add_lora(ours, parts=("llm", "vision"), r=4, alpha=8)
    randomize_adapters(ours)
    save_lora(ours, tmp_path / "adapter")
    peft_hf = PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    sample = build_sample(cfg, images=[(1, 4, 6)], seed=3)
    with torch.no_grad():
        theirs = peft_hf(**sample).logits
        mine = ours.eval()(**model_inputs(sample)).logits
    assert (theirs - mine).abs().max() < 1e-4
    with torch.no_grad():  # and the adapters do matter: without them the logits differ
        plain = MiMoVL.from_pretrained(tmp_path / "base").eval()(**model_inputs(sample)).logits
    assert (plain - mine).abs().max() > 1e-2


def test_merge_keeps_the_function_and_the_plain_layout(tmp_path):
    cfg = tiny_config()
    torch.manual_seed(1)
    model = MiMoVL(cfg).eval()
    model.save_pretrained(tmp_path / "base")
    plain_keys = set(model.state_dict())
    add_lora(model, parts=("llm", "projector"), r=4)
    randomize_adapters(model, seed=2)
    save_lora(model, tmp_path / "adapter")
    sample = model_inputs(build_sample(cfg, images=[(1, 4, 4)]))
    with torch.no_grad():
        with_adapters = model(**sample).logits
        reloaded = MiMoVL.from_pretrained(tmp_path / "base").eval()
        load_lora(reloaded, tmp_path / "adapter")
        torch.testing.assert_close(reloaded(**sample).logits, with_adapters)  # save -> load round trip
        merged = merge_lora(model)
        assert not has_lora(merged) and set(merged.state_dict()) == plain_keys
        torch.testing.assert_close(merged(**sample).logits, with_adapters, atol=1e-5, rtol=1e-5)


def test_bad_lora_input_fails_clearly(tmp_path):
    model = MiMoVL(tiny_config())
    with pytest.raises(ValueError, match="decoder"):
        add_lora(model, parts=("decoder",))
    with pytest.raises(FileNotFoundError, match="not a LoRA adapter directory"):
        load_lora(model, tmp_path)


def test_a_lora_stage_trains_adapters_checkpoints_and_resumes(tmp_path):
    from mimolab.data.pipeline import world_mixture, world_processor, world_tokenizer
    from mimolab.train import Stage, Trainer

    cfg = tiny_config()
    processor = world_processor(world_tokenizer(n_per_task=3))
    stage = Stage(lr={"llm": 1e-2}, lora={"parts": ["llm"], "r": 4}, shares={"caption": 1.0, "text": 1.0}, steps=4,
                  warmup_steps=1, row_tokens=384, rows_per_step=2, checkpoint_every=2)

    def trainer(run_dir):
        torch.manual_seed(0)
        model = MiMoVL(cfg)
        return Trainer(model, stage, world_mixture(stage.shares, processor, cfg, max_length=384), run_dir)

    straight = trainer(tmp_path / "a")
    base = {n: p.detach().clone() for n, p in straight.model.named_parameters() if ".lora_" not in n}
    losses = [r["loss"] for r in straight.train(progress=False)]
    assert all(torch.equal(p, base[n]) for n, p in straight.model.named_parameters() if ".lora_" not in n)
    checkpoint = tmp_path / "a" / "checkpoints" / "step-000002" / "model"
    assert (checkpoint / "adapter" / "adapter_model.safetensors").exists() and (checkpoint / "model.safetensors").exists()
    resumed = trainer(tmp_path / "a")
    assert resumed.resume(tmp_path / "a" / "checkpoints" / "step-000002")
    assert [r["loss"] for r in resumed.train(progress=False)] == pytest.approx(losses[2:], abs=1e-6)
