"""Rewards under careless or hostile input: a completion of any shape TRL may pass is scored or given 0
with a reason (never an exception that loses the batch), a reference of the wrong type is an error
naming its column, a box over the whole image earns no more than its IoU, and the answer formats the
evaluation reads (Qwen box text without a label, spans in words) are read by the reward too."""

import pytest
from PIL import Image

from mimolab.data.world import generate
from mimolab.eval.metrics import iou, score
from mimolab.rl.rewards import Reward, box_reward
from mimolab.rl.service import RewardRouter


@pytest.fixture(scope="module")
def reward():
    with Reward("every task", timeout=30.0) as made:
        yield made


def test_every_completion_shape_trl_may_pass_is_scored_or_zero_with_a_reason(reward):
    good = {"task": "counting", "answer": {"count": 3}}
    shapes = [
        "3",                                                                   # plain
        [{"role": "assistant", "content": "3"}],                                # conversational
        [{"role": "assistant", "content": ["There are", "3."]}],                # content as a list of strings
        [{"role": "assistant", "content": [{"type": "text", "text": "3"}]}],    # content parts
        [{"role": "assistant", "content": [{"type": "image"}, {"type": "text", "text": "3"}]}],  # an image part
        {"role": "assistant", "content": "3"},                                  # one message, not a list
        [{"role": "user", "content": "How many?"}, {"role": "assistant", "content": "3"}],  # with the prompt
        ["There are", "3"],                                                     # pieces of text
        [{"role": "assistant", "content": None}],                               # nothing said
        [],                                                                     # nothing at all
        None, 42, [{"role": "assistant", "content": 3}], [{"role": "assistant", "content": [{"text": 3}]}],
        [{"role": "assistant", "content": [None]}],
    ]
    n = len(shapes)
    got = reward(shapes, task=[good["task"]] * n, answer=[good["answer"]] * n)
    assert got == [1.0] * 8 + [0.0] * 7
    reasons = reward.last_reasons
    assert reasons[:8] == [None] * 8 and reasons[8:10] == ["no number"] * 2
    assert all(r.startswith(("a completion must be", "a message's content must be", "a content part must be"))
               for r in reasons[10:]), reasons[10:]


@pytest.mark.parametrize("task,answer,column,message", [
    ("counting", {"count": "3"}, "answer", r"column 'answer', row 1 \(task 'counting'\): 'count' must be a number, got '3'"),
    ("counting", {"number": 3}, "answer", r"'count' \(a number\) is missing"),
    ("counting", [3], "answer", r"column 'answer', row 1: expected an object, got list"),
    ("grounding", {"bbox_2d": [50, 50, 10, 10]}, "answer", r"bbox_2d \[50, 50, 10, 10\] is empty or inverted"),
    ("grounding", {"bbox_2d": [1, 2, 3]}, "answer", r"bbox_2d must be four numbers"),
    ("grounding", {"boxes": [{"bbox_2d": [0, 0, 5, "9"]}]}, "answer", r"in 'boxes': bbox_2d must be four numbers"),
    ("visual_math", {"number": "12"}, "answer", r"'number' must be a number, got '12'"),
    ("video", {"span": [6.0, 2.0]}, "answer", r"'span' must be \[start, end\] seconds with end >= start"),
    ("gui", {"action": "swipe", "bbox_2d": [0, 0, 5, 5]}, "answer", r"'action' must be 'click', 'type' or 'ground'"),
    ("chart", {"text": 7}, "answer", r"'text' must be a string, got 7"),
    ("grounding", {"bbox_2d": [0, 0, 5, 5]}, "image_size", r"column 'image_size', row 1: must be \[width, height\]"),
])
def test_a_reference_of_the_wrong_type_is_an_error_naming_the_column(reward, task, answer, column, message):
    good = generate(task, 0).answer if task != "gui" else {"action": "click", "bbox_2d": [0, 0, 9, 9]}
    columns = {"task": [task, task], "answer": [good, answer]}
    if column == "image_size":
        columns["image_size"] = [[100, 100], [100, -3]]
    with pytest.raises(ValueError, match=message):
        reward(["3", "3"], **columns)
    with RewardRouter([reward]) as router, pytest.raises(ValueError, match=message):  # the service's path
        router.score(["3", "3"], **columns)


REFERENCE = [40, 40, 60, 60]  # 20 x 20 in a 100 x 100 image: 4% of it
ORDER = {  # the order box_reward's docstring states, best first
    "exact": [40, 40, 60, 60],
    "overlapping": [45, 45, 65, 65],
    "near miss": [62, 40, 82, 60],  # the same size, 2 pixels to the right
    "far miss": [0, 0, 20, 20],  # the same size, in the corner
    "whole image": [0, 0, 100, 100],
}


def test_box_rewards_follow_the_stated_order_and_the_whole_image_earns_at_most_its_iou():
    got = {name: box_reward(box, REFERENCE, (100, 100)) for name, box in ORDER.items()}
    assert list(got.values()) == sorted(got.values(), reverse=True), got
    assert got["exact"] == 1.0 and len(set(got.values())) == len(got)
    assert got["whole image"] <= iou(ORDER["whole image"], REFERENCE) == pytest.approx(0.04)
    assert got["near miss"] > 0.4  # coming close still earns GIoU's graded credit
    # a box beyond the image is clipped to it: claiming more than everything is the whole image
    assert box_reward([-500, -500, 900, 900], REFERENCE, (100, 100)) == got["whole image"]
    assert box_reward([-30, -30, -10, -10], REFERENCE, (100, 100)) == 0.0  # nothing left inside the image
    # half the image around the reference: between the whole image and a tight box, not 0.5 for free
    assert got["whole image"] < box_reward([0, 0, 100, 50 + 10], REFERENCE, (100, 100)) < got["overlapping"]


def test_the_grounding_reward_uses_the_image_frame_and_refuses_an_inverted_box(reward):
    replies = [f"[{', '.join(str(v) for v in box)}]" for box in ORDER.values()]
    n = len(replies)
    columns = {"task": ["grounding"] * n, "answer": [{"bbox_2d": REFERENCE}] * n}
    by_size = reward(replies, **columns, image_size=[[100, 100]] * n)
    assert by_size == [pytest.approx(box_reward(box, REFERENCE, (100, 100))) for box in ORDER.values()]
    # the frame also comes from the world sample (GRPO's columns) or TRL's image column
    samples = [generate("grounding", 0)] * n
    samples = [type(s)(s.task, [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (100, 100))}]}],
                       s.answer) for s in samples]
    assert reward(replies, **columns, samples=samples) == by_size
    assert reward(replies, **columns, image=[Image.new("RGB", (100, 100))] * n) == by_size
    assert by_size[-1] < 0.05 < reward(replies[-1:], task=["grounding"], answer=[{"bbox_2d": REFERENCE}])[0]
    assert reward(["[60, 60, 40, 40]"], task=["grounding"], answer=[{"bbox_2d": REFERENCE}]) == [0.0]
    assert "inverted" in reward.last_reasons[0]


@pytest.mark.parametrize("task,answer,reference,reply", [
    ("grounding", {"bbox_2d": [10, 20, 50, 60]}, '[{"bbox_2d": [10, 20, 50, 60]}]', "<|box_start|>(10,20),(50,60)<|box_end|>"),
    ("grounding", {"bbox_2d": [10, 20, 50, 60]}, '[{"bbox_2d": [10, 20, 50, 60]}]', "It is at (10, 20), (50, 60)."),
    ("gui", {"action": "ground", "bbox_2d": [20, 30, 40, 50]}, "[20, 30, 40, 50]", "<|box_start|>(20,30),(40,50)<|box_end|>"),
    ("video", {"span": [2.0, 6.0]}, "[2.0, 6.0]", "The circle moves from 2.0 to 6.0 seconds."),
    ("video", {"span": [2.0, 6.0]}, "[2.0, 6.0]", "It happens between 00:02 and 00:06."),
    ("video", {"span": [2.0, 6.0]}, "[2.0, 6.0]", "From 2 s to 6 s."),
])
def test_box_text_without_a_label_and_spans_in_words_are_read_by_the_metric_and_the_reward(
        reward, task, answer, reference, reply):
    assert score(task, reply, answer, reference) == 1.0
    assert reward([reply], task=[task], answer=[answer], reference=[reference]) == [1.0]
    assert reward.last_reasons == [None]
