"""The image demo without a browser: marks parsed from every answer format, drawn at the image's scale,
and the widget's callbacks driven as a user would (load, pick, ask), with the model writing the box."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo_helpers import BOX, QUESTION, REPLY, box_checkpoint
from mimolab.demo import CheckpointError, ImageDemo, Mark, draw_marks, find_marks, latest_checkpoint, load_checkpoint

RED = (230, 25, 75)  # the first mark colour, #e6194b


def test_marks_in_every_answer_format():
    assert find_marks('[{"bbox_2d": [1, 2, 30, 40], "label": "cat"}, {"point_2d": [5, 6]}]') == [
        Mark("box", (1, 2, 30, 40), "cat"), Mark("point", (5, 6), "")]
    assert find_marks("<|object_ref_start|>the dog<|object_ref_end|><|box_start|>(10,20),(30,40)<|box_end|>") == [
        Mark("box", (10, 20, 30, 40), "the dog")]
    assert find_marks("I will click(12, 34.5) now") == [Mark("point", (12, 34.5), "click")]
    assert find_marks('[{"bbox_2d": [1, 2]}] and [{"bbox_2d": oops') == []  # malformed: nothing, no error


def test_boxes_are_drawn_at_the_image_scale():
    image = Image.new("RGB", (400, 200), "white")
    drawn = np.asarray(draw_marks(image, [Mark("box", (50, 25, 100, 50))], view_size=(200, 100)))
    # the model saw the image at half size: its box (50, 25)-(100, 50) is (100, 50)-(200, 100) here
    assert tuple(drawn[75, 100]) == RED and tuple(drawn[50, 150]) == RED
    assert tuple(drawn[75, 50]) == (255, 255, 255) and tuple(drawn[75, 150]) == (255, 255, 255)


def test_bad_checkpoint_directories_get_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="config.json"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("{ not json")
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="could not be loaded"):
        load_checkpoint(tmp_path)
    demo = ImageDemo(checkpoint=tmp_path)
    assert not demo.load() and "could not be loaded" in demo.status.value


def test_the_demo_answers_and_draws_the_box(tmp_path, monkeypatch):
    image = Image.open(sorted(Path("data_samples/images").glob("grounding-*.png"))[0]).convert("RGB")
    image = image.resize((224, 224))
    path = box_checkpoint(tmp_path / "runs" / "cpu" / "demo" / "final", image)
    monkeypatch.setenv("MIMOLAB_RUNS", str(tmp_path / "runs"))
    assert latest_checkpoint() == path

    demo = ImageDemo()  # the newest checkpoint under MIMOLAB_RUNS by default
    assert demo.checkpoint.value == str(path)
    demo.set_image(image)
    demo.question.value = QUESTION
    reply = demo.on_ask()  # loads the checkpoint first, then streams
    assert demo.loading.value == 1.0 and demo.model is not None
    assert reply.strip() == REPLY and "red circle" in demo.answer.value
    overlay = np.asarray(Image.open(__import__("io").BytesIO(demo.overlay.value)).convert("RGB"))
    x1, y1, x2, y2 = BOX  # the processor keeps 224 x 224, so the model's pixels are the image's
    assert tuple(overlay[(y1 + y2) // 2, x1]) == RED and tuple(overlay[y2 - 1, (x1 + x2) // 2]) == RED
    assert demo.status.value == "1 mark(s) drawn"
