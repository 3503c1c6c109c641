"""Data parallel training through accelerate: two CPU processes (gloo) give the losses and weights
of one process with the same global batch."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


def run(args: list[str], out: Path) -> dict:
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args + [str(WORKER), str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "losses.json").read_text())


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert launcher, "accelerate's launcher is part of the install"
    single = run([sys.executable], tmp_path / "one")
    double = run([launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517"],
                 tmp_path / "two")
    assert single["world"] == 1 and double["world"] == 2  # two processes really formed one group
    assert double["losses"] == pytest.approx(single["losses"], abs=1e-5)
    one, two = torch.load(tmp_path / "one" / "weights.pt"), torch.load(tmp_path / "two" / "weights.pt")
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=1e-5, rtol=1e-4, msg=name)
    # the checkpoint the main process wrote is complete and resumable
    assert (tmp_path / "two" / "run" / "checkpoints" / "step-000002" / "trainer_state.pt").exists()
