# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
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

# %%
import pandas as pd
from IPython.display import Image, display

from mimolab.profiles import get_profile
from mimolab.studies import load_study, results_dir, run_grpo_study, verdict

profile = profile or get_profile("cpu")
out = results_dir(profile)  # experiments/results (smoke runs: their run directory)
spec = load_study("interference", profile)
pd.Series({k: v for k, v in spec.items()}).to_frame("setting")

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
