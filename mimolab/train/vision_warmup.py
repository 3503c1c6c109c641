"""Vision warm-up (small profiles only): stands in for the pre-trained Qwen2.5-ViT that MiMo-VL starts from.

MiMo-VL's stage 1 starts from a ViT that already sees (Qwen2.5-ViT, pre-trained on billions of images)
and trains only the projector. The small profiles have no such checkpoint; stage 0 (``stage0_llm``)
stands in for MiMo-7B-Base and this stage for the ViT. It trains the ViT alone, with the world's scene
labels as the teacher: for every language-model token (a 2x2 merge unit, 28x28 pixels), the colour,
shape and size of the object that covers it, or background; and for every image, how many objects of
each colour and of each shape it holds, read from the mean of its tokens (a pre-trained ViT carries such
image-level facts in every token, which is what a language model attending broadly reads first). Linear
heads read the ViT's output averaged over each merge unit; they are thrown away afterwards, as a
pre-training head is. The projector stays at its random initialisation (MiMo-VL's stage 1 starts it from
scratch) and the language model is not touched: both are bit-identical after this stage.

Why it exists, measured with ``benchmarks/probe_learnability.py`` (caption alone with stage 3's cpu
settings, 300 steps, n=40, chance 0.07): from the stage 2 of a pipeline whose ViT started from random
weights, caption F1 0.25; from the stage 2 of a pipeline with this warm-up, 0.78.

Resumable like the other stages: the samples of step ``s`` are world indices ``s * images_per_step`` on,
so a checkpoint needs only the step, the weights, the heads and the optimizer.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from mimolab.data.world import generate
from mimolab.data.world.scene import COLORS, SHAPES, SIZES, Obj, draw_obj
from mimolab.eval.harness import HELD_OUT
from mimolab.model.checkpoint import atomic_directory
from mimolab.model.vlm import MiMoVL
from mimolab.train.stage import Stage
from mimolab.train.tracking import Tracker

SCENE_TASKS = ("caption", "counting", "grounding")  # world tasks whose samples list their objects with boxes
ATTRIBUTES = {"colour": list(COLORS), "shape": list(SHAPES), "size": list(SIZES)}  # class 0 is background
MIN_PIXELS = 40  # pixels of an object a token's 28x28 cell must hold to show it (5% of the cell)
STATE_FILE = "warmup_state.pt"
COUNTED = [f"{c}s" for c in COLORS] + [f"{s}s" for s in SHAPES]  # image-level counts, read from the mean token


def token_labels(objects: list[dict], size: tuple[int, int], grid: tuple[int, int], cell: int) -> torch.Tensor:
    """(tokens, 3) class ids (colour, shape, size; 0 = background) of an image's tokens, row-major over
    its ``grid`` (rows, cols) of ``cell``-pixel cells. Each object is drawn alone as a mask at the image's
    ``size`` (width, height), scaled to the grid's frame; a token shows the object with most pixels in its cell."""
    rows, cols = grid
    counts, ids = [], []
    for obj in objects:
        mask = Image.new("RGB", size)
        draw_obj(mask, Obj(obj["shape"], obj["color"], obj["size"], tuple(obj["box"])))
        mask = np.asarray(mask.resize((cols * cell, rows * cell), Image.NEAREST)).any(-1)
        counts.append(torch.from_numpy(mask.reshape(rows, cell, cols, cell).sum((1, 3)).reshape(-1)))
        ids.append([ATTRIBUTES["colour"].index(obj["color"]) + 1, ATTRIBUTES["shape"].index(obj["shape"]) + 1,
                    ATTRIBUTES["size"].index(obj["size"]) + 1])
    labels = torch.zeros(rows * cols, len(ATTRIBUTES), dtype=torch.long)
    if objects:
        most, which = torch.stack(counts).max(0)
        shown = most >= MIN_PIXELS
        labels[shown] = torch.tensor(ids)[which[shown]]
    return labels


def scene_batch(image_processor, indices: range, seed: int, difficulty: float) -> dict[str, torch.Tensor]:
    """Pixel values, grids and per-token labels of the scenes at world ``indices``: each index draws its
    task and a difficulty in [0, ``difficulty``] from its own seeded generator (``scene``)."""
    samples = [scene(index, seed, difficulty) for index in indices]
    encoded = image_processor(images=[s.images[0] for s in samples], return_tensors="pt")
    cell = image_processor.merge_size
    labels = [token_labels(s.meta["objects"], s.images[0].size, (rows // cell, cols // cell),
                           image_processor.patch_size * cell)
              for s, (_, rows, cols) in zip(samples, encoded["image_grid_thw"].tolist())]
    return {"pixel_values": encoded["pixel_values"], "image_grid_thw": encoded["image_grid_thw"],
            "labels": torch.cat(labels), "tokens": [len(t) for t in labels],
            "counts": torch.tensor([scene_counts(s.meta["objects"]) for s in samples], dtype=torch.float)}


def scene_counts(objects: list[dict]) -> list[int]:
    """How many objects of each colour, then of each shape, the image holds (``COUNTED``)."""
    return ([sum(o["color"] == c for o in objects) for c in ATTRIBUTES["colour"]]
            + [sum(o["shape"] == c for o in objects) for c in ATTRIBUTES["shape"]])


def scene(index: int, seed: int, difficulty: float):
    """World sample ``index`` of the warm-up: its task and difficulty drawn from a generator of its own."""
    rng = random.Random(f"vision-warmup/{seed}/{index}")
    return generate(rng.choice(SCENE_TASKS), index, seed=seed, difficulty=round(rng.uniform(0, difficulty), 2))


class SceneHeads(nn.Module):
    """Linear read-outs of the ViT's token features: one classifier per attribute on every token, and the
    image's object counts (per colour, per shape) regressed from the mean of its tokens."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, len(classes) + 1) for name, classes in ATTRIBUTES.items()})
        self.counts = nn.Linear(hidden, len(COUNTED))

    def forward(self, features: torch.Tensor, tokens: list[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        pooled = torch.stack([f.mean(0) for f in features.split(tokens)])
        return {name: head(features) for name, head in self.heads.items()}, self.counts(pooled)


def scene_outputs(model: MiMoVL, heads: SceneHeads, batch: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The heads' attribute logits per token and count estimates per image for a ``scene_batch``."""
    device = next(heads.parameters()).device
    features = model.visual.token_features(batch["pixel_values"].to(device, model.visual.dtype), batch["image_grid_thw"])
    return heads(features.float(), batch["tokens"])


def scene_loss(model: MiMoVL, heads: SceneHeads, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy of the three token attributes plus the squared error of the image's counts; the
    attributes' accuracy on object tokens and the counts' exact-match rate (rounded) beside it."""
    device = next(heads.parameters()).device
    (logits, counts), labels = scene_outputs(model, heads, batch), batch["labels"].to(device)
    target = batch["counts"].to(device)
    loss = sum(F.cross_entropy(logits[name], labels[:, i]) for i, name in enumerate(ATTRIBUTES))
    loss = loss + F.mse_loss(counts, target)
    on_object = labels[:, 0] > 0
    accuracy = {name: float((logits[name].argmax(-1) == labels[:, i])[on_object].float().mean())
                for i, name in enumerate(ATTRIBUTES)} if on_object.any() else {}
    return loss, {**accuracy, "counts": float((counts.round() == target).float().mean())}


def vision_parameters(model: MiMoVL) -> list[nn.Parameter]:
    """The ViT's own weights: everything under ``visual`` except the projector (``visual.merger``)."""
    return [p for name, p in model.named_parameters() if name.startswith("visual.") and not name.startswith("visual.merger.")]


class VisionWarmup:
    """The warm-up's loop: ``images_per_step`` scenes per AdamW step, the stage's warm-up + cosine
    schedule, checkpoints every ``checkpoint_every`` steps (written whole, then renamed into place)."""

    def __init__(self, model: MiMoVL, stage: Stage, image_processor, run_dir: str | Path,
                 tracker: Tracker | None = None) -> None:
        if set(stage.lr) != {"vision"}:
            raise ValueError(f"stage {stage.name!r}: the vision warm-up trains the ViT alone (lr: {{vision: ...}}), "
                             f"got parts {sorted(stage.lr)}")
        self.model, self.stage, self.image_processor = model, stage, image_processor
        self.run_dir, self.tracker = Path(run_dir), tracker
        for param in model.parameters():
            param.requires_grad_(False)
        self.params = vision_parameters(model)
        for param in self.params:
            param.requires_grad_(True)
        torch.manual_seed(stage.seed)
        self.heads = SceneHeads(model.config.vision.hidden_size).to(model.device)
        self.optimizer = torch.optim.AdamW([{"params": self.params}, {"params": self.heads.parameters()}],
                                           lr=stage.lr["vision"], weight_decay=stage.weight_decay, betas=(0.9, 0.95))
        self.step = 0

    def batch(self, step: int, held_out: bool = False) -> dict:
        n = self.stage.images_per_step
        start = (HELD_OUT if held_out else 0) + step * n
        return scene_batch(self.image_processor, range(start, start + n), self.stage.seed, self.stage.difficulty)

    def train_step(self) -> dict:
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.stage.lr["vision"] * self.stage.lr_factor(self.step)
        start = time.perf_counter()
        batch = self.batch(self.step)
        loss, accuracy = scene_loss(self.model, self.heads, batch)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params + list(self.heads.parameters()), self.stage.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        seconds = time.perf_counter() - start
        patches = int(batch["image_grid_thw"].prod(-1).sum())
        return {"step": self.step, "loss": loss.item(), "grad_norm": float(grad_norm), "tokens": patches,
                "tokens_per_s": patches / seconds, "lr/vision": self.optimizer.param_groups[0]["lr"],
                **{f"accuracy/{name}": value for name, value in accuracy.items()}}

    def train(self, progress: bool = True, log=None) -> list[dict]:
        history = []
        bar = tqdm(total=self.stage.steps, initial=self.step, desc=self.stage.name, disable=not progress)
        try:
            while self.step < self.stage.steps:
                record = self.train_step()
                history.append(record)
                if self.tracker is not None:
                    self.tracker.log(record, step=record["step"])
                if log is not None:
                    log(record)
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}")
                if self.step % self.stage.checkpoint_every == 0 or self.step == self.stage.steps:
                    self.save_checkpoint()
        finally:
            bar.close()
        return history

    @torch.no_grad()
    def evaluate(self, steps: int = 4) -> list[dict]:
        """Held-out scenes (world indices from ``HELD_OUT``): each attribute's accuracy on object tokens and the
        counts' exact-match rate, beside chance (the most common class or count, per attribute or count)."""
        self.model.eval()
        labels, counts, guesses, predicted = [], [], [], []
        for step in range(steps):
            batch = self.batch(step, held_out=True)
            logits, count_guess = scene_outputs(self.model, self.heads, batch)
            on_object = batch["labels"][:, 0] > 0
            labels.append(batch["labels"][on_object])
            guesses.append(torch.stack([logits[name].argmax(-1).cpu() for name in ATTRIBUTES], -1)[on_object])
            counts.append(batch["counts"])
            predicted.append(count_guess.round().cpu())
        rows = []
        for name, truth, guess in [*((name, torch.cat(labels)[:, i], torch.cat(guesses)[:, i]) for i, name in enumerate(ATTRIBUTES)),
                                   ("counts", torch.cat(counts), torch.cat(predicted))]:
            score = float((guess == truth).float().mean())
            chance = (float(torch.mode(truth, 0).values.eq(truth).float().mean()) if truth.dim() > 1
                      else float(torch.bincount(truth).max()) / len(truth))
            n = truth.numel()
            stderr = (score * (1 - score) / n) ** 0.5
            rows.append({"task": f"scene {name}", "metric": "exact per count" if name == "counts" else "token accuracy",
                         "score": score, "stderr": stderr, "chance": chance, "n": n,
                         "z": round((score - chance) / stderr, 2) if stderr else None})
        return rows

    def save_checkpoint(self) -> Path:
        final = self.run_dir / "checkpoints" / f"step-{self.step:06d}"
        with atomic_directory(final) as tmp:
            self.model.save_pretrained(tmp / "model")
            torch.save({"step": self.step, "heads": self.heads.state_dict(), "optimizer": self.optimizer.state_dict()},
                       tmp / STATE_FILE)
        return final

    def resume(self) -> bool:
        found = sorted((self.run_dir / "checkpoints").glob("step-*"))
        if not found:
            return False
        from mimolab.train.loop import load_model_into

        load_model_into(self.model, found[-1] / "model")
        state = torch.load(found[-1] / STATE_FILE, weights_only=False)
        self.heads.load_state_dict(state["heads"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        return True
