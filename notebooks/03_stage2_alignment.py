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
# # 03 · Stage 2: vision-language alignment
#
# Now the ViT trains too, together with the projector, while the language model stays frozen;
# interleaved pages (several images referenced from the text) join the captions (report, sec. 2:
# 167B tokens at 8K). At 7B the learning rates are projector 1e-4 and ViT 1e-5: the report's table
# swaps them and the authors corrected it in their repository's issue tracker. The small profiles'
# ViT comes from their vision warm-up (notebook 02) rather than from Qwen2.5-VL, and keeps the same
# ratio: ViT ten times below the projector (see `experiments/pretrain/stage2_alignment.yaml`).

# %% tags=["parameters"]
profile = None  # "smoke" | "cpu" | "gpu"; None: MIMOLAB_PROFILE or "cpu"

# %%
import pandas as pd

from mimolab import MiMoVL
from mimolab.eval.harness import examples
from mimolab.model.summary import weight_changes
from mimolab.pipeline import default_run_dir, get_processor, run_stage
from mimolab.settings import get_profile
from mimolab.train.stage import load_stage
from mimolab.viz import LiveLoss, plot_scores, show_examples

profile = profile or get_profile("cpu")
run_dir = default_run_dir(profile)
eval_n = {"smoke": 4, "cpu": 40, "gpu": 100}[profile]
stage = load_stage("stage2_alignment", profile)
pd.Series({"what": stage.what, "trains (lr)": stage.lr, "data (token shares)": stage.shares, "steps": stage.steps,
           "tokens per step": stage.tokens_per_step, "starts from": stage.init_from}, name=stage.name).to_frame()

# %% [markdown]
# ## 1. Train (stages 0 and 1 run first if this run directory lacks them)

# %%
stage1 = run_stage("stage1_projector", profile, run_dir, eval_n=eval_n)
live = LiveLoss("stage 2: ViT + projector", keys=("loss", "loss/caption", "loss/interleaved"))
stage2 = run_stage("stage2_alignment", profile, run_dir, log=live, eval_n=eval_n)
fig = live.figure() if live.records else None

# %% [markdown]
# ## 2. The language model did not move

# %%
before, after = MiMoVL.from_pretrained(stage1.final), MiMoVL.from_pretrained(stage2.final)
pd.DataFrame(weight_changes(before, after)).set_index("part")

# %% [markdown]
# ## 3. Captions before and after the ViT trained
# Same held-out images, same metric (object F1), chance measured beside each.

# %%
table = pd.DataFrame([{**r.as_dict(), "after": "stage 1"} for r in stage1.eval] + [{**r.as_dict(), "after": "stage 2"} for r in stage2.eval])
table[["after", "task", "metric", "score", "stderr", "chance", "z", "n"]]

# %%
plot_scores(stage2.eval, title="after stage 2");

# %%
processor = get_processor(run_dir)
show_examples(examples(after, processor, "caption", n=3) + examples(after, processor, "interleaved", n=2));
