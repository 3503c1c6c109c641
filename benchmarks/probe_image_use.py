"""Does a checkpoint use its images? Two measurements behind the closing notes of issue 4:

1. held-out scores with the real images and with every image replaced by a blank one of the same
   size (a model that ignores the image scores the same on both);
2. a ridge probe on the vision features (mean and max over the merged tokens of each image): how
   well colour and count can be read from them linearly (300 counting images to fit, 100 to test).

    python benchmarks/probe_image_use.py runs/cpu/pretrain/stage4_long_context/final --tasks counting,gui,chart,caption
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
from PIL import Image

from mimolab import MiMoVL
from mimolab.data.world import generate
from mimolab.data.world.scene import COLORS
from mimolab.eval.harness import held_out, score_samples
from mimolab.processing import MiMoVLProcessor


def blanked(sample):
    """The sample with every image replaced by a white one of the same size."""
    def blank(item):
        return {**item, "image": Image.new("RGB", item["image"].size, (255, 255, 255))} if item.get("type") == "image" else item
    messages = [{**m, "content": [blank(i) for i in m["content"]]} if isinstance(m["content"], list) else m
                for m in sample.messages]
    return dataclasses.replace(sample, messages=messages)


@torch.no_grad()
def probe_accuracy(model, processor, difficulty: float) -> dict[str, float]:
    samples = [generate("counting", i, difficulty=difficulty) for i in range(400)]
    features = []
    for s in samples:
        inputs = processor.image_processor(images=s.images, return_tensors="pt")
        f = model.visual(inputs["pixel_values"], inputs["image_grid_thw"])
        features.append(torch.cat([f.mean(0), f.max(0).values]))
    x = torch.stack(features)
    x = (x - x[:300].mean(0)) / (x[:300].std(0) + 1e-6)
    targets = {"count": torch.tensor([s.answer["count"] for s in samples]),
               "colour": torch.tensor([list(COLORS).index(s.meta["color"]) for s in samples])}
    out = {}
    for name, y in targets.items():
        onehot = torch.nn.functional.one_hot(y).float()
        w = torch.linalg.solve(x[:300].T @ x[:300] + 10 * torch.eye(x.shape[1]), x[:300].T @ onehot[:300])
        out[name] = float(((x[300:] @ w).argmax(1) == y[300:]).float().mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--tasks", default="counting,gui,chart,caption")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--difficulty", type=float, default=0.0)
    args = parser.parse_args()
    model, processor = MiMoVL.from_pretrained(args.checkpoint).eval(), MiMoVLProcessor.from_pretrained(args.checkpoint)
    print("| task | real images | blank images | chance |\n|---|---|---|---|")
    for task in args.tasks.split(","):
        samples = held_out(task, args.n, difficulty=args.difficulty)
        real = score_samples(model, processor, task, samples)
        blank = score_samples(model, processor, task, [blanked(s) for s in samples])
        print(f"| {task} | {real.score:.2f} | {blank.score:.2f} | {real.chance:.2f} |")
    print("linear probe on the vision features (test accuracy):", probe_accuracy(model, processor, args.difficulty))


if __name__ == "__main__":
    main()
