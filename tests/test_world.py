"""The synthetic world: deterministic, and what each sample says is what its pixels show."""

import inspect
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from math_verify import parse, verify

from mimolab.data import world
from mimolab.data.samples import make_samples
from mimolab.data.schema import load_media, read_jsonl, write_jsonl
from mimolab.data.world import TASKS, generate
from mimolab.data.world.charts import BAR_COLOR
from mimolab.data.world.scene import BACKGROUND, COLORS, RAMP, canvas
from mimolab.data.world.video import format_span
from mimolab.eval.answers import parse_span

N = 12  # samples per task per check


def png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def flat(sample) -> list[bytes]:
    return [png(im) for im in sample.images] + [png(f) for frames in sample.videos for f in frames]


@pytest.mark.parametrize("task", list(TASKS))
def test_same_seed_same_sample_other_seeds_and_indices_differ(task):
    a, b = generate(task, 5, seed=1), generate(task, 5, seed=1)
    assert flat(a) == flat(b) and a.answer == b.answer and a.meta == b.meta and a.reply == b.reply
    assert a.prompt == b.prompt
    assert len({key(generate(task, i, seed=1)) for i in range(6)}) > 1
    assert len({key(generate(task, 5, seed=seed)) for seed in range(6)}) > 1


def key(sample) -> tuple:
    return sample.prompt, sample.reply, tuple(flat(sample))


def pixels(image):
    return np.asarray(image, dtype=np.int16)


def color_mask(image, color):
    return np.abs(pixels(image) - np.array(COLORS[color])).sum(-1) < 30


def components(mask) -> tuple[np.ndarray, int]:
    """Connected components (4-neighbour) of a boolean mask: (labels 1..n, 0 outside; n)."""
    labels, count = np.zeros(mask.shape, dtype=np.int32), 0
    for y, x in zip(*np.nonzero(mask)):
        if labels[y, x]:
            continue
        count += 1
        stack = [(y, x)]
        labels[y, x] = count
        while stack:
            cy, cx = stack.pop()
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = count
                    stack.append((ny, nx))
    return labels, count


def assert_box_covers_its_object(image, box, color, shape):
    """The colour fills most of the box, and the blob(s) it forms there lie wholly inside it."""
    x1, y1, x2, y2 = box
    assert 0 <= x1 < x2 <= image.width and 0 <= y1 < y2 <= image.height
    mask = color_mask(image, color)
    inside = mask[y1:y2, x1:x2].mean()
    assert inside > (0.95 if shape == "square" else 0.4), inside  # triangle ~0.5, circle ~0.79
    labels, _ = components(mask)
    touched = np.isin(labels, np.unique(labels[y1:y2, x1:x2][labels[y1:y2, x1:x2] > 0]))
    outside = touched.copy()
    outside[y1:y2, x1:x2] = False
    assert touched.any() and not outside.any()


def test_grounding_boxes_cover_their_objects_and_expressions_single_them_out():
    labels_seen, kinds = set(), set()
    for i in range(2 * N):
        s = generate("grounding", i, difficulty=0.9)
        image, objects = s.images[0], s.meta["objects"]
        targets = [objects[t] for t in s.meta["targets"]]
        assert [b["bbox_2d"] for b in s.answer["boxes"]] == [t["box"] for t in targets]
        assert json.loads(s.reply) == s.answer["boxes"]
        for target in targets:
            assert_box_covers_its_object(image, target["box"], target["color"], target["shape"])
        others = [o for k, o in enumerate(objects) if k not in s.meta["targets"]]
        words = s.answer["boxes"][0]["label"].split()
        # the expression fits every target and no other object
        assert all(all(w in (t["size"], t["color"], t["shape"]) for w in words) for t in targets)
        assert not any(all(w in (o["size"], o["color"], o["shape"]) for w in words) for o in others)
        if s.meta["kind"] == "single":
            assert s.answer["bbox_2d"] == targets[0]["box"] and len(targets) == 1
        else:
            assert len(targets) >= 2
        labels_seen.add(len(words))
        kinds.add(s.meta["kind"])
    assert kinds == {"single", "multiple"} and 3 in labels_seen  # 'small red circle' does occur


def test_counts_match_the_blobs_drawn():
    for i in range(N):
        s = generate("counting", i, difficulty=0.8)
        same_colour = [o for o in s.meta["objects"] if o["color"] == s.meta["color"]]
        assert components(color_mask(s.images[0], s.meta["color"]))[1] == len(same_colour)
        assert s.answer["count"] == sum(o["shape"] == s.meta["shape"] for o in same_colour)
        assert s.reply == str(s.answer["count"])


STEP = re.compile(r"(-?\d+) ([+\-*]) (-?\d+) = (-?\d+)")


@pytest.mark.parametrize("task", ["visual_math", "text_reasoning"])
def test_every_chain_of_thought_step_is_right_and_math_verify_accepts_it(task):
    problems = set()
    for i in range(2 * N):
        s = generate(task, i, difficulty=0.7)
        steps = STEP.findall(s.reply)
        assert len(steps) >= 2
        for a, op, b, c in steps:
            assert {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op] == int(c)
        assert int(steps[-1][3]) == s.answer["number"] == int(s.meta["short_answer"])
        assert verify(parse(f"${s.answer['number']}$"), parse(s.reply))
        assert verify(parse(f"${s.answer['number']}$"), parse(s.meta["short_reply"]))
        assert s.reply.startswith("<think>\n") and s.reply.endswith("</think>\n\n" + s.meta["short_reply"])
        problems.add(s.meta["problem"])
    assert len(problems) >= 3


def test_visual_math_reads_what_the_picture_shows():
    for i in range(2 * N):
        s = generate("visual_math", i)
        if "counts" in s.meta:
            for color, n in s.meta["counts"].items():
                assert components(color_mask(s.images[0], color))[1] == n
        if "values" in s.meta and "asked" in s.meta:  # a table: the asked rows' values sum into the answer
            rows = dict(zip(s.meta["labels"], s.meta["values"]))
            assert f"{sum(rows[r] for r in s.meta['asked'])} *" in s.reply


def test_video_spans_match_the_frames_that_show_each_object():
    two_movers = 0
    for i in range(2 * N):
        s = generate("video", i, difficulty=i / (2 * N))
        frames = s.videos[0]
        assert len(frames) % 2 == 0 and 4 <= len(frames) <= 12  # whole temporal patches
        for mover in s.meta["movers"]:
            shown = [t for t, f in enumerate(frames) if color_mask(f, mover["color"]).sum() > 200]
            assert shown == list(range(mover["frames"][0], mover["frames"][1] + 1))
            assert mover["span"] == [shown[0] / 2, (shown[-1] + 1) / 2]
            for t in shown:
                assert_box_covers_its_object(frames[t], mover["boxes"][str(t)], mover["color"], mover["shape"])
        if s.meta["kind"] == "caption":
            assert [e["span"] for e in s.answer["events"]] == [m["span"] for m in s.meta["movers"]]
        else:
            asked = next(m for m in s.meta["movers"] if m["label"] == s.answer["label"])
            assert parse_span(s.reply) == tuple(s.answer["span"]) and s.answer["span"] == asked["span"]
        two_movers += len(s.meta["movers"]) == 2
    assert two_movers > 0


def test_span_formats_round_trip():
    for span in ([0.0, 1.5], [2.0, 6.0], [61.5, 125.0]):
        assert parse_span(format_span(span)) == tuple(span) == parse_span(format_span(span, "clock"))
    assert format_span([1.0, 2.5], "clock") == "[00:01, 00:02.5]" and format_span([61.0, 62.0]) == "[61.0, 62.0]"
    assert parse_span("no span here") is None


def test_gui_actions_and_boxes_point_at_the_named_element():
    kinds, overlays = set(), set()
    for i in range(2 * N):
        s = generate("gui", i, difficulty=1.0)
        box = s.meta["elements"][s.answer["target"]]
        assert s.answer["bbox_2d"] == box
        x1, y1, x2, y2 = box
        assert 0 <= x1 < x2 <= s.images[0].width and 0 <= y1 < y2 <= s.images[0].height
        if s.answer["action"] == "click":
            x, y = s.answer["point"]
            assert x1 <= x < x2 and y1 <= y < y2
            assert s.reply == f"click({x}, {y})"
        elif s.answer["action"] == "type":
            assert s.reply == f'type("{s.answer["text"]}")' and s.answer["target"] == "search field"
        else:
            assert json.loads(s.reply) == s.answer["boxes"] == [{"bbox_2d": box, "label": s.answer["target"]}]
        region = pixels(s.images[0])[y1:y2, x1:x2]
        assert (np.abs(region - region[region.shape[0] // 2, 2]).sum(-1) > 60).any()  # text or edges drawn there
        kinds.add(s.answer["action"])
        overlays.add(s.meta["overlay"])
    assert kinds == {"click", "type", "ground"} and overlays == {"none", "dialog", "menu"}


def test_ocr_text_is_drawn_inside_its_word_boxes():
    for i in range(N):
        s = generate("ocr", i, difficulty=0.0)  # no blur or noise: every dark pixel is text
        dark = np.abs(pixels(s.images[0]).astype(int) - BACKGROUND).sum(-1) > 150  # ink, not background
        covered = np.zeros_like(dark)
        for word in s.answer["boxes"]:
            x1, y1, x2, y2 = word["bbox_2d"]
            assert dark[y1:y2, x1:x2].any()
            covered[y1:y2, x1:x2] = True
        assert dark.any() and not (dark & ~covered).any()
        assert " ".join(w["text"] for w in s.answer["boxes"]) == s.answer["text"] == s.reply
    for i in range(N):
        s = generate("ocr", i, difficulty=1.0)
        assert s.reply == (json.dumps(s.answer["boxes"]) if s.meta["kind"] == "spot" else s.answer["text"])


def test_images_are_multiples_of_28_pixels_and_backgrounds_ramps():
    for task in TASKS:
        for difficulty in (0.0, 1.0):
            sample = generate(task, 0, difficulty=difficulty)
            for image in sample.images + [f for frames in sample.videos for f in frames]:
                assert image.width % 28 == 0 and image.height % 28 == 0, task
    # the background ramp: its centre is the processor's mean colour, red grows to the right, blue downwards
    empty = pixels(canvas(112, 56)).astype(int)
    assert np.abs(empty[27:29, 55:57] - BACKGROUND).max() <= 1
    assert (np.diff(empty[..., 0], axis=1) >= 0).all() and (np.diff(empty[..., 2], axis=0) >= 0).all()
    assert empty[0, -1, 0] - empty[0, 0, 0] == RAMP and empty[-1, 0, 2] - empty[0, 0, 2] == RAMP
    assert (empty[..., 1] == BACKGROUND[1]).all()
    image = generate("caption", 0).images[0]  # a generated scene is drawn on that canvas
    assert (pixels(image)[0, 0] == pixels(canvas(*image.size))[0, 0]).all()


def test_jsonl_round_trip(tmp_path):
    originals = [generate(t, 1) for t in ("grounding", "video", "interleaved", "text")]
    path = write_jsonl(originals, tmp_path)
    assert path.name == "grounding.jsonl"  # named after the first sample's task by default
    records = list(read_jsonl(path))
    assert Path(records[0]["messages"][0]["content"][0]["image"]) == tmp_path / "images" / "grounding-000000.png"
    for original, record in zip(originals, records):
        assert (record["task"], record["answer"], record["meta"]) == (original.task, original.answer, original.meta)
        loaded = load_media(record)
        got = [c for m in loaded["messages"] if isinstance(m["content"], list) for c in m["content"]]
        want = [c for m in original.messages if isinstance(m["content"], list) for c in m["content"]]
        assert [m["role"] for m in loaded["messages"]] == [m["role"] for m in original.messages]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            if w["type"] == "text":
                assert g == w
            elif w["type"] == "image":
                assert np.array_equal(np.asarray(g["image"]), np.asarray(w["image"]))
            else:
                assert [np.asarray(f).tolist() for f in g["video"]] == [np.asarray(f).tolist() for f in w["video"]]


def test_bar_heights_and_interleaved_images_show_what_the_text_says():
    for i in range(N):
        s = generate("chart", i, difficulty=1.0)
        values, labels = s.meta["values"], s.meta["labels"]
        if s.meta["form"] == "bar_chart":
            bars = np.abs(pixels(s.images[0]) - np.array(BAR_COLOR)).sum(-1) < 30
            heights = [h for h in bars.sum(0) if h]
            assert sorted(set(heights)) == sorted(14 * v for v in values)
        if s.meta["kind"] in ("max", "min"):
            assert s.answer["text"] == labels[values.index((max if s.meta["kind"] == "max" else min)(values))]
        s = generate("interleaved", i, difficulty=1.0)
        for image, obj in zip(s.images, s.meta["objects"]):
            assert color_mask(image, obj["color"]).sum() > 100


def test_records_survive_json_and_no_global_random_state():
    for task in TASKS:
        s = generate(task, 3, difficulty=0.7)
        assert json.loads(json.dumps(s.meta)) == s.meta and json.loads(json.dumps(s.answer)) == s.answer, task
    for module in (world.captions, world.charts, world.grounding, world.gui, world.interleaved, world.ocr,
                   world.reasoning, world.video, world.scene):
        source = inspect.getsource(module)
        assert not re.search(r"\brandom\.(random|randint|choice|choices|sample|seed|uniform|shuffle)\(", source), module
        assert "np.random.seed" not in source and len(source.splitlines()) < 400


def test_make_samples_writes_every_task_small(tmp_path):
    out = make_samples(tmp_path / "samples", n_per_task=3)
    assert {p.stem for p in out.glob("*.jsonl")} == set(TASKS)
    assert sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) < 2_000_000
    readme = (out / "README.md").read_text()
    assert all(f"## {task}" in readme for task in TASKS) and "![grounding](images/grounding-000000.png)" in readme
    for link in re.findall(r"!\[\w+\]\(([^)]+)\)", readme):
        assert (out / link).is_file(), link


def test_unknown_task_and_bad_difficulty():
    with pytest.raises(KeyError, match="unknown task"):
        generate("nope", 0)
    with pytest.raises(ValueError, match="difficulty"):
        generate("caption", 0, difficulty=2.0)
    with pytest.raises(KeyError, match="unknown tasks"):
        generate("caption", 0, difficulty={"captions": 0.2, "default": 0.0})
    with pytest.raises(KeyError, match="no 'default'"):
        generate("caption", 0, difficulty={"counting": 0.2})


def test_difficulty_per_task_draws_each_task_at_its_own_knob():
    per_task = {"default": 0.0, "counting": 0.6}
    for task, own in (("counting", 0.6), ("grounding", 0.0)):
        for i in range(5):
            sample = generate(task, i, difficulty=per_task)
            assert sample.meta["difficulty"] == own
            same = generate(task, i, difficulty=own)
            assert (sample.answer, sample.meta, sample.prompt) == (same.answer, same.meta, same.prompt)
            assert sample.images[0].tobytes() == same.images[0].tobytes()
    # the knob changes what is drawn: harder counting has more objects
    assert sum(len(generate("counting", i, difficulty=per_task).meta["objects"]) for i in range(20)) > \
        sum(len(generate("counting", i, difficulty=0.0).meta["objects"]) for i in range(20))


def test_warm_ups_at_the_easy_end_and_nothing_changes_above_it():
    import random

    from mimolab.data.world.ocr import WORDS
    from mimolab.data.world.scene import EASY_BELOW, SIZES, easy

    for d in (EASY_BELOW, 0.3, 1.0):  # harder settings draw nothing extra: their samples are what they were
        rng = random.Random(1)
        state = rng.getstate()
        assert not easy(rng, d) and rng.getstate() == state
    assert all(easy(random.Random(i), 0.0) for i in range(20))
    for i in range(N):
        s = generate("text_reasoning", i, difficulty=0.0)
        (a, op, b, c), = STEP.findall(s.reply)  # one step, single digits
        assert int(a) < 10 and int(b) < 10 and {"+": int(a) + int(b), "-": int(a) - int(b)}[op] == int(c) == s.answer["number"]
        assert verify(parse(f"${s.answer['number']}$"), parse(s.reply))
        v = generate("visual_math", i, difficulty=0.0)
        assert v.meta["problem"] == "count_sum_problem"
        for color, n in v.meta["counts"].items():
            assert components(color_mask(v.images[0], color))[1] == n
        assert sum(v.meta["counts"].values()) == v.answer["number"]
        g = generate("grounding", i, difficulty=0.0)
        x1, y1, x2, y2 = g.answer["bbox_2d"]
        quadrant = (x1 // 56, y1 // 56)
        assert ((x2 - 1) // 56, (y2 - 1) // 56) == quadrant and g.images[0].size == (112, 112)
        assert SIZES["large"][0] <= x2 - x1 <= SIZES["large"][1]
        o = generate("ocr", i, difficulty=0.0)
        assert o.reply in WORDS and o.meta["font_size"] == 28 and o.meta["kind"] == "read"
        chart, harder = generate("chart", i, difficulty=0.0), generate("chart", i, difficulty=EASY_BELOW)
        pick = max if chart.meta["kind"] == "max_value" else min
        assert chart.meta["kind"] in ("max_value", "min_value") and chart.answer["number"] == pick(chart.meta["values"])
        assert harder.meta["kind"] in ("read", "max", "min")
        assert np.array_equal(pixels(chart.images[0]), pixels(harder.images[0]))  # the warm-up is drawn after the image
