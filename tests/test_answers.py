"""One reading of a reply everywhere: the evaluation metric, the RL reward and the demo overlay find the
same number, box, click, typed text or span in the same reply (bare, in a sentence, after thinking,
with units, malformed), and where both give exact credit they give the same score."""

import json

import pytest

from mimolab.demo import Mark, find_marks
from mimolab.eval.answers import final_answer, parse_boxes, parse_click, parse_number, parse_span, parse_typed
from mimolab.eval.metrics import score
from mimolab.rl.rewards import Reward, _score_one, giou

THINK = "<think>\nA first guess: 9, click(0, 0), [0, 0, 5, 5], [0.0, 9.0].\n</think>\n\n"
COUNT = {"count": 3}
VALUE = {"number": -2}
LABEL = {"text": "B"}
BOX = [10, 20, 50, 60]
GROUND = {"bbox_2d": BOX, "label": "red circle", "boxes": [{"bbox_2d": BOX, "label": "red circle"}]}
CLICK = {"action": "click", "point": [30, 40], "target": "OK button", "bbox_2d": [20, 30, 40, 50]}
TYPE = {"action": "type", "text": "cats", "target": "search field", "bbox_2d": [0, 0, 80, 10]}
GUI_BOX = {"action": "ground", "target": "OK button", "bbox_2d": [20, 30, 40, 50],
           "boxes": [{"bbox_2d": [20, 30, 40, 50], "label": "OK button"}]}
SPAN = {"span": [1.0, 3.0], "label": "red circle"}
MATH = {"number": 12}
READ = {"text": "HELLO 42", "boxes": [{"bbox_2d": [2, 2, 40, 12], "text": "HELLO"}]}
SPOT = {"text": "HELLO", "boxes": [{"bbox_2d": [2, 2, 40, 12], "text": "HELLO"}]}
SPOT_REPLY = json.dumps(SPOT["boxes"])
SHAPE = {"text": "circle"}
UNCLOSED = "<think>\nstill thinking about "

# (task, answer, reference reply, reply, the evaluation's score)
CASES = [
    ("counting", COUNT, "3", "3", 1.0),
    ("counting", COUNT, "3", "There are 3.", 1.0),
    ("counting", COUNT, "3", THINK + "3", 1.0),
    ("counting", COUNT, "3", "3 objects", 1.0),
    ("counting", COUNT, "3", "3.0", 1.0),
    ("counting", COUNT, "3", "There are 3.0 red circles.", 1.0),
    ("counting", COUNT, "3", "4", 0.0),
    ("counting", COUNT, "3", "3.5", 0.0),
    ("counting", COUNT, "3", "many", 0.0),
    ("counting", COUNT, "3", "", 0.0),
    ("counting", COUNT, "3", UNCLOSED + "3", 0.0),
    ("counting", COUNT, "3", "3<|im_end|>", 1.0),
    ("chart", VALUE, "-2", "-2", 1.0),
    ("chart", VALUE, "-2", "Bar C minus bar A is -2.", 1.0),
    ("chart", VALUE, "-2", THINK + "-2", 1.0),
    ("chart", VALUE, "-2", "-2 units", 1.0),
    ("chart", VALUE, "-2", "-2.0", 1.0),
    ("chart", VALUE, "-2", "2", 0.0),
    ("chart", VALUE, "-2", "minus two", 0.0),
    ("chart", LABEL, "B", "B", 1.0),
    ("chart", LABEL, "B", THINK + "B.", 1.0),
    ("chart", LABEL, "B", "C", 0.0),
    ("grounding", GROUND, json.dumps(GROUND["boxes"]), json.dumps(GROUND["boxes"]), 1.0),
    ("grounding", GROUND, json.dumps(GROUND["boxes"]), "The red circle is at [10, 20, 50, 60].", 1.0),
    ("grounding", GROUND, json.dumps(GROUND["boxes"]), THINK + '[{"bbox_2d": [10, 20, 50, 60]}]', 1.0),
    ("grounding", GROUND, json.dumps(GROUND["boxes"]), "[10.0, 20.0, 50.0, 60.0]", 1.0),
    ("grounding", GROUND, json.dumps(GROUND["boxes"]), '[{"bbox_2d": [12, 22, 52, 62]}]', 1.0),
    ("grounding", GROUND, json.dumps(GROUND["boxes"]), '[{"bbox_2d": [60, 60, 90, 90]}]', 0.0),
    ("grounding", GROUND, json.dumps(GROUND["boxes"]), '[{"bbox_2d": [10, 20, 50]}]', 0.0),
    ("grounding", GROUND, json.dumps(GROUND["boxes"]), "", 0.0),
    ("grounding", GROUND, json.dumps(GROUND["boxes"]), UNCLOSED + "[10, 20, 50, 60]", 0.0),
    ("gui", CLICK, "click(30, 40)", "click(30, 40)", 1.0),
    ("gui", CLICK, "click(30, 40)", "I will click(30, 40) on the OK button.", 1.0),
    ("gui", CLICK, "click(30, 40)", THINK + "click(30, 40)", 1.0),
    ("gui", CLICK, "click(30, 40)", "click( 30.0 , 40.5 )", 1.0),
    ("gui", CLICK, "click(30, 40)", "click(45, 40)", 0.0),
    ("gui", CLICK, "click(30, 40)", "click(30, 40) then click(0, 0)", 1.0),
    ("gui", CLICK, "click(30, 40)", "click(30)", 0.0),
    ("gui", CLICK, "click(30, 40)", "click the OK button", 0.0),
    ("gui", CLICK, "click(30, 40)", UNCLOSED + "click(30, 40)", 0.0),
    ("gui", TYPE, 'type("cats")', 'type("cats")', 1.0),
    ("gui", TYPE, 'type("cats")', 'I will type("cats") into the field.', 1.0),
    ("gui", TYPE, 'type("cats")', THINK + 'type( "cats" )', 1.0),
    ("gui", TYPE, 'type("cats")', 'type("dogs")', 0.0),
    ("gui", TYPE, 'type("cats")', "type(cats)", 0.0),
    ("gui", GUI_BOX, json.dumps(GUI_BOX["boxes"]), json.dumps(GUI_BOX["boxes"]), 1.0),
    ("gui", GUI_BOX, json.dumps(GUI_BOX["boxes"]), "It is at [20, 30, 40, 50].", 1.0),
    ("gui", GUI_BOX, json.dumps(GUI_BOX["boxes"]), "somewhere at the top", 0.0),
    ("video", SPAN, "[1.0, 3.0]", "[1.0, 3.0]", 1.0),
    ("video", SPAN, "[1.0, 3.0]", "The red circle is visible during [1.0, 3.0].", 1.0),
    ("video", SPAN, "[1.0, 3.0]", THINK + "[1.0, 3.0]", 1.0),
    ("video", SPAN, "[1.0, 3.0]", "[1.0 s, 3.0 s]", 1.0),
    ("video", SPAN, "[1.0, 3.0]", "[1.0, 3.0] s", 1.0),
    ("video", SPAN, "[1.0, 3.0]", "[00:01, 00:03]", 1.0),
    ("video", SPAN, "[1.0, 3.0]", "[2.0, 3.0]", 0.5),
    ("video", SPAN, "[1.0, 3.0]", "[1.0]", 0.0),
    ("video", SPAN, "[1.0, 3.0]", "", 0.0),
    ("video", SPAN, "[1.0, 3.0]", UNCLOSED + "[1.0, 3.0]", 0.0),
    ("visual_math", MATH, "", "12", 1.0),
    ("visual_math", MATH, "", "The answer is \\boxed{12}.", 1.0),
    ("visual_math", MATH, "", "<think>\n5 + 7 = 12\n</think>\n\nThe answer is \\boxed{12}.", 1.0),
    ("visual_math", MATH, "", "\\boxed{12.0}", 1.0),
    ("visual_math", MATH, "", "<think>\\boxed{12}</think> \\boxed{13}", 0.0),
    ("visual_math", MATH, "", UNCLOSED + "\\boxed{12}", 0.0),
    ("visual_math", MATH, "", "<think>12</think>", 0.0),
    ("text_reasoning", MATH, "", "So she has 12 apples.", 1.0),
    ("text_reasoning", MATH, "", "\\boxed{", 0.0),
    ("ocr", READ, "HELLO 42", "HELLO 42", 1.0),
    ("ocr", READ, "HELLO 42", THINK + "HELLO 42", 1.0),
    ("ocr", READ, "HELLO 42", "", 0.0),
    ("ocr", READ, "HELLO 42", UNCLOSED + "HELLO 42", 0.0),
    ("ocr", SPOT, SPOT_REPLY, SPOT_REPLY, 1.0),
    ("ocr", SPOT, SPOT_REPLY, "The words are " + SPOT_REPLY + ".", 1.0),
    ("ocr", SPOT, SPOT_REPLY, THINK + SPOT_REPLY, 1.0),
    ("ocr", SPOT, SPOT_REPLY, SPOT_REPLY.replace("HELLO", "HELO"), 0.0),
    ("ocr", SPOT, SPOT_REPLY, '[{"bbox_2d": [2, 2, 40, 12], "text": ', 0.0),
    ("interleaved", SHAPE, "A circle.", "A circle.", 1.0),
    ("interleaved", SHAPE, "A circle.", THINK + "a circle", 1.0),
    ("interleaved", SHAPE, "A circle.", "A square.", 0.0),
    ("interleaved", SHAPE, "A circle.", UNCLOSED + "A circle.", 0.0),
]
IDS = [f"{task}-{i}" for i, (task, *_) in enumerate(CASES)]
EXACT = {"counting", "chart", "video", "visual_math", "text_reasoning", "ocr", "interleaved"}  # same score
NEVER_CLOSED = "<think> never closed: no final answer"


def _sample(answer: dict, reference: str) -> dict:
    return {"answer": answer, "reference": reference}


def _is_box_answer(task: str, answer: dict) -> bool:
    return task == "grounding" or task == "gui" and answer["action"] == "ground"


def _read(task: str, answer: dict, text: str):
    """(what the shared parser finds in ``text``, the reward's reason when it finds nothing), for the
    tasks whose reward names what it missed; None for the others."""
    if _is_box_answer(task, answer):
        return parse_boxes(text) or None, "no box"
    if task == "counting" or task == "chart" and "number" in answer:
        return parse_number(text), "no number"
    if task == "video":
        return parse_span(text), "no [start, end] span"
    if task == "gui":
        if answer["action"] == "click":
            return parse_click(text), "no click(x, y)"
        return parse_typed(text), 'no type("...")'
    return None


@pytest.mark.parametrize("task,answer,reference,reply,expected", CASES, ids=IDS)
def test_the_evaluation_and_the_reward_read_the_same_answer(task, answer, reference, reply, expected):
    metric = score(task, reply, answer, reference)
    reward, reason = _score_one(task, reply, _sample(answer, reference), None)
    assert metric == pytest.approx(expected)
    read = _read(task, answer, final_answer(reply))
    if read is not None:  # the reward found what the parser found, or says which thing it missed
        found, missing = read
        unclosed = reply.startswith("<think>") and "</think>" not in reply
        assert reason == (None if found is not None else NEVER_CLOSED if unclosed else missing)
        if found is None:
            assert metric == reward == 0.0
    if not _is_box_answer(task, answer):
        assert reward == pytest.approx(metric)  # every other task gives the evaluation's exact credit
    elif found is not None:  # a shaped GIoU, of the first box the evaluation read
        assert reward == pytest.approx((giou(found[0], answer["bbox_2d"]) + 1) / 2)
        assert (metric == reward == 1.0) == (found[0] == answer["bbox_2d"])


@pytest.mark.parametrize("task,answer,reference,reply,expected",
                         [c for c in CASES if c[0] in ("grounding", "gui")],
                         ids=[i for i, c in zip(IDS, CASES) if c[0] in ("grounding", "gui")])
def test_the_demo_draws_the_box_or_click_the_evaluation_reads(task, answer, reference, reply, expected):
    text = final_answer(reply)
    marks = find_marks(text)
    assert [m.xy for m in marks if m.kind == "box"] == [tuple(b) for b in parse_boxes(text)]
    click = parse_click(text)
    assert [m for m in marks if m.kind == "point"] == ([Mark("point", click, "click")] if click else [])


def test_the_parsers_on_their_own():
    assert parse_number("There are 3.") == 3.0 and parse_number("3.0 objects") == 3.0
    assert parse_number("bbox_2d") is None and parse_number("v1.2.3") is None and parse_number("-2 units") == -2.0
    assert parse_click("click( 12 , 34.5 ) then click(1, 1)") == (12.0, 34.5) and parse_click("click(12)") is None
    assert parse_typed('type("a b")') == "a b" and parse_typed("type(ab)") is None
    assert parse_span("[00:01.5, 01:00]") == (1.5, 60.0) and parse_span("[1 s, 2 s]") == (1.0, 2.0)
    assert final_answer("<think>a</think>b</think> c<|im_end|>") == "c" and final_answer("<think>3") == ""
    assert final_answer("pre-filled thinking</think> 3") == "3" and final_answer(" 3 ") == "3"


def test_the_reward_worker_scores_as_the_evaluation():
    """The real call path (a spawned worker process, TRL's columns) on every exact-credit case."""
    cases = [c for c in CASES if c[0] in EXACT or c[0] == "gui" and c[1]["action"] != "ground"]
    reward = Reward("every task", timeout=30.0)
    try:
        got = reward([[{"role": "assistant", "content": c[3]}] for c in cases], task=[c[0] for c in cases],
                     answer=[c[1] for c in cases], reference=[c[2] for c in cases])
    finally:
        reward.close()
    assert got == pytest.approx([score(task, reply, answer, reference) for task, answer, reference, reply, _ in cases])
    assert got == pytest.approx([c[4] for c in cases])
    assert reward.last_reasons[[c[3] for c in cases].index("many")] == "no number"
