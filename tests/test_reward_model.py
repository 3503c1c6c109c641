"""Bradley-Terry reward models: pairs from the world, training that separates them on held-out
pairs, and the trained model used as a TRL-style reward."""

import pytest
import torch

from mimolab import MiMoVL
from mimolab.data.pipeline import world_processor, world_tokenizer
from mimolab.data.world.scene import COLORS
from mimolab.rl.reward_model import (
    MULTIMODAL_TASKS,
    TEXT_TASKS,
    RewardModel,
    RewardModelReward,
    pairwise_accuracy,
    preference_pairs,
    train_reward_model,
)


@pytest.fixture(scope="module")
def processor():
    return world_processor(world_tokenizer(n_per_task=3))


def test_pairs_differ_in_the_way_their_kind_says():
    pairs = preference_pairs(MULTIMODAL_TASKS + TEXT_TASKS, 60)
    assert {p.kind for p in pairs} == {"correct_vs_wrong", "grounded_vs_hallucinated", "concise_vs_rambling"}
    for p in pairs:
        assert p.chosen == p.sample.reply and p.rejected != p.chosen
        if p.kind == "grounded_vs_hallucinated":
            named = lambda text: {c for c in COLORS if f" {c} " in f" {text} "}  # noqa: E731
            assert named(p.rejected) - named(p.chosen)  # a colour the image does not hold
        if p.kind == "concise_vs_rambling":
            assert p.rejected.startswith(p.chosen) and len(p.rejected) > len(p.chosen)


def test_training_separates_held_out_pairs_and_serves_as_a_reward(processor, tmp_path):
    torch.manual_seed(0)
    model = RewardModel(MiMoVL.from_preset("smoke"))
    train, held_out = preference_pairs(TEXT_TASKS, 96), preference_pairs(TEXT_TASKS, 48, start=10**6)
    assert pairwise_accuracy(model, processor, held_out)["all"] == 0.0  # zero-initialised head: all ties
    losses = train_reward_model(model, processor, train, steps=25, batch=8, lr=3e-3)
    assert sum(losses[-5:]) / 5 < losses[0]
    accuracy = pairwise_accuracy(model, processor, held_out)
    assert accuracy["concise_vs_rambling"] >= 0.8
    reward = RewardModelReward(model, processor, tasks=TEXT_TASKS)
    pair = held_out[0]
    from mimolab.data.world import generate

    other = generate("counting", 0)
    values = reward([pair.chosen, pair.rejected, "3"], samples=[pair.sample, pair.sample, other])
    assert values[2] is None and all(0.0 < v < 1.0 for v in values[:2])
    with pytest.raises(ValueError, match="samples"):
        reward(["x"])

    # saved and loaded (as the reward service does, from a spec) it scores the same, over the wire too
    from mimolab.rl.reward_model import save_reward_model
    from mimolab.rl.service import RewardRouter, load_rewards, sample_from_wire, sample_to_wire

    path = save_reward_model(model, processor, tmp_path / "text_rm")
    (loaded,) = load_rewards([f"reward_model={path}:text,text_reasoning"])
    assert loaded.__name__ == "rm_text_rm" and loaded.tasks == TEXT_TASKS
    wired = [sample_from_wire(sample_to_wire(s)) for s in (pair.sample, pair.sample, other)]
    again = RewardRouter([loaded]).score([pair.chosen, pair.rejected, "3"], samples=wired, task=[s.task for s in wired])
    assert again.components["rm_text_rm"] == pytest.approx(values, abs=1e-6)
    with pytest.raises(FileNotFoundError, match="score_head"):
        load_rewards([f"reward_model={tmp_path}"])
