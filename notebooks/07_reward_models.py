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
#
# %% [markdown]
# # 07 · Bradley-Terry reward models
#
# Where no rule can score an answer, MiMo-VL uses reward models: a text-only one (initialised from
# MiMo-7B) and a multimodal one (from MiMo-VL-7B), trained on responses ranked by a stronger model
# (report, sec. 3). Here both start from the pipeline's stage-4 checkpoint, with a scalar head on
# the last token, and learn from pairs whose order the synthetic world knows: correct vs wrong,
# grounded vs hallucinated, concise vs rambling. The loss is `-log sigmoid(r(chosen) - r(rejected))`;
# what counts is pairwise accuracy on held-out pairs.

# %% tags=["parameters"]
profile = None  # "smoke" | "cpu" | "gpu"; None: MIMOLAB_PROFILE or "cpu"

# %%
import matplotlib.pyplot as plt
import pandas as pd

from mimolab import MiMoVL
from mimolab.pipeline import default_run_dir, get_processor, run_stage
from mimolab.rl.reward_model import (RewardModel, RewardModelReward, pairwise_accuracy, preference_pairs,
                                     train_reward_model)
from mimolab.settings import get_profile, load_run_file

profile = profile or get_profile("cpu")
pretrain_dir = default_run_dir(profile)
settings = load_run_file("rl", "reward_models", profile)
start = run_stage("stage4_long_context", profile, pretrain_dir)
processor = get_processor(pretrain_dir)
pd.Series(settings).to_frame("value")

# %% [markdown]
# ## 1. The pairs

# %%
kinds = {"text-only": tuple(settings["text_tasks"]), "multimodal": tuple(settings["multimodal_tasks"])}
train = {name: preference_pairs(tasks, settings["n_train"]) for name, tasks in kinds.items()}
held_out = {name: preference_pairs(tasks, settings["n_eval"], start=10**6) for name, tasks in kinds.items()}
pd.DataFrame([{"model": name, "task": p.sample.task, "kind": p.kind, "chosen": p.chosen[:60],
               "rejected": p.rejected[:60]} for name, pairs in train.items() for p in pairs[:3]])

# %% [markdown]
# ## 2. Train both, then score held-out pairs
# Chance is 0.5 (a coin flip per pair); an untrained head scores every response alike.

# %%
results, curves, models = [], {}, {}
for name in kinds:
    models[name] = RewardModel(MiMoVL.from_pretrained(start.final))
    curves[name] = train_reward_model(models[name], processor, train[name], steps=settings["steps"],
                                      batch=settings["batch"], lr=settings["lr"])
    results.append({"model": name, **pairwise_accuracy(models[name], processor, held_out[name]),
                    "held-out pairs": len(held_out[name])})
fig, ax = plt.subplots(figsize=(7, 3))
for name, losses in curves.items():
    ax.plot(pd.Series(losses).rolling(10, min_periods=1).mean(), label=name)
ax.axhline(0.693, color="grey", lw=0.5, label="log 2 (no preference)")
ax.set(xlabel="step", ylabel="Bradley-Terry loss", title="reward model training")
ax.legend(fontsize=8)
pd.DataFrame(results)

# %% [markdown]
# ## 3. A reward model as a reward function
# Same signature as the rule-based rewards: it plugs into `GRPOTrainer(rewards=[...])`. It needs the
# prompts, which the trainer passes as the `samples` column.

# %%
reward = RewardModelReward(models["multimodal"], processor, tasks=kinds["multimodal"])
pair = held_out["multimodal"][0]
pd.DataFrame({"response": [pair.chosen, pair.rejected], "kind": pair.kind,
              "reward": reward([pair.chosen, pair.rejected], samples=[pair.sample] * 2)})
