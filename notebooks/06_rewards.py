# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Verifiable rewards
#
# MiMo-VL's RL stage scores each rollout with a rule where a rule can decide (report, sec. 3):
# math-verify on the final answer for reasoning, GIoU between boxes for grounding, point-in-box
# for GUI clicks, exact match for counting, IoU of time spans for temporal video grounding. No
# format reward. mimolab's rewards take TRL's signature, `reward(completions, **columns)`, and
# return one number in [0, 1] per completion, or None where the sample belongs to another task.
# This notebook calls each of them on real world samples and on broken answers, then puts them
# behind the router and the HTTP reward service that GRPO uses.

# %% tags=["parameters"]
profile = None  # rewards do not depend on the profile; kept for a uniform interface

# %%
import pandas as pd
from PIL import Image

from mimolab.data.world import generate
from mimolab.processing import image_processor
from mimolab.rl.rewards import default_rewards

rewards = {r.__name__: r for r in default_rewards(timeout=5.0)}
list(rewards)

# %% [markdown]
# ## 1. Each task's reference answer, a wrong one, and a malformed one
# `last_reasons` says why a completion scored 0 when it was not simply wrong.

# %%
def first(task, key=None):
    """The first world sample of ``task`` whose answer has ``key`` (a span question, a single box...)."""
    return next(s for s in (generate(task, i) for i in range(100)) if key is None or key in s.answer)


rows = []
for task, name, key in (("counting", "counting", None), ("visual_math", "accuracy", None),
                        ("video", "temporal_iou", "span"), ("gui", "gui_action", "point"),
                        ("grounding", "grounding", "bbox_2d")):
    sample = first(task, key)
    wrong = {"counting": "7", "visual_math": "<think>...</think> \\boxed{-1}", "video": "[00:09, 00:11]",
             "gui": "click(1, 1)", "grounding": '[{"bbox_2d": [0, 0, 10, 10]}]'}[task]
    completions = [sample.reply, wrong, "<think>I am not sure"]
    values = rewards[name](completions, task=[task] * 3, answer=[sample.answer] * 3)
    for completion, value, reason in zip(completions, values, rewards[name].last_reasons):
        rows.append({"task": task, "reward": name, "completion": completion[:60], "value": value, "reason": reason})
pd.DataFrame(rows)

# %% [markdown]
# ## 2. Boxes are answered in the resized image's pixels
# Qwen2.5-VL sees the image after the processor resizes it to multiples of 28 pixels and answers
# in those pixels. A sample that carries `image_size` and `resized_size` is rescaled before GIoU.

# %%
image = Image.new("RGB", (500, 300))
grid = image_processor()(images=[image], return_tensors="pt")["image_grid_thw"][0]
resized = (int(grid[2]) * 14, int(grid[1]) * 14)
reference = [100, 60, 200, 120]
sx, sy = resized[0] / 500, resized[1] / 300
answer = f'[{{"bbox_2d": [{100 * sx:.0f}, {60 * sy:.0f}, {200 * sx:.0f}, {120 * sy:.0f}]}}]'
with_sizes = rewards["grounding"]([answer], task=["grounding"], answer=[{"bbox_2d": reference}],
                                  image_size=[(500, 300)], resized_size=[resized])[0]
without = rewards["grounding"]([answer], task=["grounding"], answer=[{"bbox_2d": reference}])[0]
pd.Series({"resized to": resized, "answer": answer, "reward, rescaled": with_sizes, "reward, not rescaled": without})

# %% [markdown]
# ## 3. A verifier that would hang is cut off
# math-verify hands answers to sympy, which can compute for a very long time on a power tower.
# Each reward runs in a worker process with a time limit; past it the worker is killed and the
# completion scores 0 with the reason.

# %%
slow = default_rewards(timeout=2.0)[0]
values = slow(["\\boxed{9^{9^{9^{9}}}}", "\\boxed{4}"], task=["text_reasoning"] * 2, answer=[{"number": 4}] * 2)
print(values, slow.last_reasons)
slow.close()

# %% [markdown]
# ## 4. The router and the reward service
# `RewardRouter` sends each completion to the rewards of its task and returns the total in [0, 1]
# with a breakdown per component (None: that reward does not apply). The same router runs as a
# local HTTP service (FastAPI under uvicorn, bound to 127.0.0.1); `RemoteRewards` is its client,
# with batching, a time limit per request and retries. Both must give the same numbers.

# %%
from mimolab.rl.service import RemoteRewards, RewardRouter, RewardServer
from mimolab.rl.trainer import reward_columns

samples, completions = [], []
for task in ("counting", "grounding", "video", "visual_math", "caption"):
    sample = generate(task, 7)
    samples += [sample, sample]
    completions += [sample.reply, "no idea"]
router = RewardRouter(list(rewards.values()))
local = router.score(completions, **reward_columns(samples))
with RewardServer(["verifiable"]) as server:
    client = RemoteRewards(server.url, batch_size=4)
    remote = client.score(completions, **reward_columns(samples))
router.close()
print(f"service at {server.url}: {client.attempts} requests, same totals as in-process: {remote.total == local.total}")
pd.DataFrame({"task": [s.task for s in samples], "completion": [c[:40] for c in completions], "total": local.total,
              **local.components})
