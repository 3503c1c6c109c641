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
# # 09 · Study 1: long-CoT reasoning data in pre-training
#
# MiMo-VL adds synthetic long chain-of-thought reasoning data in its late pre-training stages and
# reports that reasoning keeps improving with more of it, without saturating. Here stages 3 and 4
# run from the pipeline's stage-2 checkpoint twice per seed: with the reasoning data (visual math,
# text reasoning) and without it, its token share handed to the other data types, so both arms see
# the same number of tokens (`experiments/studies/long_cot.yaml`). Held-out scores after stages 2, 3
# and 4 are plotted against training tokens.

# %% tags=["parameters"]
profile = None  # "smoke" | "cpu" | "gpu"; None: MIMOLAB_PROFILE or "cpu"
run_dir = None  # smoke runs write their results here; None: under the runs root

# %%
import pandas as pd
from IPython.display import Image, display

from mimolab.pipeline.studies import load_study, results_dir
from mimolab.pipeline.study_long_cot import run_long_cot_study
from mimolab.pipeline.study_results import verdict
from mimolab.settings import get_profile

profile = profile or get_profile("cpu")
out = results_dir(profile, run_dir)  # experiments/results (smoke runs: their run directory)
spec = load_study("long_cot", profile)
pd.Series(vars(spec)).to_frame("setting")

# %% [markdown]
# ## 1. The runs

# %%
result = run_long_cot_study(profile, out=out)
display(Image(str(out / "long_cot.png")))
pd.DataFrame(result["table"]).pivot(index="task", columns="arm", values="mean").round(3)

# %% [markdown]
# ## 2. What the runs say
# With long-CoT data against without, per task, at the end of stage 4. Whether the curve still
# rises between stage 3 and stage 4 is the saturation question: read it off the figure above.

# %%
for test in result["tests"]:
    print(f"{test['task']:>14}: {test['arm']} vs {test['baseline']}: {verdict(test)}")
print(f"\nwritten: {out / 'long_cot.json'}, .md, .png")
