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
# # 05 · Stage 4: long context and long chain-of-thought
#
# The last pre-training stage trains everything at four times the sequence length (8K → 32K at
# 7B), with a much larger share of long chain-of-thought reasoning data (report, sec. 2: 550B
# tokens, lr 2.5e-5). The report sees reasoning scores and response length keep rising through
# this stage. Afterwards the whole pipeline is evaluated on every task and the report is written.

# %% tags=["parameters"]
profile = None  # "smoke" | "cpu" | "gpu"; None: MIMOLAB_PROFILE or "cpu"

# %%
import pandas as pd
from IPython.display import Markdown

from mimolab import MiMoVL
from mimolab.eval import evaluate
from mimolab.eval.harness import examples
from mimolab.pipeline import default_run_dir, get_processor, run_pipeline, run_stage
from mimolab.settings import get_profile
from mimolab.train.stage import load_stage
from mimolab.viz import LiveLoss, plot_scores, show_examples

profile = profile or get_profile("cpu")
run_dir = default_run_dir(profile)
eval_n = {"smoke": 4, "cpu": 40, "gpu": 100}[profile]
stages = {name: load_stage(name, profile) for name in ("stage3_multimodal", "stage4_long_context")}
pd.DataFrame({name: {"row tokens": s.row_tokens, "rows per step": s.rows_per_step,
                     "long-CoT share": s.shares.get("visual_math", 0) + s.shares.get("text_reasoning", 0)}
              for name, s in stages.items()})

# %% [markdown]
# ## 1. Train

# %%
stage3 = run_stage("stage3_multimodal", profile, run_dir, eval_n=eval_n)
live = LiveLoss("stage 4: long context", keys=("loss", "loss/visual_math", "loss/text_reasoning"))
stage4 = run_stage("stage4_long_context", profile, run_dir, log=live, eval_n=eval_n)
fig = live.figure() if live.records else None

# %% [markdown]
# ## 2. Reasoning before and after stage 4
# Answers are checked with math-verify on the final answer after `</think>`.

# %%
model3, model4 = MiMoVL.from_pretrained(stage3.final), MiMoVL.from_pretrained(stage4.final)
processor = get_processor(run_dir)
reasoning = list(stages["stage4_long_context"].eval_tasks)
rows = [{**r.as_dict(), "after": label} for label, model in (("stage 3", model3), ("stage 4", model4))
        for r in evaluate(model, processor, reasoning, n=eval_n, progress=False)]
pd.DataFrame(rows)[["after", "task", "score", "stderr", "chance", "z", "n"]]

# %%
show_examples(examples(model4, processor, "visual_math", n=2), width=60);

# %% [markdown]
# ## 3. The whole pipeline: every task, held out, and the report
# `run_pipeline` reuses the finished stages, evaluates the final model on every task and writes
# `report.md` with its figures into the run directory. It is also the main job (`make pipeline`).

# %%
report = run_pipeline(profile, run_dir, eval_n=eval_n)
Markdown(report.read_text().replace("](figures/", f"]({report.parent}/figures/"))
