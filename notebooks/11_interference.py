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
# MiMo-VL's report finds that mixing tasks whose good answers have very different lengths (a box or
# a count against a long chain of thought) makes joint RL harder. Three arms from the same stage-4
# checkpoint with the same rollout budget: RL on the short-answer tasks alone (grounding, counting),
# on the long-CoT tasks alone (visual math, text reasoning), and on the mixture
# (`experiments/studies/interference.yaml`). Interference on a task = the mixed run's final score
# minus the score of the single-task run that trained on it.

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
spec = load_study("interference", profile)
pd.Series(vars(spec)).to_frame("setting")

# %% [markdown]
# ## 1. The runs

# %%
result = run_grpo_study("interference", profile, out=out)
display(Image(str(out / "interference.png")))  # held-out score against rollouts
display(Image(str(out / "interference_training.png")))  # training reward and response length per task
pd.DataFrame(result["table"]).pivot(index="task", columns="arm", values="mean").round(3)

# %% [markdown]
# ## 2. Interference, measured
# Negative: the mixture did worse on that task than RL on its own group of tasks.

# %%
for row in result["interference"]:
    print(f"{row['task']:>14}: mixed - {row['single']}: {verdict(row)}")
print(f"\nwritten: {out / 'interference.json'}, .md, .png")
