"""Learnability probe: train the cpu preset from scratch on world tasks for N minutes, then score
greedy answers on held-out samples (index >= 10**6). A quick check of the world's difficulty
against a training budget, not the evaluation harness.

    python benchmarks/probe_learnability.py --minutes 5 --tasks counting,text
"""

from __future__ import annotations

import argparse
import json
import re
import time

import torch

from mimolab import MiMoVL, MiMoVLConfig
from mimolab.data.pipeline import world_mixture, world_processor, world_tokenizer
from mimolab.data.world import TASKS, generate
from mimolab.model.generation import generate as generate_text
from mimolab.train import Stage, Trainer


def box_iou(a: list[int], b: list[int]) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def correct(task: str, sample, reply: str) -> bool:
    if task in ("visual_math", "text_reasoning"):
        found = re.search(r"\\boxed\{(-?\d+)\}", reply)
        return bool(found) and int(found.group(1)) == sample.answer["number"]
    if task == "grounding":
        found = re.search(r"\[(\d+), (\d+), (\d+), (\d+)\]", reply)
        return bool(found) and box_iou(list(map(int, found.groups())), sample.answer["bbox_2d"]) > 0.5
    return reply == sample.reply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--n-eval", type=int, default=15)
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    config = MiMoVLConfig.from_name("cpu")
    processor = world_processor(world_tokenizer(n_per_task=40))
    stage = Stage(name="probe", lr={"vision": args.lr, "projector": args.lr, "llm": args.lr},
                  shares={t: 1.0 for t in tasks}, steps=10**6, warmup_steps=20, row_tokens=1024, rows_per_step=4,
                  checkpoint_every=10**9)
    torch.manual_seed(0)
    model = MiMoVL(config)
    trainer = Trainer(model, stage, world_mixture(stage.shares, processor, config, max_length=1024), "runs/probe")
    start = time.time()
    while time.time() - start < args.minutes * 60:
        record = trainer.train_step()
        if trainer.step % 20 == 0:
            print(trainer.step, round(time.time() - start), {k: round(v, 2) for k, v in record.items() if k.startswith("loss")})
    model.eval()
    accuracy = {}
    for task in tasks:
        hits = 0
        for i in range(args.n_eval):
            sample = generate(task, 10**6 + i)
            prompt = [m for m in sample.messages if m["role"] == "user"]
            inputs = processor(processor.apply_chat_template(prompt), images=sample.images or None,
                               videos=sample.videos or None)
            extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
            out = generate_text(model, inputs["input_ids"], inputs["attention_mask"], tokenizer=processor.tokenizer,
                                max_new_tokens=120, **extra)
            hits += correct(task, sample, out.texts[0].replace("<|im_end|>", "").strip())
        accuracy[task] = hits / args.n_eval
    print(json.dumps({"steps": trainer.step, "accuracy": accuracy}))


if __name__ == "__main__":
    main()
