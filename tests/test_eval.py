"""Per-task scores and the held-out harness: references score 1, malformed replies score 0 without
raising, partial credit where the metric gives it, chance measured as the best blind answer's score."""

import math

import pytest
import torch

from mimolab.data.world import TASKS, generate
from mimolab.eval import HELD_OUT, TaskScore, evaluate, paired_change, score, scores_table
from mimolab.eval.metrics import box_f1, objects, parse_span, span_iou


@pytest.mark.parametrize("task", list(TASKS))
def test_the_reference_reply_scores_one_and_garbage_zero(task):
    for index in range(HELD_OUT, HELD_OUT + 15):
        sample = generate(task, index)
        assert score(task, sample.reply, sample.answer, sample.reply) == 1.0, (task, sample.reply)
        for garbage in ("", "<|im_end|>", "[[[", '[{"bbox_2d": null}]', "click(", "\\boxed{", "many"):
            value = score(task, garbage, sample.answer, sample.reply)
            assert 0.0 <= value <= 1.0
            if task not in ("text", "ocr"):  # character similarity gives "" a 0 but "[[[" a sliver
                assert value < 1.0


def test_partial_credit_and_units():
    assert box_f1([[0, 0, 10, 10], [50, 50, 60, 60]], [[1, 1, 10, 10]]) == pytest.approx(2 / 3)
    assert box_f1([[0, 0, 10, 10]], [[20, 20, 30, 30]]) == 0.0
    assert parse_span("[00:01, 00:03]") == (1.0, 3.0) and parse_span("from [1.5, 2.5] s") == (1.5, 2.5)
    assert span_iou((0, 2), (1, 3)) == pytest.approx(1 / 3)
    assert objects("two small red circles and a large blue square") == {"small red circle": 2, "large blue square": 1}
    counting = generate("counting", HELD_OUT)
    n = counting.answer["count"]
    assert score("counting", f"There are {n}.", counting.answer, counting.reply) == 1.0
    assert score("counting", str(n + 1), counting.answer, counting.reply) == 0.0
    math_sample = generate("visual_math", HELD_OUT)
    number = math_sample.answer["number"]
    assert score("visual_math", f"<think>...</think> so \\boxed{{{number}}}", math_sample.answer, "") == 1.0
    assert score("visual_math", f"<think>\\boxed{{{number}}}</think> \\boxed{{{number + 1}}}", math_sample.answer, "") == 0.0


def test_gui_click_must_land_in_the_target():
    for index in range(HELD_OUT, HELD_OUT + 40):
        sample = generate("gui", index)
        if sample.answer["action"] == "click":
            x1, y1, x2, y2 = sample.answer["bbox_2d"]
            assert score("gui", f"click({x1}, {y1})", sample.answer, sample.reply) == 1.0
            assert score("gui", f"click({x2 + 5}, {y2 + 5})", sample.answer, sample.reply) == 0.0
            return
    pytest.fail("no click sample found")


def test_harness_scores_a_perfect_and_a_blind_model(monkeypatch):
    import mimolab.eval.harness as harness

    monkeypatch.setattr(harness, "generate_replies", lambda model, processor, samples, batch_size=16, thinking=True: [s.reply for s in samples])
    perfect = evaluate(None, None, ["counting", "grounding"], n=20, progress=False)
    assert [r.score for r in perfect] == [1.0, 1.0] and all(r.chance < 0.6 for r in perfect)
    assert all(r.z > 3 or math.isinf(r.z) for r in perfect)
    # a blind model that always gives the most common count: exactly at chance, not above it
    samples = [generate("counting", HELD_OUT + i) for i in range(20)]
    counts = [s.answer["count"] for s in samples]
    mode = max(set(counts), key=counts.count)
    monkeypatch.setattr(harness, "generate_replies",
                        lambda model, processor, samples, batch_size=16, thinking=True: [str(mode)] * len(samples))
    blind = evaluate(None, None, ["counting"], n=20, progress=False)
    assert blind[0].score == pytest.approx(counts.count(mode) / 20) == pytest.approx(blind[0].chance)
    assert blind[0].z == 0.0
    # chance_levels (no model) gives the chance evaluate measures on the same samples, here the mode's share
    assert harness.chance_levels(["counting"], 20)["counting"] == pytest.approx(blind[0].chance)
    assert "| counting |" in scores_table(blind)
    with pytest.raises(KeyError, match="unknown tasks"):
        evaluate(None, None, ["juggling"], n=4)


def test_harness_runs_a_real_model_end_to_end():
    from mimolab import MiMoVL
    from mimolab.data.pipeline import world_processor, world_tokenizer

    from mimolab.eval.harness import generate_replies

    torch.manual_seed(0)
    model = MiMoVL.from_preset("smoke")
    processor = world_processor(world_tokenizer(n_per_task=3))
    rows = evaluate(model, processor, ["counting", "video"], n=3, progress=False)
    assert [r.task for r in rows] == ["counting", "video"] and all(0 <= r.score <= 1 for r in rows)
    # batching with left padding must not change any reply: a batch of 4 equals one at a time
    samples = [generate(t, HELD_OUT + i) for t in ("counting", "grounding") for i in range(2)]
    batched = generate_replies(model, processor, samples, batch_size=4, max_new_tokens=20)
    assert batched == generate_replies(model, processor, samples, 1, max_new_tokens=20)


def test_paired_change_is_the_mean_difference_on_the_same_samples():
    before = TaskScore("counting", "exact", 0.5, 0.0, 0.0, 4, [1.0, 0.0, 1.0, 0.0])
    after = TaskScore("counting", "exact", 0.75, 0.0, 0.0, 4, [1.0, 1.0, 1.0, 0.0])
    change = paired_change(before, after)
    # differences 0, 1, 0, 0: mean 0.25, sample sd 0.5, s.e. 0.25, z 1
    assert change.change == pytest.approx(0.25) and change.stderr == pytest.approx(0.25) and change.z == pytest.approx(1.0)
    assert change.as_dict()["z"] == 1.0 and not change.significant
    with pytest.raises(ValueError, match="same samples"):
        paired_change(before, TaskScore("counting", "exact", 1.0, 0.0, 0.0, 1, [1.0]))


def test_scores_read_back_as_they_were_written(tmp_path):
    """One serialisation from the harness to the report: save_scores then load_scores is the identity,
    and a file written before a field existed still loads (the field takes its default)."""
    import json

    from mimolab.eval.results import load_scores, save_scores

    rows = [TaskScore("counting", "exact", 0.75, 0.1, 0.5, 4, [1.0, 1.0, 1.0, 0.0], "no_think", "greedy"),
            TaskScore("text_reasoning", "math", 0.25, 0.2, 0.1, 4, [0.25, 0.5, 0.0, 0.25], "think", "T0.6 p0.95 avg@4")]
    save_scores(rows, tmp_path / "eval.json")
    assert load_scores(tmp_path / "eval.json") == rows
    old = [{k: v for k, v in rows[0].as_dict().items() if k not in ("decoding", "mode")}]
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert load_scores(tmp_path / "old.json")[0].decoding == "greedy"


def test_text_tasks_are_scored_as_the_mean_of_sampled_replies(monkeypatch):
    """MiMo-VL's evaluation: greedy for image tasks; text-only tasks sampled at T 0.6, top-p 0.95, avg@k."""
    import mimolab.eval.harness as harness

    calls = []

    def replies(model, processor, samples, batch_size=16, thinking=True, sampling=None, seed=0):
        calls.append((samples[0].task, sampling, seed))
        return [s.reply if seed % 2 == 0 else "no answer" for s in samples]  # right on every other sample seed

    monkeypatch.setattr(harness, "generate_replies", replies)
    text, counting = evaluate(None, None, ["text_reasoning", "counting"], n=6, progress=False, text_samples=4)
    assert text.per_sample == [0.5] * 6 and text.decoding == "T0.6 p0.95 avg@4"
    assert [c[2] for c in calls if c[0] == "text_reasoning"] == [0, 1, 2, 3]
    assert all(c[1] == {"temperature": 0.6, "top_p": 0.95} for c in calls if c[0] == "text_reasoning")
    assert counting.score == 1.0 and counting.decoding == "greedy" and ("counting", None, 0) in calls
    greedy = evaluate(None, None, ["text_reasoning"], n=6, progress=False, text_samples=0)[0]
    assert greedy.score == 1.0 and greedy.decoding == "greedy"
    with pytest.raises(ValueError, match="decoded"):
        paired_change(greedy, text)
