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
# # 10 · Study 2: on-policy against vanilla GRPO
#
# MiMo-VL trains RL fully on-policy: every rollout batch gets exactly one gradient update, so the
# policy that sampled is the policy that learns and the importance ratio is 1 (report, sec. 3 and its
# finding on on-policy RL). Vanilla GRPO reuses each batch for several clipped updates. Here both
# start from the same stage-4 checkpoint with the same rollouts per step and the same steps
# (`experiments/studies/grpo_modes.yaml`), over several seeds, and the held-out scores are measured
# as training goes. Conclusions below are printed from the measured numbers, with Welch's test.

# %% tags=["parameters"]
profile = None  # "smoke" | "cpu" | "gpu"; None: MIMOLAB_PROFILE or "cpu"
run_dir = None  # smoke runs write their results here; None: under the runs root

# %%
import pandas as pd
from IPython.display import Image, display

from mimolab.pipeline.studies import load_study, results_dir
from mimolab.pipeline.study_grpo import run_grpo_study
from mimolab.pipeline.study_results import verdict
from mimolab.settings import get_profile

profile = profile or get_profile("cpu")
out = results_dir(profile, run_dir)  # experiments/results (smoke runs: their run directory)
spec = load_study("grpo_modes", profile)
pd.Series(vars(spec)).to_frame("setting")

# %% [markdown]
# ## 1. The runs
# Every arm and seed runs GRPO from the pipeline's stage-4 checkpoint (the pipeline runs first if
# it has not), logging to W&B in the group `study-grpo_modes-<profile>`.

# %%
result = run_grpo_study("grpo_modes", profile, out=out)
display(Image(str(out / "grpo_modes.png")))  # held-out score against rollouts
display(Image(str(out / "grpo_modes_training.png")))  # training reward and response length per task
pd.DataFrame(result["table"]).pivot(index="task", columns="arm", values=["mean", "sd"]).round(3)

# %% [markdown]
# ## 2. What the runs say
# Each line compares vanilla with on-policy on one task's final held-out score across seeds.

# %%
for test in result["tests"]:
    print(f"{test['task']:>14}: {test['arm']} vs {test['baseline']}: {verdict(test)}")
print(f"\nwritten: {out / 'grpo_modes.json'}, .md, .png")
