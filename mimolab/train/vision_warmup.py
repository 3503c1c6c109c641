"""Vision warm-up (small profiles only): stands in for the pre-trained Qwen2.5-ViT that MiMo-VL starts from.

MiMo-VL's stage 1 starts from a ViT that already sees (Qwen2.5-ViT, pre-trained on billions of images)
and trains only the projector. The small profiles have no such checkpoint; stage 0 (``stage0_llm``)
stands in for MiMo-7B-Base and this stage for the ViT. It trains the ViT alone, with the world's scene
labels as the teacher: for every language-model token (a 2x2 merge unit, 28x28 pixels), the colour,
shape and size of the object that covers it, or background; and for every image, how many objects of
each colour and of each shape it holds, read from the mean of its tokens (a pre-trained ViT carries such
image-level facts in every token, which is what a language model attending broadly reads first). A
quarter of the images are the world's bar charts and tables (Qwen2.5-ViT's pre-training holds charts and
documents): every token of theirs learns which bar or table row covers it and that entry's value. Linear
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
from PIL import Image, ImageDraw
from torch import nn
from tqdm.auto import tqdm

from mimolab.data.world import generate
from mimolab.data.world.charts import ITEMS, entry_boxes
from mimolab.data.world.scene import COLORS, SHAPES, SIZES, Obj, draw_obj
from mimolab.eval.harness import HELD_OUT
from mimolab.eval.results import TaskScore
from mimolab.model.vlm import MiMoVL
from mimolab.train.checkpoints import LoopRNG, load_checkpoint, save_checkpoint, stop_if_not_finite
from mimolab.train.stage import Stage
from mimolab.train.tracking import Tracker

SCENE_TASKS = ("caption", "counting", "grounding")  # world tasks whose samples list their objects with boxes
CHART_SHARE = 0.25  # share of the warm-up's images that are charts and tables (the rest: scenes)
IGNORE = -100  # a label no loss reads: chart tokens have no object attributes, scene tokens no chart entries
# what a chart token shows (class 0: no bar or row): which entry (bars by letter A-E, table rows by item) and its value
CHART_LABELS = {"entry": [f"bar {chr(65 + i)}" for i in range(5)] + [f"row {item}" for item in ITEMS],
                "value": [str(v) for v in range(1, 10)]}
ATTRIBUTES = {"colour": list(COLORS), "shape": list(SHAPES), "size": list(SIZES)}  # class 0 is background
MIN_PIXELS = 40  # pixels of an object a token's 28x28 cell must hold to show it (5% of the cell)
STATE_FILE = "warmup_state.pt"
COUNTED = [f"{c}s" for c in COLORS] + [f"{s}s" for s in SHAPES]  # image-level counts, read from the mean token


def token_labels(objects: list[dict], size: tuple[int, int], grid: tuple[int, int], cell: int) -> torch.Tensor:
    """(tokens, 3) class ids (colour, shape, size; 0 = background) of an image's tokens, row-major over
    its ``grid`` (rows, cols) of ``cell``-pixel cells. Each object is drawn alone as a mask at the image's
    ``size`` (width, height), scaled to the grid's frame; a token shows the object with most pixels in its cell."""
    masks, ids = [], []
    for obj in objects:
        mask = Image.new("RGB", size)
        draw_obj(mask, Obj(obj["shape"], obj["color"], obj["size"], tuple(obj["box"])))
        masks.append(mask)
        ids.append([ATTRIBUTES["colour"].index(obj["color"]) + 1, ATTRIBUTES["shape"].index(obj["shape"]) + 1,
                    ATTRIBUTES["size"].index(obj["size"]) + 1])
    return _most_pixels(masks, ids, grid, cell, len(ATTRIBUTES))


def chart_token_labels(meta: dict, size: tuple[int, int], grid: tuple[int, int], cell: int) -> torch.Tensor:
    """(tokens, 2) class ids (entry, value; 0 = neither) of a chart's tokens: the bar (with its value and
    letter) or table row (name and count) with most pixels in the token's cell, as in ``token_labels``."""
    masks, ids = [], []
    for box, name, value in zip(entry_boxes(meta["form"], meta["values"]), meta["labels"], meta["values"]):
        mask = Image.new("L", size)
        ImageDraw.Draw(mask).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
        masks.append(mask)
        entry = f"bar {name}" if meta["form"] == "bar_chart" else f"row {name}"
        ids.append([CHART_LABELS["entry"].index(entry) + 1, CHART_LABELS["value"].index(str(value)) + 1])
    return _most_pixels(masks, ids, grid, cell, len(CHART_LABELS))


def _most_pixels(masks: list[Image.Image], ids: list[list[int]], grid: tuple[int, int], cell: int,
                 width: int) -> torch.Tensor:
    """Per token, the ``ids`` of the mask with most pixels in its cell (at least ``MIN_PIXELS``), else zeros."""
    rows, cols = grid
    labels = torch.zeros(rows * cols, width, dtype=torch.long)
    if not masks:
        return labels
    counts = []
    for mask in masks:
        pixels = np.asarray(mask.resize((cols * cell, rows * cell), Image.NEAREST))
        pixels = pixels.any(-1) if pixels.ndim == 3 else pixels > 0
        counts.append(torch.from_numpy(pixels.reshape(rows, cell, cols, cell).sum((1, 3)).reshape(-1)))
    most, which = torch.stack(counts).max(0)
    shown = most >= MIN_PIXELS
    labels[shown] = torch.tensor(ids)[which[shown]]
    return labels


def scene_batch(image_processor, indices: range, seed: int, difficulty: float) -> dict[str, torch.Tensor]:
    """Pixel values, grids and per-token labels of the warm-up images at world ``indices``: each index draws
    its task (a scene, or a chart or table with ``CHART_SHARE``) and a difficulty in [0, ``difficulty``] from
    its own seeded generator (``scene``). Scene tokens have object attributes (``labels``), chart tokens
    their entry and value (``chart_labels``), each ``IGNORE`` on the other kind; scenes have counts."""
    samples = [scene(index, seed, difficulty) for index in indices]
    encoded = image_processor(images=[s.images[0] for s in samples], return_tensors="pt")
    cell, labels, chart_labels = image_processor.merge_size, [], []
    for s, (_, rows, cols) in zip(samples, encoded["image_grid_thw"].tolist()):
        grid, pixels = (rows // cell, cols // cell), image_processor.patch_size * cell
        tokens = grid[0] * grid[1]
        if s.task == "chart":
            labels.append(torch.full((tokens, len(ATTRIBUTES)), IGNORE))
            chart_labels.append(chart_token_labels(s.meta, s.images[0].size, grid, pixels))
        else:
            labels.append(token_labels(s.meta["objects"], s.images[0].size, grid, pixels))
            chart_labels.append(torch.full((tokens, len(CHART_LABELS)), IGNORE))
    return {"pixel_values": encoded["pixel_values"], "image_grid_thw": encoded["image_grid_thw"],
            "labels": torch.cat(labels), "chart_labels": torch.cat(chart_labels), "tokens": [len(t) for t in labels],
            "is_chart": torch.tensor([s.task == "chart" for s in samples]),
            "counts": torch.tensor([scene_counts(s.meta.get("objects", [])) for s in samples], dtype=torch.float)}


def scene_counts(objects: list[dict]) -> list[int]:
    """How many objects of each colour, then of each shape, the image holds (``COUNTED``)."""
    return ([sum(o["color"] == c for o in objects) for c in ATTRIBUTES["colour"]]
            + [sum(o["shape"] == c for o in objects) for c in ATTRIBUTES["shape"]])


def scene(index: int, seed: int, difficulty: float):
    """World sample ``index`` of the warm-up: its task and difficulty drawn from a generator of its own."""
    rng = random.Random(f"vision-warmup/{seed}/{index}")
    task = "chart" if rng.random() < CHART_SHARE else rng.choice(SCENE_TASKS)
    return generate(task, index, seed=seed, difficulty=round(rng.uniform(0, difficulty), 2))


class SceneHeads(nn.Module):
    """Linear read-outs of the ViT's token features: one classifier per attribute and per chart label on
    every token, and the image's object counts (per colour, per shape) regressed from the mean of its tokens."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        classes = {**ATTRIBUTES, **CHART_LABELS}
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, len(names) + 1) for name, names in classes.items()})
        self.counts = nn.Linear(hidden, len(COUNTED))

    def forward(self, features: torch.Tensor, tokens: list[int]) -> dict[str, torch.Tensor]:
        pooled = torch.stack([f.mean(0) for f in features.split(tokens)])
        return {**{name: head(features) for name, head in self.heads.items()}, "counts": self.counts(pooled)}


def scene_outputs(model: MiMoVL, heads: SceneHeads, batch: dict) -> dict[str, torch.Tensor]:
    """The heads' outputs for a ``scene_batch``: attribute and chart-label logits per token, counts per image."""
    device = next(heads.parameters()).device
    features = model.visual.token_features(batch["pixel_values"].to(device, model.visual.dtype), batch["image_grid_thw"])
    return heads(features.float(), batch["tokens"])


def scene_loss(model: MiMoVL, heads: SceneHeads, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy of the token labels (object attributes on scenes, entry and value on charts) plus the
    squared error of the scenes' counts; each label's accuracy on the tokens that show something and the
    counts' exact-match rate (rounded) beside it."""
    device = next(heads.parameters()).device
    out = scene_outputs(model, heads, batch)
    loss, metrics = out["counts"].new_zeros(()), {}
    for key, names in (("labels", ATTRIBUTES), ("chart_labels", CHART_LABELS)):
        labels = batch[key].to(device)
        if (labels[:, 0] == IGNORE).all():
            continue  # no image of this kind in the batch
        loss = loss + sum(F.cross_entropy(out[name], labels[:, i], ignore_index=IGNORE) for i, name in enumerate(names))
        shown = labels[:, 0] > 0
        if shown.any():
            metrics.update({name: float((out[name].argmax(-1) == labels[:, i])[shown].float().mean())
                            for i, name in enumerate(names)})
    scenes = ~batch["is_chart"].to(device)
    if scenes.any():
        target = batch["counts"].to(device)[scenes]
        loss = loss + F.mse_loss(out["counts"][scenes], target)
        metrics["counts"] = float((out["counts"][scenes].round() == target).float().mean())
    return loss, metrics


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
        with LoopRNG(stage.seed).active():  # the heads' start is the stage's, and the caller's RNG stays put
            self.heads = SceneHeads(model.config.vision.hidden_size).to(model.device)
        self.optimizer = torch.optim.AdamW([{"params": self.params}, {"params": self.heads.parameters()}],
                                           lr=stage.lr["vision"], weight_decay=stage.weight_decay, betas=(0.9, 0.95),
                                           fused=True)
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
        with self.stage.autocast(self.model.device):  # bf16: the matrix products; the losses stay float32
            loss, accuracy = scene_loss(self.model, self.heads, batch)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params + list(self.heads.parameters()), self.stage.grad_clip)
        stop_if_not_finite(f"stage {self.stage.name!r}", self.step + 1, loss.item(), float(grad_norm), self.run_dir)
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
    def evaluate(self, steps: int = 4) -> list[TaskScore]:
        """Held-out images (world indices from ``HELD_OUT``): each attribute's accuracy on object tokens, the
        counts' exact-match rate on scenes, each chart label's accuracy on tokens of a bar or row, each beside
        chance (the most common class or count: per label, per count)."""
        self.model.eval()
        truths, guesses = {}, {}

        def add(name: str, truth: torch.Tensor, guess: torch.Tensor) -> None:
            truths.setdefault(name, []).append(truth.cpu())
            guesses.setdefault(name, []).append(guess.cpu())

        for step in range(steps):
            batch = self.batch(step, held_out=True)
            out = scene_outputs(self.model, self.heads, batch)
            for kind, key, names in (("scene", "labels", ATTRIBUTES), ("chart", "chart_labels", CHART_LABELS)):
                shown = batch[key][:, 0] > 0
                for i, name in enumerate(names):
                    add(f"{kind} {name}", batch[key][shown, i], out[name].argmax(-1).cpu()[shown])
            scenes = ~batch["is_chart"]
            add("scene counts", batch["counts"][scenes], out["counts"].round().cpu()[scenes])
        rows = []
        for name in truths:
            truth, guess = torch.cat(truths[name]), torch.cat(guesses[name])
            if not truth.numel():
                continue
            score = float((guess == truth).float().mean())
            chance = (float(torch.mode(truth, 0).values.eq(truth).float().mean()) if truth.dim() > 1
                      else float(torch.bincount(truth.long()).max()) / len(truth))
            n = truth.numel()
            stderr = (score * (1 - score) / n) ** 0.5
            metric = "exact per count" if name == "scene counts" else "token accuracy"
            rows.append(TaskScore(name, metric, score, stderr, chance, n, decoding="argmax of the heads"))
        return rows

    def save_checkpoint(self) -> Path:
        return save_checkpoint(self.run_dir, self.step, self.model, {
            "step": self.step, "heads": self.heads.state_dict(), "optimizer": self.optimizer.state_dict()}, STATE_FILE)

    def resume(self) -> bool:
        state = load_checkpoint(self.run_dir, self.model, STATE_FILE)
        if state is None:
            return False
        self.heads.load_state_dict(state["heads"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        return True
