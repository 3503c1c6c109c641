"""Per-component parameter counts (built on the meta device, so the 7B preset costs nothing)."""

from __future__ import annotations

import torch

from mimolab.config import MiMoVLConfig


def parameter_table(config: MiMoVLConfig) -> list[tuple[str, int]]:
    """[(component, parameters)], ending with the total. Tied head weights are counted once."""
    from mimolab.model.vlm import MiMoVL

    with torch.device("meta"):
        model = MiMoVL(config)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    vit = count(model.visual) - count(model.visual.merger)
    lm = model.language_model
    rows = [
        ("vision encoder (Qwen2.5-ViT)", vit),
        ("projector (" + config.projector_type + ")", count(model.visual.merger)),
        ("token embeddings", count(lm.embed_tokens)),
        ("decoder layers", count(lm.layers) + count(lm.norm)),
        ("lm head" + (" (tied)" if config.text.tie_word_embeddings else ""),
         0 if config.text.tie_word_embeddings else count(model.lm_head)),
    ]
    if config.text.num_mtp_layers:
        rows.append(("MTP layers", count(lm.mtp_layers)))
    rows.append(("total", count(model)))
    return rows


def weight_changes(before: torch.nn.Module, after: torch.nn.Module) -> list[dict]:
    """Per part (vision, projector, llm): how many tensors changed between two models and the
    largest absolute change; a frozen part shows 0 changed tensors and a max change of exactly 0."""
    from mimolab.model.vlm import part_of

    rows: dict[str, dict] = {}
    after_state = after.state_dict()
    for name, tensor in before.state_dict().items():
        row = rows.setdefault(part_of(name), {"part": part_of(name), "tensors": 0, "changed": 0, "max_abs_change": 0.0})
        delta = (after_state[name].float() - tensor.float()).abs().max().item() if tensor.numel() else 0.0
        row["tensors"] += 1
        row["changed"] += int(not torch.equal(after_state[name], tensor))
        row["max_abs_change"] = max(row["max_abs_change"], delta)
    return list(rows.values())
