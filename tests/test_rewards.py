"""Verifiable rewards: TRL's signature, the reference answer scores 1, malformed answers score 0 with a
reason, boxes in the resized image's pixels are rescaled, and a hanging verifier is cut off."""

import pytest
from PIL import Image

from mimolab.data.world import generate
from mimolab.rl.rewards import Reward, default_rewards, giou


@pytest.fixture(scope="module")
def rewards():
    made = {r.__name__: r for r in default_rewards(timeout=10.0)}
    yield made
    for r in made.values():
        r.close()


def columns(samples):
    return {"task": [s.task for s in samples], "answer": [s.answer for s in samples]}


def test_reference_replies_score_one_and_other_tasks_get_none(rewards):
    samples = [generate(t, 5) for t in ("visual_math", "text_reasoning", "grounding", "counting", "video", "caption")]
    single = [s for s in samples if s.task != "grounding" or "bbox_2d" in s.answer]
    conversational = [[{"role": "assistant", "content": s.reply}] for s in single]
    accuracy = rewards["accuracy"](conversational, **columns(single))
    assert accuracy[:2] == [1.0, 1.0] and accuracy[2:] == [None] * (len(single) - 2)
    for name, task in (("counting", "counting"), ("temporal_iou", "video")):
        got = rewards[name]([s.reply for s in single], **columns(single))
        assert [g for g, s in zip(got, single) if s.task == task] == [1.0]


def test_malformed_answers_score_zero_with_a_reason(rewards):
    sample = generate("counting", 3)
    got = rewards["counting"](["many", "", "<think>2"], task=["counting"] * 3, answer=[sample.answer] * 3)
    assert got == [0.0, 0.0, 0.0] and all(rewards["counting"].last_reasons)
    math = generate("visual_math", 3)
    assert rewards["accuracy"](["<think>\\boxed{3}</think>"], task=["visual_math"], answer=[math.answer]) == [0.0]
    assert rewards["accuracy"].last_reasons == ["nothing after </think>"]
    bad = rewards["grounding"](["[1, 2, 3]", 42], task=["grounding"] * 2, answer=[{"bbox_2d": [0, 0, 5, 5]}] * 2)
    assert bad == [0.0, 0.0] and rewards["grounding"].last_reasons[1].startswith("a completion must be")


def test_giou_maps_to_unit_interval_and_boxes_are_rescaled_from_the_resized_image(rewards):
    from mimolab.processing import image_processor

    assert giou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0 and giou([0, 0, 1, 1], [9, 9, 10, 10]) < -0.9
    processor = image_processor()
    image = Image.new("RGB", (500, 300))
    grid = processor(images=[image], return_tensors="pt")["image_grid_thw"][0]
    resized = (int(grid[2]) * 14, int(grid[1]) * 14)  # what the model saw: multiples of 28
    assert resized != (500, 300)
    reference = [100, 60, 200, 120]  # in the original 500 x 300 image
    sx, sy = resized[0] / 500, resized[1] / 300
    answer_in_resized = f'[{{"bbox_2d": [{100 * sx:.0f}, {60 * sy:.0f}, {200 * sx:.0f}, {120 * sy:.0f}]}}]'
    kwargs = dict(task=["grounding"], answer=[{"bbox_2d": reference}], image_size=[(500, 300)], resized_size=[resized])
    rescaled = rewards["grounding"]([answer_in_resized], **kwargs)[0]
    unscaled = rewards["grounding"]([answer_in_resized], task=["grounding"], answer=[{"bbox_2d": reference}])[0]
    assert rescaled > 0.98 and unscaled < rescaled


def test_gui_clicks_and_typing(rewards):
    for index in range(40):
        sample = generate("gui", index)
        if sample.answer["action"] in ("click", "type"):
            assert rewards["gui_action"]([sample.reply], **columns([sample])) == [1.0]
    click = {"action": "click", "bbox_2d": [10, 10, 20, 20]}
    assert rewards["gui_action"](["click(15, 15)", "click(25, 15)"], task=["gui"] * 2, answer=[click] * 2) == [1.0, 0.0]


def test_a_hanging_verifier_is_cut_off_and_the_next_call_still_works():
    reward = Reward("accuracy", ("text_reasoning",), timeout=2.0)
    hostile = "\\boxed{" + "9" * 20 + "^" + "9" * 20 + "^" + "9" * 20 + "}"  # sympy would compute for ages
    try:
        got = reward([hostile, "\\boxed{4}"], task=["text_reasoning"] * 2, answer=[{"number": 4}] * 2)
        assert got[1] == 1.0
        assert got[0] == 0.0
        assert reward.last_reasons[0] == "timeout after 2 s"
    finally:
        reward.close()


def test_format_reward_is_off_by_default():
    assert "format" not in {r.__name__ for r in default_rewards()}
    fmt = default_rewards(format_reward=True)[-1]
    try:
        assert fmt(["<think>a</think> 4", "<think>a 4", "4", "<think>a</think><think>b</think> 4"]) == [1.0, 0.0, 0.0, 0.0]
    finally:
        fmt.close()


def test_chart_reward_scores_values_and_labels_like_the_evaluation():
    from mimolab.eval.metrics import score

    samples = [generate("chart", i, difficulty=0.5) for i in range(12)]
    assert {"number" in s.answer for s in samples} == {True, False}  # both question kinds
    wrong = ["9999" if "number" in s.answer else "nothing" for s in samples]
    with next(r for r in default_rewards() if r.__name__ == "chart") as reward:
        for replies, expected in ((list(s.reply for s in samples), 1.0), (wrong, 0.0)):
            got = reward(replies, task=["chart"] * 12, answer=[s.answer for s in samples])
            assert got == [expected] * 12
            assert got == [score("chart", r, s.answer, s.reply) for r, s in zip(replies, samples)]
        assert reward(["<think>\nno"], task=["chart"], answer=[samples[0].answer]) == [0.0] and reward.last_reasons[0]


def test_ocr_reward_is_the_evaluation_score_for_reading_and_spotting():
    from mimolab.eval.metrics import score

    reward = next(r for r in default_rewards() if r.__name__ == "ocr")
    samples = [generate("ocr", i, difficulty=1.0) for i in range(16)]
    assert {s.reply.startswith("[") for s in samples} == {True, False}  # both question kinds
    columns = {"task": ["ocr"] * 16, "answer": [s.answer for s in samples], "reference": [s.reply for s in samples]}
    replies = [s.reply for s in samples]
    misread = [r.replace("a", "o").replace("1", "7") if not r.startswith("[") else r.replace('"text": "', '"text": "x')
               for r in replies]
    try:
        assert reward(replies, **columns) == [1.0] * 16
        got = reward(misread, **columns)
        assert got == [score("ocr", m, s.answer, s.reply) for m, s in zip(misread, samples)]
        assert any(0 < g < 1 for g in got) and all(g < 1 for g, m, r in zip(got, misread, replies) if m != r)
        read = [i for i, s in enumerate(samples) if not s.reply.startswith("[")]
        without_reference = reward([misread[i] for i in read], task=["ocr"] * len(read),
                                   answer=[samples[i].answer for i in read])  # reading needs only the text
        assert without_reference == [got[i] for i in read]
    finally:
        reward.close()


def test_interleaved_reward_is_the_evaluation_exact_match():
    from mimolab.eval.metrics import score

    reward = next(r for r in default_rewards() if r.__name__ == "interleaved")
    samples = [generate("interleaved", i, difficulty=0.0) for i in range(12)]
    flipped = ["Image 2." if s.reply == "Image 1." else "Image 1." if s.reply.startswith("Image") else "A square."
               if s.reply != "A square." else "A circle." for s in samples]
    columns = {"task": ["interleaved"] * 12, "answer": [s.answer for s in samples], "reference": [s.reply for s in samples]}
    try:
        assert reward([s.reply for s in samples], **columns) == [1.0] * 12
        assert reward(flipped, **columns) == [0.0] * 12 == [score("interleaved", f, s.answer, s.reply)
                                                           for f, s in zip(flipped, samples)]
        assert reward([samples[0].reply], task=["interleaved"], answer=[samples[0].answer]) == [0.0]
        assert "reference" in reward.last_reasons[0]
    finally:
        reward.close()
