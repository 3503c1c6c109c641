"""The top floor: what orchestrates the engines below it (``model``, ``data``, ``train``, ``rl``,
``eval``), which never import from here.

| module | what |
|---|---|
| ``stages`` | run a pre-training stage and the stages it starts from (``run_stage``) |
| ``morl`` | MORL from a checkpoint: GRPO with the RL tasks scored before and after (``run_morl``) |
| ``run`` | the main job: every stage, the final evaluation, MORL, the report (``run_pipeline``) |
| ``report`` | the pipeline's ``report.md`` and figures |
| ``studies`` | the three studies' settings (``StudySpec``, ``load_study``) |
| ``study_long_cot`` | study 1, long CoT in pre-training (``run_long_cot_study``) |
| ``study_grpo`` | studies 2-3, GRPO modes and interference (``run_grpo_study``) |
| ``study_results`` | what the studies' runs say: Welch tests, results files, the report's summary |
| ``sft`` | supervised fine-tuning of any Qwen2.5-VL checkpoint on your files (``mimolab sft``) |
| ``grpo_files`` | GRPO on a prompt file with your rewards, paired before/after (``mimolab grpo``) |
| ``pages`` | a checkpoint's answers about every page of PDF files (``mimolab pages``) |
"""

from mimolab.pipeline.morl import MorlResult, run_morl
from mimolab.pipeline.run import run_pipeline
from mimolab.pipeline.stages import STAGES, StageResult, default_run_dir, get_processor, run_stage, stages_for

__all__ = ["STAGES", "MorlResult", "StageResult", "default_run_dir", "get_processor", "run_morl", "run_pipeline",
           "run_stage", "stages_for"]
