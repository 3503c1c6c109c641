"""Learnability probe: train a preset from scratch on world tasks for a number of steps (all parts
at once, or starting from a checkpoint), then score held-out samples with the evaluation harness
(score beside measured chance). A quick check of the world's difficulty against a training
budget; the pipeline itself is ``mimolab pretrain``.

    python benchmarks/probe_learnability.py --steps 150 --tasks counting,caption --difficulty 0.3
    python benchmarks/probe_learnability.py --steps 70 --tasks caption --difficulty 0 --sensitivity
    python benchmarks/probe_learnability.py --stage stage3_multimodal --init runs/cpu/pretrain/stage2_alignment/final --seed 1

``--stage`` starts from a pipeline stage at the cpu profile (its mixture, learning rates, steps, rows and
difficulty); the options given beside it override those settings.

``--sensitivity`` also reports, at initialisation and after training, how much the image reaches the
model: the spread of the ViT's output across 12 images (per feature, mean of the std), its mean
magnitude, and the largest logit change when one sample's image is swapped for another's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from mimolab import MiMoVL, MiMoVLConfig
from mimolab.data.packing import collate_packed
from mimolab.data.pipeline import world_mixture, world_processor, world_tokenizer
from mimolab.data.world import TASKS
from mimolab.eval import evaluate, scores_table
from mimolab.model.vlm import PARTS
from mimolab.train import Stage, Trainer
from mimolab.train.stage import load_stage


@torch.no_grad()
def image_sensitivity(model: MiMoVL, processor, task: str, difficulty: float) -> dict:
    """Spread of image features across images, their size, and the logit change an image swap causes."""
    model.eval()
    stream = iter(world_mixture({task: 1.0}, processor, model.config, max_length=1024, difficulty=difficulty))
    samples = [next(stream) for _ in range(12)]
    features = torch.stack([model.visual(s.pixel_values, torch.tensor(s.image_grid_thw)) for s in samples])
    inputs = collate_packed(samples[:1], 1024, model.config.pad_token_id).model_inputs()
    inputs.pop("labels")
    n = len(samples[0])
    logits = model(**inputs).logits[0, :n]
    inputs["pixel_values"] = samples[1].pixel_values
    swapped = model(**inputs).logits[0, :n]
    return {"feature_spread": round(float(features.std(0).mean()), 4), "feature_size": round(float(features.abs().mean()), 4),
            "logit_change_on_swap": round(float((logits - swapped).abs().max()), 4)}


def probe_stage(args: argparse.Namespace) -> Stage:
    """The probe's stage: a pipeline stage's cpu settings (``--stage``) or the probe's defaults, with the
    options given on the command line on top. Without ``--stage``, ``--lr`` sets every part's rate."""
    base = load_stage(args.stage, "cpu") if args.stage else Stage(
        lr={part: 2e-3 for part in PARTS}, shares={t: 1.0 for t in TASKS}, steps=150, warmup_steps=20,
        difficulty=0.5, rows_per_step=4, row_tokens=1024)
    given = {"steps": args.steps, "difficulty": args.difficulty, "rows_per_step": args.rows,
             "weight_decay": args.weight_decay, "min_lr_ratio": args.min_lr_ratio}
    given = {k: v for k, v in given.items() if v is not None}
    if args.tasks:  # task or task=share, comma-separated (no share: equal shares)
        given["shares"] = {t.split("=")[0]: float(t.split("=")[1]) if "=" in t else 1.0 for t in args.tasks.split(",")}
    lr = dict(base.lr)
    if args.lr is not None:
        lr["llm"] = args.lr
    vision_lr = args.vision_lr or (None if args.stage else args.lr)
    if vision_lr is not None:
        lr["vision"] = lr["projector"] = vision_lr
    stage = dataclasses.replace(base, name="probe", lr=lr, checkpoint_every=10**9, init_from=None, seed=args.seed,
                                **given)
    return dataclasses.replace(stage, warmup_steps=min(stage.warmup_steps, stage.steps // 5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--tasks", help="tasks to train, comma-separated, each optionally with its token share (grounding=0.2)")
    parser.add_argument("--lr", type=float, help="language model learning rate (default 2e-3)")
    parser.add_argument("--vision-lr", type=float, default=None, help="ViT and projector (default: --lr)")
    parser.add_argument("--seed", type=int, default=0, help="model init and data stream")
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--min-lr-ratio", type=float, help="cosine decay floor (default 0.1; 1: constant after warm-up)")
    parser.add_argument("--difficulty", type=float, help="default 0.5")
    parser.add_argument("--rows", type=int, help="packed 1024-token rows per step (default 4)")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--stage", help="start from this pipeline stage's cpu settings (e.g. stage3_multimodal)")
    parser.add_argument("--init", help="start from this checkpoint directory instead of random weights")
    parser.add_argument("--n-eval", type=int, default=40)
    parser.add_argument("--out", default="runs/probe")
    parser.add_argument("--sensitivity", action="store_true", help="report how much the image reaches the model")
    args = parser.parse_args()
    stage = probe_stage(args)
    tasks = list(stage.shares)
    config = MiMoVLConfig.from_name(args.preset)
    processor = world_processor(world_tokenizer())
    torch.manual_seed(args.seed)
    model = MiMoVL.from_pretrained(args.init) if args.init else MiMoVL(config)
    sampler = world_mixture(stage.shares, processor, config, max_length=stage.row_tokens, difficulty=stage.difficulty,
                            seed=args.seed)
    trainer = Trainer(model, stage, sampler, args.out)
    if args.sensitivity:
        print("image sensitivity at initialisation:", image_sensitivity(model, processor, tasks[0], stage.difficulty))
    start = time.time()
    history = trainer.train(progress=True)
    minutes = (time.time() - start) / 60
    last = {k: round(sum(r[k] for r in history[-20:] if k in r) / max(1, sum(k in r for r in history[-20:])), 3)
            for k in history[-1] if k.startswith("loss")}
    if args.sensitivity:
        print("image sensitivity after training:", image_sensitivity(model, processor, tasks[0], stage.difficulty))
    rows = evaluate(model, processor, tasks, n=args.n_eval, difficulty=stage.difficulty)
    print(scores_table(rows))
    print(json.dumps({"steps": stage.steps, "seed": args.seed, "minutes": round(minutes, 1), "last_20_losses": last,
                      "scores": {r.task: [round(r.score, 3), round(r.chance, 3)] for r in rows}}))


if __name__ == "__main__":
    main()
