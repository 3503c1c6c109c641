"""The synthetic world: deterministic, and what each sample says is what its pixels show."""

import inspect
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from math_verify import parse, verify

import mimolab.data.world as world
from mimolab.data.samples import make_samples
from mimolab.data.schema import load_media, read_jsonl, write_jsonl
from mimolab.data.world import TASKS, generate
from mimolab.data.world.charts import BAR_COLOR
from mimolab.data.world.scene import BACKGROUND, COLORS

N = 12  # samples per task per check


def media(sample):
    items = [c for m in sample.messages if isinstance(m["content"], list) for c in m["content"]]
    return [c.get("image") if c["type"] == "image" else c.get("video") for c in items if c["type"] in ("image", "video")]


def png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def flat(sample) -> list[bytes]:
    out = []
    for m in media(sample):
        out += [png(f) for f in (m if isinstance(m, list) else [m])]
    return out


@pytest.mark.parametrize("task", list(TASKS))
def test_same_seed_same_sample_and_indices_differ(task):
    a, b = generate(task, 5, seed=1), generate(task, 5, seed=1)
    assert flat(a) == flat(b) and a.answer == b.answer and a.meta == b.meta
    assert a.messages[-1] == b.messages[-1]
    others = [generate(task, i, seed=1) for i in range(6)]
    assert len({(str(s.messages[-1]), tuple(flat(s))) for s in others}) > 1


def pixels(image):
    return np.asarray(image, dtype=np.int16)


def color_mask(image, color):
    return (np.abs(pixels(image) - np.array(COLORS[color])).sum(-1) < 30)


def test_grounding_boxes_cover_their_object():
    for i in range(N):
        s = generate("grounding", i, difficulty=0.9)
        image = media(s)[0]
        x1, y1, x2, y2 = s.answer["bbox_2d"]
        assert 0 <= x1 < x2 <= image.width and 0 <= y1 < y2 <= image.height
        target = s.meta["objects"][0]
        mask = color_mask(image, target["color"])
        inside = mask[y1:y2, x1:x2].mean()
        assert inside > (0.95 if target["shape"] == "square" else 0.4), (i, inside)  # triangle ~0.5, circle ~0.79
        same_colour_elsewhere = [o for o in s.meta["objects"][1:] if o["color"] == target["color"]]
        if not same_colour_elsewhere:
            outside = mask.copy()
            outside[y1:y2, x1:x2] = False
            assert not outside.any()
        # the referring expression names attributes no other object shares all of
        words = s.answer["label"].split()
        assert not any(all(w in (o["size"], o["color"], o["shape"]) for w in words) for o in s.meta["objects"][1:])


def blobs(mask) -> int:
    """Connected components (4-neighbour) of a boolean mask."""
    seen, count = np.zeros_like(mask), 0
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        count += 1
        stack = [(y, x)]
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
    return count


def test_counts_match_the_blobs_drawn():
    for i in range(N):
        s = generate("counting", i, difficulty=0.8)
        image = media(s)[0]
        same_colour = [o for o in s.meta["objects"] if o["color"] == s.meta["color"]]
        assert blobs(color_mask(image, s.meta["color"])) == len(same_colour)
        assert s.answer["count"] == sum(o["shape"] == s.meta["shape"] for o in same_colour)
        assert s.messages[-1]["content"][0]["text"] == str(s.answer["count"])


STEP = re.compile(r"(-?\d+) ([+\-*]) (-?\d+) = (-?\d+)")


@pytest.mark.parametrize("task", ["visual_math", "text_reasoning"])
def test_every_chain_of_thought_step_is_right_and_math_verify_accepts_it(task):
    for i in range(N):
        s = generate(task, i, difficulty=0.7)
        reply = s.messages[-1]["content"][0]["text"]
        steps = STEP.findall(reply)
        assert len(steps) >= 2
        for a, op, b, c in steps:
            assert {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op] == int(c)
        assert int(steps[-1][3]) == s.answer["number"] == int(s.meta["short_answer"])
        assert verify(parse(f"${s.answer['number']}$"), parse(reply))
        assert reply.startswith("<think>\n") and "</think>\n\n" in reply


def test_visual_math_counts_are_in_the_picture():
    for i in range(N):
        s = generate("visual_math", i)
        if "counts" in s.meta:
            image = media(s)[0]
            for color, n in s.meta["counts"].items():
                assert blobs(color_mask(image, color)) == n


def test_video_spans_match_the_frames_that_show_the_object():
    for i in range(N):
        s = generate("video", i, difficulty=i / N)
        frames = media(s)[0]
        color = s.meta["mover"]["color"]
        shown = [t for t, f in enumerate(frames) if color_mask(f, color).sum() > 200]
        assert shown == s.meta["visible_frames"]
        assert s.answer["span"] == [shown[0] / 2, shown[-1] / 2]
        assert len(frames) % 2 == 0  # whole temporal patches


def test_gui_click_points_fall_inside_the_named_element():
    for i in range(N):
        s = generate("gui", i, difficulty=1.0)
        x1, y1, x2, y2 = s.meta["elements"][s.answer["target"]]
        if s.answer["action"] == "click":
            x, y = s.answer["point"]
            assert x1 <= x <= x2 and y1 <= y <= y2
            assert s.messages[-1]["content"][0]["text"] == f"click({x}, {y})"
        else:
            assert s.messages[-1]["content"][0]["text"] == f'type("{s.answer["text"]}")'


def test_ocr_text_is_drawn_inside_its_box():
    for i in range(N):
        s = generate("ocr", i, difficulty=0.0)  # no blur or noise: every dark pixel is text
        dark = pixels(media(s)[0]).sum(-1) < 3 * 128
        x1, y1, x2, y2 = s.meta["box"]
        assert dark.any() and not dark[:y1].any() and not dark[y2:].any() and not dark[:, :x1].any() and not dark[:, x2:].any()


def test_images_are_multiples_of_28_pixels_and_backgrounds_plain():
    for task in TASKS:
        for m in media(generate(task, 0)):
            for image in (m if isinstance(m, list) else [m]):
                assert image.width % 28 == 0 and image.height % 28 == 0, task
    assert tuple(pixels(media(generate("caption", 0))[0])[0, 0]) == BACKGROUND


def test_jsonl_round_trip(tmp_path):
    originals = [generate(t, 1) for t in ("grounding", "video", "interleaved", "text")]
    path = write_jsonl(originals, tmp_path, "mix")
    records = list(read_jsonl(path))
    assert [Path(r["messages"][0]["content"][0].get("image") or "").name for r in records[:1]] == ["mix-000000.png"]
    for original, record in zip(originals, records):
        assert record["task"] == original.task and record["answer"] == original.answer and record["meta"] == original.meta
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
        if s.meta["form"] == "bar_chart":
            bars = (np.abs(pixels(media(s)[0]) - np.array(BAR_COLOR)).sum(-1) < 30)
            heights = [h for h in bars.sum(0) if h]
            assert sorted(set(heights)) == sorted(14 * v for v in s.meta["values"])
        if s.answer.get("text"):
            assert s.answer["text"] == s.meta["labels"][s.meta["values"].index(max(s.meta["values"]))]
        s = generate("interleaved", i, difficulty=1.0)
        for image, obj in zip(media(s), s.meta["objects"]):
            assert color_mask(image, obj["color"]).sum() > 100


def test_records_survive_json_and_no_global_random_state():
    for task in TASKS:
        s = generate(task, 3, difficulty=0.7)
        assert json.loads(json.dumps(s.meta)) == s.meta and json.loads(json.dumps(s.answer)) == s.answer, task
    for module in (world.captions, world.charts, world.grounding, world.gui, world.interleaved, world.ocr,
                   world.reasoning, world.video, world.scene):
        source = inspect.getsource(module)
        assert not re.search(r"\brandom\.(random|randint|choice|sample|seed|uniform|shuffle)\(", source), module
        assert "np.random.seed" not in source and len(source.splitlines()) < 300


def test_make_samples_writes_every_task_small(tmp_path):
    out = make_samples(tmp_path / "samples", n_per_task=2)
    assert {p.stem for p in out.glob("*.jsonl")} == set(TASKS)
    assert sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) < 2_000_000
    readme = (out / "README.md").read_text()
    assert all(f"## {task}" in readme for task in TASKS) and "![grounding](images/grounding-000000.png)" in readme


def test_unknown_task_and_bad_difficulty():
    with pytest.raises(KeyError, match="unknown task"):
        generate("nope", 0)
    with pytest.raises(ValueError, match="difficulty"):
        generate("caption", 0, difficulty=2.0)
