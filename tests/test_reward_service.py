"""Reward-as-a-Service: the HTTP service scores exactly as the in-process router; the client retries,
times out and then fails with a clear error; a GRPO run whose service dies saves a checkpoint, stops,
and once resumed continues exactly as an uninterrupted run."""

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

from mimolab import MiMoVL
from mimolab.data.pipeline import world_processor, world_tokenizer
from mimolab.data.world import generate
from mimolab.rl.grpo import GRPOConfig
from mimolab.rl.service import (
    RemoteRewards,
    RewardRouter,
    RewardServer,
    RewardServiceError,
    load_rewards,
    sample_from_wire,
    sample_to_wire,
)
from mimolab.rl.trainer import GRPOTrainer, reward_columns
from reward_helpers import varied_reward

HERE = Path(__file__).parent


def mixed_batch():
    """Every rewarded task, each with its reference reply, a wrong one and a malformed one; plus a caption
    (a task no verifiable reward scores)."""
    samples, completions = [], []
    for i, task in enumerate(("visual_math", "text_reasoning", "grounding", "gui", "counting", "video", "caption")):
        sample = generate(task, 50 + i, difficulty=0.3)
        for reply in (sample.reply, "The answer is 12345.", "[[[ {bbox_2d: nonsense"):
            samples.append(sample)
            completions.append(reply)
    return completions, samples


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with RewardServer(["verifiable", "reward_helpers:varied_reward"], pythonpath=str(HERE)) as running:
        yield running


def test_service_scores_exactly_as_the_in_process_router(server):
    completions, samples = mixed_batch()
    columns = reward_columns(samples)
    with RewardRouter(load_rewards(["verifiable", "reward_helpers:varied_reward"])) as router:
        local = router.score(completions, **columns)
    remote_client = RemoteRewards(server.url, batch_size=5)  # 21 completions in 5 requests
    remote = remote_client.score(completions, **columns)
    assert remote_client.attempts == 5
    assert remote.total == pytest.approx(local.total, abs=0)
    assert remote.components == local.components and remote.reasons == local.reasons
    # the references score 1 on their own task's reward, the malformed replies 0 with a reason, captions no verifiable reward
    by_task = {name: values for name, values in local.components.items()}
    assert by_task["accuracy"][0] == 1.0 and by_task["counting"][12] == 1.0 and by_task["temporal_iou"][15] == 1.0
    assert local.reasons["grounding"][8] == "no box"
    assert all(local.components[name][18] is None for name in ("accuracy", "grounding", "gui_action", "counting", "temporal_iou"))
    assert local.total[18] == local.components["varied_reward"][18]  # only the TRL-style reward applied


def test_samples_survive_the_wire():
    sample = generate("video", 3, difficulty=0.5)
    back = sample_from_wire(json.loads(json.dumps(sample_to_wire(sample))))
    assert back.task == sample.task and back.answer == sample.answer and back.prompt == sample.prompt
    import numpy as np
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(back.videos[0], sample.videos[0]))


def test_client_retries_then_succeeds_or_fails_clearly(server):
    calls = {"n": 0}
    real = httpx.Client(base_url=server.url)

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise httpx.ConnectError("connection refused", request=request)
        forwarded = real.post("/score", content=request.content, headers={"content-type": "application/json"})
        return httpx.Response(forwarded.status_code, content=forwarded.content)

    completions, samples = mixed_batch()
    client = RemoteRewards(server.url, retries=2, backoff=0.01, transport=httpx.MockTransport(flaky))
    assert client(completions, **reward_columns(samples)) == RemoteRewards(server.url)(completions, **reward_columns(samples))
    assert client.attempts == 3

    calls["n"] = 0
    failing = RemoteRewards(server.url, retries=1, backoff=0.01, transport=httpx.MockTransport(flaky))
    with pytest.raises(RewardServiceError, match="failed 2 time"):
        failing(completions, **reward_columns(samples))


def test_a_silent_service_times_out():
    """A server that accepts the connection and never answers: each request is abandoned at the time limit."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held = []
    threading.Thread(target=lambda: [held.append(listener.accept()) for _ in range(3)], daemon=True).start()
    client = RemoteRewards(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.3, retries=1, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(RewardServiceError, match="Timeout"):
        client(["1"], task=["counting"], answer=[{"count": 1}])
    assert time.monotonic() - start < 5
    listener.close()


def trainer(processor, run_dir, rewards):
    torch.manual_seed(0)
    cfg = GRPOConfig(tasks=(("counting", 1.0), ("grounding", 1.0)), prompts_per_step=2, group_size=3,
                     max_new_tokens=12, lr=5e-3, temperature=1.0)
    return GRPOTrainer(MiMoVL.from_preset("smoke"), processor, cfg, run_dir, rewards=rewards)


def test_grpo_survives_a_dead_reward_service(tmp_path):
    processor = world_processor(world_tokenizer(n_per_task=3))
    local = [varied_reward]
    straight = trainer(processor, tmp_path / "a", local).train(steps=3, progress=False)

    first = RewardServer(["reward_helpers:varied_reward"], pythonpath=str(HERE)).start()
    with trainer(processor, tmp_path / "b", RemoteRewards(first.url, retries=1, backoff=0.01)) as run:
        run.train(steps=1, progress=False)
        first.process.kill()  # the service dies mid-run
        first.process.wait()
        with pytest.raises(RewardServiceError, match="checkpoint saved"):
            run.train(steps=3, progress=False)
    assert (tmp_path / "b" / "checkpoints" / "step-000001").is_dir()

    with RewardServer(["reward_helpers:varied_reward"], pythonpath=str(HERE)) as second:
        with trainer(processor, tmp_path / "b", RemoteRewards(second.url)) as again:
            assert again.resume() and again.step_count == 1
            tail = again.train(steps=3, progress=False)
    for got, want in zip(tail, straight[1:]):
        for key in ("reward", "loss", "response_length"):
            assert got[key] == pytest.approx(want[key], abs=1e-5), key
