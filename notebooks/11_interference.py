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
# # 11 · Study 3: do short-answer and long-CoT tasks interfere in RL?
#
# MiMo-VL's report finds that mixing tasks whose good answers have very different lengths (a count
# against a long chain of thought) makes joint RL harder: improving both at once is hard.
#
# **Design** (`experiments/studies/interference.yaml`). Three arms from the same stage-4 checkpoint
# with the same prompts per step, group size and steps (so the same rollouts): RL on the
# short-answer tasks alone (counting and chart: a reply of 2 tokens), on a long-CoT task alone
# (visual math: a chain of thought of tens of tokens, whose length moves under RL, measured in the
# pilot), and on the mixture of all three. Per task, the training reward and response length are
# logged per step and the held-out score is measured along the way. Interference on a task = the
# mixed run's final held-out score minus that of the single arm that trained on it (Welch over
# seeds, 95% CI); the same for the long task's response length. In the mixture each task gets a
# share of the same rollouts, so interference here includes that dilution, as mixing does in MORL.
#
# **Rules for the verdicts** (`grpo_claims`): "mixing costs the task" agrees when the CI of
# mixed - single lies below 0 and disagrees when it lies above -0.05 (no cost larger than 0.05);
# "mixing shortens the long-CoT replies" agrees when the CI of the length difference lies below 0,
# disagrees above 0; otherwise "cannot tell".

# %% tags=["parameters"]
profile = None  # "smoke" | "cpu" | "gpu"; None: MIMOLAB_PROFILE or "cpu"
run_dir = None  # smoke runs write their results here; None: under the runs root
seeds = None  # a subset of the study's seeds (curves cached for a later call with all); None: all

# %%
import pandas as pd
from IPython.display import Image, display

from mimolab.pipeline.studies import load_study, results_dir
from mimolab.pipeline.study_grpo import run_grpo_study
from mimolab.pipeline.study_results import ci_cell, verdict
from mimolab.settings import get_profile

profile = profile or get_profile("cpu")
out = results_dir(profile, run_dir)  # experiments/results (smoke runs: their run directory)
spec = load_study("interference", profile)
pd.Series(vars(spec)).to_frame("setting")

# %% [markdown]
# ## 1. The runs, and the headroom they start from

# %%
result = run_grpo_study("interference", profile, out=out, seeds=seeds)
assert "table" in result, "a subset of seeds ran: run again without seeds for the results"
pd.DataFrame(result["headroom"]).round(3)  # start score, chance, each arm's final mean above chance

# %%
display(Image(str(out / "interference.png")))  # held-out score against rollouts
display(Image(str(out / "interference_training.png")))  # training reward and response length per task
pd.DataFrame(result["table"]).pivot(index="task", columns="arm", values="mean").round(3)

# %% [markdown]
# ## 2. Interference, measured
# Negative: the mixture did worse on that task than RL on its own group of tasks.

# %%
for row in result["interference"]:
    print(f"{row['task']:>14} {row['what']:>15}: mixed - {row['single']}: {verdict(row)}; 95% CI {ci_cell(row)}")
print(f"\nwritten: {out / 'interference.json'}, .md, .png")

# %% [markdown]
# ## 3. Against the report, claim by claim

# %%
pd.DataFrame(result["claims"]).round(3)
