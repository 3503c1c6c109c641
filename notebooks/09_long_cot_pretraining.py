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
# # 09 · Study 1: long chain of thought in pre-training, against the answer alone
#
# MiMo-VL adds synthetic long chain-of-thought (CoT) reasoning data in its late pre-training stages and
# reports that reasoning keeps improving with more of it, without saturating. The question here is
# narrower than "reasoning data or none": on the *same* reasoning problems, does training on the
# worked-out chain help more than training on the answer alone?
#
# **Design** (`experiments/studies/long_cot.yaml`). Two arms run stages 3 and 4 from the same start
# checkpoint, per seed, with the same data mixture, seed and token budget per step, so they draw the
# same problems and images (world sample *i* of each task). Only the reply of the reasoning samples
# (visual math, text reasoning) differs:
# - `long_cot`: the chain of thought the generator computes step by step, then the answer;
# - `short_cot`: an empty think block, then the answer: exactly what the model writes in no-think mode.
#
# Short replies are fewer tokens, so at the same token share the short arm sees more problems; each
# curve point records how many. The problems are set at a difficulty where most need several dependent
# steps (read 3-5 numbers or counts, then combine them), as far as this small model has headroom (the
# study file says where it stands and what the pilot measured). Each arm answers the reasoning tasks in
# its natural mode (the long arm thinks, the short arm answers after an empty think block); the perception
# tasks (transfer) are asked as both arms trained them. Scores and mean reply length are measured at the
# start, at checkpoints through stage 3 and at the end of stage 4. Seeds run in separate processes if wanted (`mimolab study long_cot --seeds 0 1`); each arm x seed
# curve is cached, and a call with every seed aggregates.

# %% tags=["parameters"]
profile = None  # "smoke" | "cpu" | "gpu"; None: MIMOLAB_PROFILE or "cpu"
run_dir = None  # smoke runs write their results here; None: under the runs root

# %%
import pandas as pd
import seaborn as sns
from IPython.display import Image, display

from mimolab.data.sources import world_source
from mimolab.pipeline.studies import load_study, results_dir
from mimolab.pipeline.study_long_cot import run_long_cot_study
from mimolab.pipeline.study_results import verdict
from mimolab.settings import get_profile

profile = profile or get_profile("cpu")
out = results_dir(profile, run_dir)  # experiments/results (smoke runs: their run directory)
spec = load_study("long_cot", profile)
pd.Series(vars(spec)).to_frame("setting")

# %% [markdown]
# ## 1. One problem, two replies
# The same training sample in both arms: the same question and image, the long or the short reply.

# %%
long = next(world_source("visual_math", difficulty=spec.difficulty)(0))
short = next(world_source("visual_math", difficulty=spec.difficulty, reasoning_reply="short")(0))
display(long.images[0])
print(long.prompt, "\n\n--- long_cot ---\n" + long.reply, "\n\n--- short_cot ---\n" + short.reply)

# %% [markdown]
# ## 2. The runs, and the headroom they start from
# The start checkpoint's score in each mode beside chance (the best blind answer), and each arm's final
# distance from chance: a task where the arms end near chance cannot show a difference.

# %%
result = run_long_cot_study(profile, out=out)
pd.DataFrame(result["headroom"]).set_index("task").round(3)

# %% [markdown]
# Held-out score against training tokens (mean and spread over seeds; chance dashed):

# %%
display(Image(str(out / "long_cot.png")))
pd.DataFrame(result["table"]).pivot(index="task", columns="arm", values="mean").round(3)

# %% [markdown]
# Reply length (tokens) against training tokens: the long arm writes its chain, the short arm its answer.

# %%
points = pd.DataFrame([{"arm": arm, "seed": seed, "tokens": r["tokens"], "task": key.removeprefix("length/"),
                        "reply tokens": value} for arm, seeds in result["runs"].items() for seed, curve in seeds.items()
                       for r in curve for key, value in r.items() if key.startswith("length/")])
sns.relplot(points, x="tokens", y="reply tokens", hue="arm", col="task", kind="line", marker="o", height=2.6)
pd.DataFrame(result["samples_seen"]).round(0).rename(columns=lambda t: f"{t} problems seen")

# %% [markdown]
# ## 3. What the runs say
# Long against short per task at the end of stage 4: the difference, its 95% CI and p, paired by seed (an
# arm's seed sees the same problems in the same order as the other's, so the per-seed difference is the
# measurement; Welch's p, the arms taken as independent, beside it), and the smallest difference the
# seeds' spread could detect (MDE); "not significant" is a valid outcome.

# %%
for test in result["tests"]:
    print(f"{test['task']:>14}: {test['arm']} vs {test['baseline']}: {verdict(test)}")
print(f"\nwritten: {out / 'long_cot.json'}, .md, .png")
pd.DataFrame(result["tests"]).set_index("task").reindex(columns=["diff", "ci_low", "ci_high", "p", "welch_p", "mde"]).round(3)

# %% [markdown]
# ## 4. Against the report, claim by claim
# Computed from the measured CIs (`study_long_cot.long_cot_claims`): *agrees* when the CI lies on the
# claim's side, *disagrees* when it lies on the other, *cannot tell* when it straddles. The claims: long
# CoT beats the answer alone on reasoning; the long arm is still improving from the end of stage 3 to the
# end of stage 4 (per-seed gain); perception is not hurt by more than 0.10 (non-inferiority).

# %%
pd.DataFrame(result["claims"]).round(3)
