"""Run by tests/test_distributed.py under ``accelerate launch`` (2 processes) and alone (1 process):
a few training steps at the smoke preset; the main process writes the losses and final weights."""

import json
import sys
from pathlib import Path

import torch

from mimolab import MiMoVL, MiMoVLConfig
from mimolab.data.pipeline import world_mixture, world_processor, world_tokenizer
from mimolab.train import Stage, Trainer
from mimolab.train.loop import make_accelerator


def main(out: Path) -> None:
    config = MiMoVLConfig.from_name("smoke")
    stage = Stage(name="ddp", lr={"vision": 1e-3, "projector": 1e-3, "llm": 1e-3},
                  shares={"caption": 0.4, "counting": 0.3, "text": 0.3}, steps=3, warmup_steps=1, row_tokens=384,
                  rows_per_step=4, checkpoint_every=2)
    accelerator = make_accelerator()
    processor = world_processor(world_tokenizer(n_per_task=3))
    torch.manual_seed(0)
    model = MiMoVL(config)
    sampler = world_mixture(stage.shares, processor, config, max_length=stage.row_tokens)
    trainer = Trainer(model, stage, sampler, out / "run", accelerator=accelerator)
    history = trainer.train(progress=False)
    if accelerator.is_main_process:
        (out / "losses.json").write_text(json.dumps({"world": accelerator.num_processes,
                                                     "losses": [r["loss"] for r in history]}))
        torch.save(model.state_dict(), out / "weights.pt")


if __name__ == "__main__":  # a script: collecting or importing it runs nothing
    main(Path(sys.argv[1]))
