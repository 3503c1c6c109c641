"""The four-stage pipeline from YAML: stage files, frozen parts across stages, crash and resume
at the pipeline level, checkpoints transformers loads, and the report."""

import json

import pytest
import torch

from mimolab import MiMoVL
from mimolab.model.summary import weight_changes
from mimolab.eval.results import TaskScore
from mimolab.pipeline import STAGES, MorlResult, run_pipeline, run_stage, stages_for
from mimolab.pipeline.report import morl_section
from mimolab.settings import EXPERIMENTS, relative_to_runs
from mimolab.train.stage import load_stage
from mimolab.train.tracking import read_metrics


def test_every_stage_file_loads_for_its_profiles():
    for name in STAGES:
        for profile in ("smoke", "cpu", "gpu"):
            stage = load_stage(name, profile)
            assert stage.name == name and stage.steps >= 1 and stage.shares
    assert stages_for("mimo-vl-7b") == list(STAGES[2:])  # the 7B profile starts from MiMo-7B-Base and Qwen2.5-ViT
    assert stages_for("cpu") == list(STAGES)


def test_the_7b_recipe_is_the_reports():
    s1, s2, s3, s4 = (load_stage(n, "mimo-vl-7b") for n in STAGES[2:])
    assert s1.lr == {"projector": 1e-3}
    assert s2.lr == {"vision": 1e-5, "projector": 1e-4}  # corrected values (issue #29), not the table's swap
    assert set(s3.lr) == {"vision", "projector", "llm"} and s3.lr["llm"] == 1e-5 and s4.lr["llm"] == 2.5e-5
    assert s1.row_tokens == s2.row_tokens == s3.row_tokens == 8192 and s4.row_tokens == 4 * 8192
    # token budgets: steps * tokens per step matches the report's token counts within one step
    for stage, tokens in ((s1, 300e9), (s2, 167e9), (s3, 1.4e12), (s4, 550e9)):
        assert abs(stage.steps * stage.tokens_per_step - tokens) <= stage.tokens_per_step
    small = {n: load_stage(n, "cpu") for n in STAGES}
    assert small["stage4_long_context"].row_tokens == 4 * small["stage3_multimodal"].row_tokens
    long_cot = lambda s: s.shares.get("visual_math", 0) + s.shares.get("text_reasoning", 0)  # noqa: E731
    assert long_cot(small["stage4_long_context"]) > 2 * long_cot(small["stage3_multimodal"])


def test_bad_stage_files_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="stage4_long_context"):
        load_stage("stage9", "cpu")
    with pytest.raises(KeyError, match="no settings for profile 'mimo-vl-7b'"):
        load_stage("stage0_llm", "mimo-vl-7b")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: {llm: 1.0e-3}\nlearning_rate: 3\nprofiles: {cpu: {}}\n")
    with pytest.raises(ValueError, match="learning_rate"):
        load_stage(bad, "cpu")
    bad.write_text("lr: {llm: 1.0e-3}\ncompile: 'no'\nprofiles: {cpu: {}}\n")  # a string, and so true
    with pytest.raises(ValueError, match="compile must be true or false, not 'no'"):
        load_stage(bad, "cpu")
    assert (EXPERIMENTS / "pretrain").is_dir()


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pretrain")
    report = run_pipeline("smoke", run_dir, tracking="disabled", progress=False, eval_n=2, morl_eval_n=3)
    return run_dir, report


def test_pipeline_writes_checkpoints_metrics_and_report(smoke_run):
    run_dir, report = smoke_run
    for name in STAGES:
        final = run_dir / name / "final"
        assert (final / "config.json").exists() and (final / "tokenizer.json").exists()
        assert [r["step"] for r in read_metrics(run_dir / name)] == list(range(1, load_stage(name, "smoke").steps + 1))
    text = report.read_text()
    assert "| caption |" in text and "| counting |" in text and (run_dir / "figures" / "loss.png").stat().st_size
    scores = json.loads((run_dir / "final_eval.json").read_text())
    assert {r["task"] for r in scores} >= {"caption", "ocr", "grounding", "counting", "video", "visual_math"}
    assert all(0 <= r["score"] <= 1 and 0 <= r["chance"] <= 1 for r in scores)
    assert {r["n"] for r in scores} == {2}  # eval_n; MORL's before/after use morl_eval_n
    # MORL ran from the last stage: its steps logged, its final model saved, the paired changes consistent
    morl = json.loads((run_dir / "morl" / "morl.json").read_text())
    # the start is recorded relative to the runs root (results files carry no machine paths)
    assert morl["start"] == relative_to_runs(run_dir / STAGES[-1] / "final") and not morl["start"].startswith("/")
    assert (run_dir / "morl" / "final" / "config.json").exists()
    steps = [json.loads(line)["step"] for line in (run_dir / "morl" / "metrics.jsonl").read_text().splitlines()
             if "reward" in json.loads(line)]
    assert steps == list(range(1, morl["steps"] + 1))
    for before, after, change in zip(morl["before"], morl["after"], morl["changes"]):
        assert change["task"] == before["task"] == after["task"] and before["n"] == after["n"] == 3  # morl_eval_n
        assert change["change"] == pytest.approx(after["score"] - before["score"], abs=1e-9)
    assert "## Studies" in text.split("## MORL")[1]  # the report ends with the studies' summary
    assert "## MORL" in text and f"| {morl['changes'][0]['task']} |" in text.split("## MORL")[1]
    # the wall-clock time of every phase, measured as it ran; a second call reads every phase back and keeps them
    timings = json.loads((run_dir / "timings.json").read_text())
    assert list(timings) == [*STAGES, "final evaluation", "MORL (GRPO, evaluations before and after)"]
    assert all(seconds > 0 for seconds in timings.values()) and "## Wall-clock time per phase" in text
    run_pipeline("smoke", run_dir, tracking="disabled", progress=False, eval_n=2, morl_eval_n=3)
    assert json.loads((run_dir / "timings.json").read_text()) == timings



def test_morl_section_names_changes_beyond_two_standard_errors(tmp_path):
    def pair(task, before, after):
        row = lambda values: TaskScore(task, "exact", sum(values) / len(values), 0.0, 0.0, len(values), values)  # noqa: E731
        return row(before), row(after)

    pairs = [pair("chart", [0.0] * 100, [1.0] * 20 + [0.0] * 80),  # +0.20, z 5.0
             pair("counting", [0.0] * 100, [1.0] * 3 + [0.0] * 97),  # +0.03, z 1.75: not significant
             pair("grounding", [1.0] * 100, [0.0] * 10 + [1.0] * 90),  # -0.10, z -3.3
             pair("gui", [0.5] * 100, [0.5] * 100),  # no change at all
             pair("ocr", [0.5] * 100, [0.51] * 100)]  # no spread: a change then is certain
    morl = MorlResult("smoke", "grpo_on_policy", "runs/x", 3, [b for b, _ in pairs], [a for _, a in pairs])
    text = "\n".join(morl_section(tmp_path, morl))
    assert "Raised by more than 2 standard errors: chart, ocr; lowered by more than 2: grounding." in text
    assert "| counting | exact | greedy | 0.000 | 0.030 | +0.030 ± 0.017 | 1.75 | 100 |" in text
    # what morl.json holds reads back to the same result
    (tmp_path / "morl.json").write_text(json.dumps(morl.as_dict()))
    assert MorlResult.load(tmp_path / "morl.json").as_dict() == morl.as_dict()


def test_morl_section_gives_the_mean_time_of_each_phase_of_a_step(tmp_path):
    (tmp_path / "morl").mkdir()
    (tmp_path / "figures").mkdir()  # write_report makes it
    records = [{"step": 1, "reward": 0.5, "seconds/rollout": 1.0, "seconds/rewards": 0.1, "seconds/update": 2.0},
               {"step": 2, "reward": 0.6, "seconds/rollout": 3.0, "seconds/rewards": 0.3, "seconds/update": 1.0}]
    records = [{**r, "reward/chart": r["reward"], "response_length/chart": 2.0} for r in records]  # the figure's
    (tmp_path / "morl" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    before = TaskScore("chart", "exact", 0.5, 0.0, 0.0, 2, [0.0, 1.0])
    text = "\n".join(morl_section(tmp_path, MorlResult("smoke", "grpo_on_policy", "runs/x", 2, [before], [before])))
    assert ("A GRPO step took 3.70 s on average (wall clock, 2 steps): rollouts 2.00 s, rewards 0.20 s, "
            "update 1.50 s.") in text


def test_frozen_parts_are_bit_identical_across_stages(smoke_run):
    run_dir, _ = smoke_run
    load = lambda name: MiMoVL.from_pretrained(run_dir / name / "final")  # noqa: E731
    llm, vision, stage1, stage2, stage3 = (load(n) for n in STAGES[:5])
    changed = lambda a, b: {r["part"]: r["changed"] for r in weight_changes(a, b)}  # noqa: E731
    assert changed(llm, vision)["projector"] == changed(llm, vision)["llm"] == 0 < changed(llm, vision)["vision"]
    assert changed(vision, stage1)["vision"] == changed(vision, stage1)["llm"] == 0 < changed(vision, stage1)["projector"]
    assert changed(stage1, stage2)["llm"] == 0 and changed(stage1, stage2)["vision"] > 0
    assert all(n > 0 for n in changed(stage2, stage3).values())


def test_final_checkpoint_loads_in_transformers(smoke_run):
    from transformers import Qwen2_5_VLForConditionalGeneration

    run_dir, _ = smoke_run
    final = run_dir / "stage4_long_context" / "final"
    hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(final).eval()
    ours = MiMoVL.from_pretrained(final).eval()
    ids = torch.randint(0, 2000, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, hf(input_ids=ids).logits, atol=1e-4, rtol=1e-4)


KILLED_RUN = """
import os, signal, sys
from mimolab.pipeline import run_stage

def die_after_step_3(record):  # the checkpoint of step 2 is on disk; the process dies during step 3
    if record["step"] == 3:
        os.kill(os.getpid(), signal.SIGKILL)

run_stage("stage0_llm", "smoke", sys.argv[1], tracking="disabled", progress=False, steps=4, checkpoint_every=2,
          log=die_after_step_3)
"""


def test_a_stage_killed_midway_resumes_with_the_same_losses(tmp_path):
    import signal
    import subprocess
    import sys

    straight = run_stage("stage0_llm", "smoke", tmp_path / "straight", tracking="disabled", progress=False,
                         steps=4, checkpoint_every=2)
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path / "crashed")], capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert not (tmp_path / "crashed" / "stage0_llm" / "final").exists()
    resumed = run_stage("stage0_llm", "smoke", tmp_path / "crashed", tracking="disabled", progress=False, steps=4,
                        checkpoint_every=2)
    assert [r["step"] for r in resumed.history] == [3, 4]
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in straight.history[2:]], abs=1e-6)
    a, b = MiMoVL.from_pretrained(straight.final), MiMoVL.from_pretrained(resumed.final)
    torch.testing.assert_close(dict(a.state_dict()), dict(b.state_dict()))
