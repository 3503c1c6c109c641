"""The small profiles' vision warm-up: its labels against the rendered pixels, its features in the
language model's token order, frozen parts, and a killed run that resumes with the same losses."""

import dataclasses

import numpy as np
import pytest
import torch

from mimolab import MiMoVL, MiMoVLConfig
from mimolab.data.world.scene import COLORS
from mimolab.model.summary import weight_changes
from mimolab.processing import image_processor
from mimolab.train.stage import cpu_has_bf16, load_stage
from mimolab.data.world.charts import BAR_COLOR, ROW, entry_boxes
from mimolab.train.vision_warmup import (ATTRIBUTES, CHART_LABELS, IGNORE, MIN_PIXELS, SCENE_TASKS, VisionWarmup, scene,
                                         scene_batch)


def test_labels_name_what_the_pixels_show():
    """Each token's label against the rendered image (processor-sized): a token labelled with a colour holds
    pixels of that colour; a background token holds at most a sliver of any object colour."""
    processor = image_processor()
    batch = scene_batch(processor, range(40), seed=0, difficulty=0.5)
    start, objects_seen = 0, 0
    for index, (_, rows, cols) in zip(range(40), batch["image_grid_thw"].tolist()):
        image = scene(index, seed=0, difficulty=0.5).images[0]
        pixels = np.asarray(image.resize((cols * 14, rows * 14))).astype(int)
        labels = batch["labels"][start:start + rows * cols // 4]
        start += len(labels)
        if scene(index, seed=0, difficulty=0.5).task == "chart":
            assert (labels == IGNORE).all()
            continue
        for token, (colour, _, _) in enumerate(labels.tolist()):
            r, c = divmod(token, cols // 2)
            cell = pixels[r * 28:(r + 1) * 28, c * 28:(c + 1) * 28].reshape(-1, 3)
            shares = {name: (np.abs(cell - np.array(rgb)).max(-1) < 8).sum() for name, rgb in COLORS.items()}
            if colour:
                assert shares[ATTRIBUTES["colour"][colour - 1]] >= MIN_PIXELS * 0.8, (index, token)
                objects_seen += 1
            else:
                assert max(shares.values()) < MIN_PIXELS, (index, token)
    assert start == len(batch["labels"]) and objects_seen > 40
    assert {scene(i, 0, 0.5).task for i in range(40)} == {*SCENE_TASKS, "chart"}


def test_chart_token_labels_name_the_bar_or_row_there():
    """A chart token labelled with an entry overlaps that entry's box by MIN_PIXELS or more and the label's
    value is the entry's value; an unlabelled token overlaps no box that much. The boxes hold every bar's
    pixels (bar charts) and every row's text (tables)."""
    processor = image_processor()
    batch = scene_batch(processor, range(80), seed=2, difficulty=1.0)
    start, forms = 0, set()
    for index, (_, rows, cols) in zip(range(80), batch["image_grid_thw"].tolist()):
        sample, n = scene(index, seed=2, difficulty=1.0), rows * cols // 4
        labels = batch["chart_labels"][start:start + n]
        start += n
        if sample.task != "chart":
            assert (labels == IGNORE).all()
            continue
        meta, forms = sample.meta, forms | {sample.meta["form"]}
        boxes = entry_boxes(meta["form"], meta["values"])
        pixels = np.asarray(sample.images[0]).astype(int)
        ink = (np.abs(pixels - np.array(BAR_COLOR)).max(-1) < 8) if meta["form"] == "bar_chart" else pixels.max(-1) < 40
        inside = np.zeros(ink.shape, dtype=bool)
        for x1, y1, x2, y2 in boxes:
            inside[y1:y2, x1:x2] = True
        ink[: 4 + ROW + 1] &= meta["form"] == "bar_chart"  # a table's header row is no entry
        assert ink.any() and not (ink & ~inside).any()
        for token, (entry, value) in enumerate(labels.tolist()):
            r, c = divmod(token, cols // 2)
            overlap = [max(0, min(x2, 28 * c + 28) - max(x1, 28 * c)) * max(0, min(y2, 28 * r + 28) - max(y1, 28 * r))
                       for x1, y1, x2, y2 in boxes]
            if entry:
                k = overlap.index(max(overlap))  # boxes never overlap: the most-covered entry is the label's
                name = meta["labels"][k]
                assert CHART_LABELS["entry"][entry - 1] == (f"bar {name}" if meta["form"] == "bar_chart" else f"row {name}")
                assert max(overlap) >= MIN_PIXELS and CHART_LABELS["value"][value - 1] == str(meta["values"][k])
            else:
                assert max(overlap) < MIN_PIXELS
    assert forms == {"bar_chart", "table"}


def test_token_features_follow_the_merged_tokens_order():
    """With the projector replaced by a 2x2 average, the model's own vision forward (parity-tested against
    transformers) must give exactly the warm-up's token features: same units, same order."""
    model = MiMoVL(MiMoVLConfig.from_name("smoke")).eval()
    batch = scene_batch(image_processor(), range(3), seed=1, difficulty=0.5)
    unit = model.config.vision.spatial_merge_size ** 2

    class Average(torch.nn.Module):
        def forward(self, x):
            return x.reshape(-1, unit, x.shape[-1]).mean(1)

    with torch.no_grad():
        features = model.visual.token_features(batch["pixel_values"], batch["image_grid_thw"])
        model.visual.merger = Average()
        torch.testing.assert_close(features, model.visual(batch["pixel_values"], batch["image_grid_thw"]))
    assert features.shape[0] == len(batch["labels"])


@pytest.fixture()
def warmup_stage():
    return load_stage("stage0_vision", "smoke", steps=4, checkpoint_every=2, images_per_step=4)


def test_only_the_vit_trains(tmp_path, warmup_stage):
    torch.manual_seed(0)
    model = MiMoVL(MiMoVLConfig.from_name("smoke"))
    before = MiMoVL(model.config)
    before.load_state_dict(model.state_dict())
    VisionWarmup(model, warmup_stage, image_processor(), tmp_path).train(progress=False)
    changed = {r["part"]: r["changed"] for r in weight_changes(before, model)}
    assert changed["vision"] > 0 and changed["projector"] == 0 and changed["llm"] == 0
    with pytest.raises(ValueError, match="ViT alone"):
        VisionWarmup(model, load_stage("stage1_projector", "smoke"), image_processor(), tmp_path)


@pytest.mark.parametrize("bf16", [False, True])
def test_a_killed_warmup_resumes_with_the_same_losses(tmp_path, warmup_stage, bf16):
    warmup_stage = dataclasses.replace(warmup_stage, bf16=bf16)

    def fresh():
        torch.manual_seed(0)
        return MiMoVL(MiMoVLConfig.from_name("smoke"))

    straight = VisionWarmup(fresh(), warmup_stage, image_processor(), tmp_path / "straight").train(progress=False)
    first = VisionWarmup(fresh(), warmup_stage, image_processor(), tmp_path / "crashed")
    first.train_step(), first.train_step()
    first.save_checkpoint()  # what the loop writes at step 2; the process then dies
    resumed = VisionWarmup(fresh(), warmup_stage, image_processor(), tmp_path / "crashed")
    assert resumed.resume() and resumed.step == 2
    history = resumed.train(progress=False)
    assert [r["step"] for r in history] == [3, 4]
    assert [r["loss"] for r in history] == [r["loss"] for r in straight[2:]]  # bit-identical


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bfloat16 matrix instructions: bf16 trains in fp32")
def test_bf16_warmup_matches_fp32_with_float32_weights(tmp_path, warmup_stage):
    """The warm-up under bf16 autocast: first losses within bfloat16's error of fp32's on the same images and
    weights (not equal: the ViT's products ran in bfloat16); the ViT, the heads and AdamW's state stay float32."""
    runs = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        warmup = VisionWarmup(MiMoVL(MiMoVLConfig.from_name("smoke")), dataclasses.replace(warmup_stage, bf16=bf16),
                              image_processor(), tmp_path / str(bf16))
        runs[bf16] = ([warmup.train_step()["loss"] for _ in range(2)], warmup)
    assert runs[True][0] != runs[False][0]
    assert runs[True][0] == pytest.approx(runs[False][0], rel=2e-3)
    warmup = runs[True][1]
    tensors = [*warmup.model.parameters(), *warmup.heads.parameters(),
               *(t for state in warmup.optimizer.state.values() for k, t in state.items() if k != "step")]
    assert all(t.dtype == torch.float32 for t in tensors)
