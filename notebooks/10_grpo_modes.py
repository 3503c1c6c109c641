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
# policy that sampled is the policy that learns and the importance ratio is 1. The report (sec. 3,
# its on-policy finding) says vanilla GRPO, which reuses each batch for several clipped updates,
# gains faster early but plateaus, while on-policy keeps improving over many more samples.
#
# **Design** (`experiments/studies/grpo_modes.yaml`). Both arms start from the same checkpoint, the
# pipeline's stage 4, chosen for headroom: on every trained task its held-out score lies between
# 0.2 and 0.7 and well above chance (the table in section 1). They train on the same tasks,
# grounding and the text-only `text_reasoning`, with the same prompts per step, group size
# and steps, so the same number of rollouts; the arms differ in one setting, `updates_per_batch`
# (1 or 4). The held-out score is measured at the start and at 8 evenly spaced points
# against rollouts seen: greedy for the image tasks, `text_reasoning` sampled at T 0.6 and scored
# avg@4 as the report scores AIME. Entropy, KL to the start (k3, measured with `kl_coef` 0) and the
# clip fraction are logged per arm. The study's learning rate and prompts per step are its own
# (the pipeline's lr moves scores by a few hundredths in 240 steps: no curve shape would show in
# this budget); the pilot behind them is in the yaml file. A first run also trained chart: its held-out score
# fell under both arms (vanilla ended 0.04 above chance), a headroom failure, so chart left the
# study (the yaml file gives that run's numbers).
#
# **Rules for the verdicts** (95% CI over seeds, `grpo_claims`): "on-policy ends higher" agrees when
# the CI of vanilla - on-policy (final score) lies below 0, disagrees when it lies above 0;
# "vanilla gains faster early" agrees when the CI of vanilla's gain to the first measured point
# minus on-policy's lies above 0, disagrees below 0; "vanilla flattens" agrees when the CI of its
# gain over the second half of the run lies below 0.05, disagrees when it lies above 0 (still
# rising); "on-policy still rising" agrees when the CI of its second-half gain lies above 0,
# disagrees when it lies below 0.05. Anything else (or no spread across seeds): "cannot tell".

# %% tags=["parameters"]
profile = None  # "smoke" | "cpu" | "gpu"; None: MIMOLAB_PROFILE or "cpu"
run_dir = None  # smoke runs write their results here; None: under the runs root
seeds = None  # a subset of the study's seeds (curves cached for a later call with all); None: all

# %%
import pandas as pd
from IPython.display import Image, display

from mimolab.pipeline.studies import load_study, results_dir
from mimolab.pipeline.study_grpo import run_grpo_study
from mimolab.pipeline.study_results import ci_cell, mde_cell, verdict
from mimolab.settings import get_profile

profile = profile or get_profile("cpu")
out = results_dir(profile, run_dir)  # experiments/results (smoke runs: their run directory)
spec = load_study("grpo_modes", profile)
pd.Series(vars(spec)).to_frame("setting")

# %% [markdown]
# ## 1. The runs, and the headroom they start from
# Every arm and seed runs GRPO from the start checkpoint (the pipeline runs first if it has not),
# logging to W&B in the group `study-grpo_modes-<profile>`. Each arm x seed curve is cached, so
# `mimolab study grpo_modes --seeds 0 1` and `--seeds 2 3` can run side by side and a last call
# without `--seeds` only aggregates.

# %%
result = run_grpo_study("grpo_modes", profile, out=out, seeds=seeds)
assert "table" in result, "a subset of seeds ran: run again without seeds for the results"
pd.DataFrame(result["headroom"]).round(3)  # start score, chance, each arm's final mean above chance

# %%
display(Image(str(out / "grpo_modes.png")))  # held-out score against rollouts
display(Image(str(out / "grpo_modes_training.png")))  # reward, length, entropy, KL to the start, clip fraction
pd.DataFrame(result["table"]).pivot(index="task", columns="arm", values=["mean", "sd"]).round(3)

# %% [markdown]
# ## 2. What the runs say
# Each line compares vanilla with on-policy on one task's final held-out score across seeds, with
# the 95% CI of the difference and the smallest difference the seeds' spread could detect (MDE).

# %%
for test in result["tests"]:
    print(f"{test['task']:>14}: {test['arm']} vs {test['baseline']}: {verdict(test)}; 95% CI {ci_cell(test)}, MDE {mde_cell(test)}")
print(f"\nwritten: {out / 'grpo_modes.json'}, .md, .png")

# %% [markdown]
# ## 3. Against the report, claim by claim
# Computed from the measured numbers by the rules above; "cannot tell" says the CI crosses the line.

# %%
pd.DataFrame(result["claims"]).round(3)
