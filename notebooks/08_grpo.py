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
# # 08 · MORL: on-policy GRPO from the pre-trained checkpoint
#
# MiMo-VL's post-training samples a group of answers per prompt, scores them with verifiable
# rewards (notebook 06), and pushes up the answers that beat their group's mean: the advantage is
# `(reward - group mean) / group std`. It runs fully on-policy: one gradient update per batch of
# rollouts, so the importance ratio is exactly 1 and PPO's clipping never binds; no KL term; the
# loss is averaged over all response tokens of the batch (report, sec. 3). The run's settings are
# `experiments/rl/grpo_on_policy.yaml`; the vanilla arm of the study is `updates_per_batch: 4`.

# %% tags=["parameters"]
profile = None  # "smoke" | "cpu" | "gpu"; None: MIMOLAB_PROFILE or "cpu"

# %%
import pandas as pd

from mimolab import MiMoVL
from mimolab.eval import evaluate, paired_change
from mimolab.pipeline import default_run_dir, get_processor, run_stage
from mimolab.rl import GRPOTrainer
from mimolab.rl.grpo import load_grpo_config
from mimolab.settings import get_profile
from mimolab.train.lora import add_lora, lora_parameters
from mimolab.train.tracking import Tracker
from mimolab.viz import LiveLoss, plot_scores

profile = profile or get_profile("cpu")
pretrain_dir = default_run_dir(profile)
run_dir = pretrain_dir.parent / "rl" / "grpo_on_policy"
# held-out samples per task, before and after: RL moves these scores by a few points, which 40 samples
# cannot tell from noise (the paired standard error of a 0.05 change near 0.8 is about 0.023 at 400)
eval_n = {"smoke": 4, "cpu": 400, "gpu": 400}[profile]
cfg = load_grpo_config("grpo_on_policy", profile)
pd.Series({k: v for k, v in cfg.__dict__.items()}).to_frame("value")

# %% [markdown]
# ## 1. Start from the end of pre-training (the pipeline runs first if it has not)

# %%
start = run_stage("stage4_long_context", profile, pretrain_dir)
model, processor = MiMoVL.from_pretrained(start.final), get_processor(pretrain_dir)
tasks = [task for task, _ in cfg.tasks]
before = evaluate(model, processor, tasks, n=eval_n, difficulty=cfg.difficulty)

# %% [markdown]
# ## 2. GRPO
# Logged per step: reward and response length per task, entropy, the first update's importance
# ratio (1 on-policy), clip fraction, KL to the starting policy (measured, not in the loss).

# %%
live = LiveLoss("GRPO: mean reward", every=5, keys=("reward",))
with Tracker(run_dir, cfg.__dict__, name=f"{profile}-grpo", group=f"rl-{profile}") as tracker:
    trainer = GRPOTrainer(model, processor, cfg, run_dir, tracker=tracker)
    history = trainer.train(log=live)
    trainer.close()
curves = pd.DataFrame(history).set_index("step")
curves.filter(regex="^reward/").rolling(5, min_periods=1).mean().plot(title="reward per task (5-step mean)",
                                                                       figsize=(8, 3));

# %%
curves.filter(regex="^response_length/").plot(title="response length per task (tokens)", figsize=(8, 3));
# steps whose groups all scored alike trained nothing (dynamic sampling): their update columns are empty
curves.reindex(columns=["groups_kept", "first_update/ratio_max_dev", "clip_fraction", "kl_ref", "entropy"]).describe().T

# %% [markdown]
# ## 3. Held-out scores before and after
# The same held-out samples and metrics as the pre-training notebooks, chance measured beside. Both
# evaluations score the same samples, so the change is judged on the paired per-sample differences:
# z = change / its standard error; |z| below 2 is not a significant change.

# %%
after = evaluate(model, processor, tasks, n=eval_n, difficulty=cfg.difficulty)
plot_scores(after, title="after GRPO")
changes = pd.DataFrame([{**c.as_dict(), "significant": c.significant} for c in map(paired_change, before, after)])
changes["chance"] = [b.chance for b in before]
changes[["task", "metric", "before", "after", "change", "stderr", "z", "significant", "chance", "n"]]

# %% [markdown]
# ## 4. The same loop over LoRA adapters
# With adapters the reference policy is the same model with its adapters switched off, so there
# is no second copy; the base weights stay bit-identical.

# %%
lora_model = MiMoVL.from_pretrained(start.final)
add_lora(lora_model, parts=("llm",), r=8)
base = {n: p.detach().clone() for n, p in lora_model.named_parameters() if ".lora_" not in n}
lora_trainer = GRPOTrainer(lora_model, processor, cfg, run_dir / "lora")
lora_history = lora_trainer.train(steps=min(cfg.steps, 5), progress=False)
print("trainable adapter parameters:", sum(p.numel() for p in lora_parameters(lora_model)))
print("base weights unchanged:", all(p.equal(base[n]) for n, p in lora_model.named_parameters() if ".lora_" not in n))
pd.DataFrame(lora_history).reindex(columns=["step", "reward", "groups_kept", "first_update/kl_ref", "kl_ref"])
