"""The reward service under a mixed burst: innocent batches and a few hostile ones (a completion that keeps
sympy busy until a time limit), sent concurrently to one server on 127.0.0.1; the latencies of each kind.

    OMP_NUM_THREADS=1 python benchmarks/bench_reward_service.py [--before-rev HEAD] [--rounds 2]

With ``--before-rev`` the same burst also runs against the service of that git revision (extracted with
``git archive`` into a temporary folder, the checkout untouched), the two alternating round by round,
each in a fresh server: the client and the burst are this checkout's, only the server's code differs.
Per round and server: p50 / p95 / max seconds of the innocent requests, the hostile requests' times,
the burst's wall time, and the server tree's CPU seconds (on a shared machine the steadier figure); the
medians over rounds and the before / after ratios at the end, all of it as JSON.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOSTILE = "\\boxed{" + "9" * 20 + "^" + "9" * 20 + "^" + "9" * 20 + "}"  # sympy computes for ages


def burst_bodies(innocent: int, hostile: int, batch: int) -> list[dict]:
    """``innocent`` batches of ``batch`` world replies (reference, wrong, malformed; every rewarded task)
    with ``hostile`` one-completion batches spread among them."""
    from mimolab.data.world import generate

    rows = []
    for i, task in enumerate(("visual_math", "text_reasoning", "grounding", "gui", "counting", "video", "chart")):
        sample = generate(task, 50 + i, difficulty=0.3)
        for reply in (sample.reply, "The answer is 12345.", "[[[ {bbox_2d: nonsense"):
            rows.append((reply, sample.task, sample.answer, sample.reply))
    bodies = []
    for k in range(innocent):
        picked = [rows[(k * batch + j) % len(rows)] for j in range(batch)]
        bodies.append({"completions": [r[0] for r in picked], "columns": {
            "task": [r[1] for r in picked], "answer": [r[2] for r in picked], "reference": [r[3] for r in picked]}})
    every = max(1, innocent // max(1, hostile))
    for h in range(hostile):
        bodies.insert(h * (every + 1), {"completions": [HOSTILE], "columns": {
            "task": ["text_reasoning"], "answer": [{"number": 4}], "reference": ["4"]}})
    return bodies


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process tree: each live process's own and those of the children it has reaped
    (a killed worker's seconds move to its parent's reaped-children count, so none is lost or counted twice)."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            total += sum(process.cpu_times()[:4])  # user, system, reaped children's user and system
        except psutil.NoSuchProcess:
            pass
    return total


def run_child(args) -> dict:
    """One round against this interpreter's mimolab (PYTHONPATH picks the tree): start, warm, burst, stop."""
    import httpx

    from mimolab.rl.service import RewardServer

    kwargs = {"timeout": args.timeout}
    if "workers" in inspect.signature(RewardServer).parameters:
        kwargs["workers"] = args.workers
    bodies = burst_bodies(args.innocent, args.hostile, args.batch)
    with RewardServer(["verifiable"], **kwargs) as server, httpx.Client(timeout=120.0) as client:
        def send(body: dict) -> tuple[bool, int, float]:
            start = time.perf_counter()
            status = client.post(server.url + "/score", json=body).status_code
            return body["completions"] == [HOSTILE], status, time.perf_counter() - start

        with ThreadPoolExecutor(args.concurrency) as pool:  # warm: every worker the burst can use started
            list(pool.map(send, [bodies[-1]] * args.concurrency))
        cpu0, wall0 = tree_cpu(server.process.pid), time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(send, bodies))
        wall, cpu = time.perf_counter() - wall0, tree_cpu(server.process.pid) - cpu0
    innocent = sorted(t for hostile, _, t in results if not hostile)
    quantile = lambda q: innocent[min(len(innocent) - 1, round(q * (len(innocent) - 1)))]  # noqa: E731
    return {"innocent_p50_s": quantile(0.5), "innocent_p95_s": quantile(0.95), "innocent_max_s": innocent[-1],
            "hostile_s": sorted(t for hostile, _, t in results if hostile), "burst_wall_s": wall,
            "server_cpu_s": cpu, "statuses": sorted({status for _, status, _ in results}),
            "workers": kwargs.get("workers", "one per reward, one batch at a time")}


def extract(rev: str) -> Path:
    """The tree of git revision ``rev`` in a temporary folder (read-only for the repository)."""
    out = Path(tempfile.mkdtemp(prefix="mimolab-before-"))
    archive = subprocess.run(["git", "archive", rev], cwd=HERE.parent, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before-rev", default=None, help="also run the service of this git revision")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--innocent", type=int, default=40, help="innocent requests in the burst")
    parser.add_argument("--hostile", type=int, default=4, help="hostile requests in the burst")
    parser.add_argument("--batch", type=int, default=8, help="completions per innocent request")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--workers", type=int, default=8,
                        help="scoring processes of the server (where it has the option)")
    parser.add_argument("--timeout", type=float, default=5.0, help="the server's time limit per completion")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args)))
        return
    trees = {"after": HERE.parent}
    if args.before_rev:
        trees = {"before": extract(args.before_rev), **trees}
    forwarded = [a for a in sys.argv[1:] if a != "--before-rev" and a != args.before_rev]
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    try:
        for _ in range(args.rounds):
            for name, tree in trees.items():  # alternating: before, after, before, after ...
                env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(HERE)])}
                out = subprocess.run([sys.executable, __file__, "--child", *forwarded], env=env, cwd=tree,
                                     check=True, capture_output=True, text=True).stdout
                runs[name].append(json.loads(out.strip().splitlines()[-1]))
                print(name, runs[name][-1], flush=True)
    finally:
        if "before" in trees:
            shutil.rmtree(trees["before"], ignore_errors=True)
    keys = ("innocent_p50_s", "innocent_p95_s", "innocent_max_s", "burst_wall_s", "server_cpu_s")
    medians = {name: {k: statistics.median(r[k] for r in rounds) for k in keys} for name, rounds in runs.items()}
    summary = {"load_average": os.getloadavg(), "settings": {k: v for k, v in vars(args).items() if k != "child"},
               "median": medians, "runs": runs}
    if "before" in medians:
        summary["before_over_after"] = {k: medians["before"][k] / medians["after"][k] for k in keys}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
