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
