"""No process the RL code starts outlives its owner: a closed router, a stopped service, a Reward left
open at interpreter exit, and an owner killed outright all leave no worker behind.

(psutil comes with accelerate, a dependency.)"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from mimolab.rl.rewards import Reward
from mimolab.rl.service import RemoteRewards, RewardRouter, RewardServer

ROOT = Path(__file__).resolve().parents[1]


def running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie has ended; it only waits to be reaped)."""
    out = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_until_gone(processes: list[psutil.Process], within: float) -> list[psutil.Process]:
    deadline = time.monotonic() + within
    while running(processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    return running(processes)


def is_worker(process: psutil.Process) -> bool:
    """A scoring worker: forked by a multiprocessing fork server (or, without one, spawned). Not the fork
    server itself nor the resource tracker, which live as long as the process that started them."""
    try:
        parent = process.parent()
        return "spawn_main" in " ".join(process.cmdline()) or parent is not None and "forkserver" in " ".join(
            parent.cmdline())
    except psutil.NoSuchProcess:
        return False


def new_workers(before: set[int]) -> list[psutil.Process]:
    """Pool workers started since ``before``."""
    return [p for p in psutil.Process().children(recursive=True) if p.pid not in before and is_worker(p)]


def test_closing_a_router_ends_every_reward_worker():
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with RewardRouter([Reward("counting", ("counting",)), Reward("format", None, scorer="format")]) as router:
        batch = router.score(["<think>x</think> 3", "4"], task=["counting"] * 2, answer=[{"count": 3}] * 2)
        assert batch.components["counting"] == [1.0, 0.0]
        workers = new_workers(before)
        assert len(workers) == 2  # one per reward
    assert running(workers) == []  # gone when close() returns, not some time later


def test_stopping_the_service_ends_the_server_and_its_workers():
    """uvicorn re-raises SIGTERM after its shutdown, so the server's exit hooks never run: its rewards
    must be closed during the shutdown itself."""
    with RewardServer(["format"]) as server, RemoteRewards(server.url) as client:
        assert client(["<think>a</think> 4", "4"]) == [1.0, 0.0]
        tree = [psutil.Process(server.process.pid), *psutil.Process(server.process.pid).children(recursive=True)]
        assert any(is_worker(p) for p in tree)  # the format reward's worker
    assert wait_until_gone(tree, within=5) == []


def run_owner(body: str) -> tuple[subprocess.Popen, list[int]]:
    """A Python process running ``body`` (which prints one JSON line of worker pids, then goes on)."""
    script = textwrap.dedent(body)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    line = owner.stdout.readline()
    assert line, f"the owner process printed nothing (exit code {owner.wait()})"
    return owner, json.loads(line)


SCORE_ONCE = """
    import json, psutil
    from mimolab.rl.rewards import Reward
    reward = Reward("counting", ("counting",))
    assert reward(["3"], task=["counting"], answer=[{"count": 3}]) == [1.0]
"""


def test_a_reward_left_open_ends_its_worker_at_interpreter_exit():
    owner, pids = run_owner(SCORE_ONCE + """
    print(json.dumps([p.pid for p in psutil.Process().children(recursive=True)]), flush=True)
    """)  # and exits without close()
    workers = [psutil.Process(pid) for pid in pids]
    assert owner.wait(60) == 0 and workers
    assert wait_until_gone(workers, within=5) == []


def test_a_killed_owner_takes_its_reward_worker_and_server_along():
    """SIGKILL runs no exit hook in the owner: its children notice their parent is gone and end."""
    owner, pids = run_owner(SCORE_ONCE + """
    import time
    from mimolab.rl.service import RemoteRewards, RewardServer
    server = RewardServer(["format"]).start()
    assert RemoteRewards(server.url)(["4"]) == [0.0]
    print(json.dumps([p.pid for p in psutil.Process().children(recursive=True)]), flush=True)
    time.sleep(600)
    """)
    tree = [psutil.Process(pid) for pid in pids]
    commands = [" ".join(p.cmdline()) for p in tree]
    assert sum(map(is_worker, tree)) == 2 and sum("mimolab.rl.service" in c for c in commands) == 1
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert wait_until_gone(tree, within=20) == []
