"""Reward-as-a-Service: one router in front of every reward, in-process or behind a local HTTP server.

``RewardRouter(rewards)`` sends each completion to the rewards of its task (a reward's ``tasks``
attribute; rewards without one see every sample and may answer None) and returns a ``RewardBatch``:
the total in [0, 1] (the mean of the components that scored the sample), the value of every
component, and the reasons for zeros. Called like a TRL reward it returns the totals.

The same router runs as a service: ``python -m mimolab.rl.service --reward verifiable`` starts
FastAPI under uvicorn, bound to 127.0.0.1 only (``RewardServer`` does that from Python and waits
until it answers). ``RemoteRewards(url)`` is the client: it sends a batch per request (split at
``batch_size``), gives each request ``timeout`` seconds, retries ``retries`` times with a growing
pause, and then raises ``RewardServiceError``: the GRPO trainer saves a checkpoint and stops with that
error, so a dead service never loses a run. A malformed request (no ``completions``, columns of
another length, a reference no reward can score against) gets 422 with the reason, which the client
raises at once: retrying would not mend it. Requests are scored concurrently, on up to ``--workers``
processes per reward pool, so a completion that hangs until its time limit holds up one process,
not every other client.

Reward specs for the server: ``verifiable`` (MiMo-VL's rule-based rewards), ``format``,
``reward_model=<dir>[:task,task]`` (a saved ``RewardModel``), or ``package.module:function`` (any
TRL-style reward function importable in the server's environment).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from mimolab.rl.processes import stop_process, watch_parent

HOST = "127.0.0.1"  # never another interface: the service runs untrusted completions through sympy
WORKERS = 8  # scoring processes per pool, started as load needs them: a hung completion holds up one of them


class RewardServiceError(RuntimeError):
    """The reward service did not answer (after retries), or answered with an error."""


@dataclass
class RewardBatch:
    total: list[float]  # per completion, in [0, 1]
    components: dict[str, list[float | None]]  # per reward: its value, None where it does not apply
    reasons: dict[str, list[str | None]]  # per reward: why a completion scored 0 (None: it did not, or no reason)

    def means(self) -> dict[str, float]:
        """Each component's mean over the completions it scored (components that scored none left out)."""
        out = {}
        for name, values in self.components.items():
            scored = [v for v in values if v is not None]
            if scored:
                out[name] = sum(scored) / len(scored)
        return out


def reward_name(fn: Callable) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


class RewardRouter:
    """Routes each sample to the rewards of its task; the total is the mean of those that scored it."""

    __name__ = "router"

    def __init__(self, rewards: Sequence[Callable]) -> None:
        self.rewards = list(rewards)
        self.names = [reward_name(fn) for fn in self.rewards]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"reward names must be unique (the breakdown is keyed by them): {self.names}")
        # a TRL-style function keeps its reasons in an attribute: one call at a time each (mimolab's
        # rewards return theirs, and concurrent calls share their worker pool)
        self._locks = {name: threading.Lock() for name in self.names}

    def _call(self, name: str, fn: Callable, completions: list, **columns) -> tuple[list, list]:
        if hasattr(fn, "values_and_reasons"):
            return fn.values_and_reasons(completions, **columns)
        with self._locks[name]:
            got = fn(completions, **columns)
            return got, list(getattr(fn, "last_reasons", None) or [None] * len(completions))

    def score(self, completions: list, task: list[str] | None = None, **columns: list) -> RewardBatch:
        """Score a batch; ``ValueError`` naming the problem for a malformed one (``completions`` not a
        list, a column of another length, a reference a reward cannot score against)."""
        if not isinstance(completions, list):
            raise ValueError(f"completions must be a list, got {type(completions).__name__}")
        n = len(completions)
        if task is not None and not isinstance(task, list):
            raise ValueError(f"column 'task' must be a list (one entry per completion), got {type(task).__name__}")
        task = task if task is not None else [None] * n
        for key, column in {"task": task, **columns}.items():
            if isinstance(column, list) and len(column) != n:
                raise ValueError(f"column {key!r} has {len(column)} entries for {n} completions")
        components, reasons = {}, {}
        for name, fn in zip(self.names, self.rewards):
            tasks = getattr(fn, "tasks", None)
            rows = [i for i in range(n) if tasks is None or task[i] in tasks]
            values: list[float | None] = [None] * n
            why: list[str | None] = [None] * n
            if rows:
                picked = {k: [v[i] for i in rows] if isinstance(v, list) else v for k, v in columns.items()}
                got, got_reasons = self._call(name, fn, [completions[i] for i in rows], task=[task[i] for i in rows],
                                              **picked)
                for i, value, reason in zip(rows, got, got_reasons):
                    # a TRL-style reward may return anything numeric: clamp to [0, 1], NaN counts as 0
                    values[i] = None if value is None else (0.0 if math.isnan(value) else min(1.0, max(0.0, float(value))))
                    why[i] = reason
            components[name], reasons[name] = values, why
        total = []
        for i in range(n):
            scored = [components[name][i] for name in self.names if components[name][i] is not None]
            total.append(sum(scored) / len(scored) if scored else 0.0)
        return RewardBatch(total, components, reasons)

    def __call__(self, completions: list, **columns: list) -> list[float]:
        return self.score(completions, **columns).total

    def close(self) -> None:
        """Close every reward that can be closed (ends their worker processes)."""
        for fn in self.rewards:
            if hasattr(fn, "close"):
                fn.close()

    def __enter__(self) -> "RewardRouter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------- wire format
def _image_to_text(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _image_from_text(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB")


def _map_media(messages: list[dict], convert) -> list[dict]:
    """The messages with ``convert`` applied to every image and every video frame."""
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [{**item, "image": convert(item["image"])} if item.get("type") == "image" else
                       {**item, "video": [convert(f) for f in item["video"]]} if item.get("type") == "video" else item
                       for item in content]
        out.append({"role": message["role"], "content": content})
    return out


def sample_to_wire(sample) -> dict:
    """A world ``Sample`` as JSON: images and video frames as base64 PNG (reward models need them)."""
    return {"task": sample.task, "messages": _map_media(sample.messages, _image_to_text), "answer": sample.answer}


def sample_from_wire(record: dict):
    from mimolab.data.world.scene import Sample

    return Sample(record["task"], _map_media(record["messages"], _image_from_text), record["answer"])


def columns_to_wire(columns: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in columns.items() if k != "samples"}
    if columns.get("samples") is not None:
        out["samples"] = [sample_to_wire(s) for s in columns["samples"]]
    json.dumps(out)  # fail here, naming the column, rather than inside the HTTP client
    return out


def columns_from_wire(columns: dict[str, Any]) -> dict[str, Any]:
    if columns.get("samples") is not None:
        columns = {**columns, "samples": [sample_from_wire(r) for r in columns["samples"]]}
    return columns


# ---------------------------------------------------------------------------------------- server
def load_rewards(specs: Sequence[str], timeout: float = 5.0, workers: int = 1) -> list[Callable]:
    """Rewards from specs (see the module docstring); mimolab's rule-based rewards score on up to
    ``workers`` processes each spec."""
    from mimolab.rl.rewards import Reward, default_rewards

    rewards: list[Callable] = []
    for spec in specs:
        if spec == "verifiable":
            rewards += default_rewards(timeout=timeout, workers=workers)
        elif spec == "format":
            rewards.append(Reward("format", None, scorer="format", timeout=timeout, workers=workers))
        elif spec.startswith("reward_model="):
            from mimolab.rl.reward_model import load_reward_model_reward

            path, _, tasks = spec.split("=", 1)[1].partition(":")
            rewards.append(load_reward_model_reward(path, tuple(tasks.split(",")) if tasks else None))
        elif ":" in spec:
            import importlib

            module, _, attr = spec.partition(":")
            rewards.append(getattr(importlib.import_module(module), attr))
        else:
            raise ValueError(f"unknown reward spec {spec!r}: use verifiable, format, reward_model=<dir>[:tasks] "
                             "or package.module:function")
    return rewards


def check_request(request: Any) -> tuple[list, dict]:
    """(completions, columns) of a /score request, or ``ValueError`` saying what is malformed."""
    if not isinstance(request, dict):
        raise ValueError(f"the body must be a JSON object with 'completions' and 'columns', "
                         f"got {type(request).__name__}")
    unknown = sorted(set(request) - {"completions", "columns"})
    if unknown:
        raise ValueError(f"unknown fields {unknown}: a request has 'completions' and 'columns'")
    if "completions" not in request:
        raise ValueError("'completions' is missing: a list with one completion per sample")
    if not isinstance(request["completions"], list):
        raise ValueError(f"'completions' must be a list, got {type(request['completions']).__name__}")
    columns = request.get("columns", {})
    if not isinstance(columns, dict):
        raise ValueError(f"'columns' must be an object of per-sample lists, got {type(columns).__name__}")
    return request["completions"], columns


def make_app(router: RewardRouter):
    """The FastAPI app: GET /health lists the rewards, POST /score scores one batch (a malformed one
    gets 422 and the reason, which the client does not retry); the router is closed when the server
    shuts down. Requests are scored concurrently: each reward's worker pool takes them all."""
    from contextlib import asynccontextmanager

    from fastapi import Body, FastAPI, HTTPException

    @asynccontextmanager
    async def lifespan(app):
        yield
        # here, not after uvicorn.run: on SIGTERM uvicorn shuts down, then re-raises the signal and the
        # process dies without running exit hooks, so the rewards' workers would be left behind
        router.close()

    app = FastAPI(title="mimolab rewards", lifespan=lifespan)

    @app.get("/health")
    def health() -> dict:
        return {"rewards": router.names}

    @app.post("/score")
    def score(request: Any = Body(...)) -> dict:  # noqa: B008  (FastAPI's way to take any JSON body)
        try:
            completions, columns = check_request(request)
            return asdict(router.score(completions, **columns_from_wire(columns)))
        except (ValueError, TypeError, KeyError, UnidentifiedImageError) as err:  # the request's: 422, not retried
            raise HTTPException(status_code=422, detail=f"{type(err).__name__}: {err}") from None

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve mimolab rewards over HTTP on 127.0.0.1.")
    parser.add_argument("--reward", action="append", default=None,
                        help="verifiable | format | reward_model=<dir>[:tasks] | module:function (repeatable)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per completion before it scores 0")
    parser.add_argument("--workers", type=int, default=WORKERS,
                        help="scoring processes per reward pool: requests and completions run on them concurrently")
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="shut down once this process (the one that started the server) is gone")
    args = parser.parse_args(argv)
    import uvicorn

    if args.parent_pid is not None:  # SIGTERM: uvicorn's clean shutdown, which closes the router
        watch_parent(args.parent_pid, lambda: os.kill(os.getpid(), signal.SIGTERM))
    router = RewardRouter(load_rewards(args.reward or ["verifiable"], timeout=args.timeout, workers=args.workers))
    uvicorn.run(make_app(router), host=HOST, port=args.port, log_level="warning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class RewardServer:
    """``python -m mimolab.rl.service`` in a child process, as a context manager; ``url`` once it answers."""

    def __init__(self, rewards: Sequence[str] = ("verifiable",), port: int | None = None, timeout: float = 5.0,
                 start_timeout: float = 120.0, pythonpath: str | None = None, workers: int | None = None) -> None:
        self.rewards, self.port, self.timeout, self.start_timeout = list(rewards), port or free_port(), timeout, start_timeout
        self.workers = workers or WORKERS
        self.pythonpath = pythonpath  # prepended to PYTHONPATH: where 'module:function' rewards live
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> "RewardServer":
        import httpx

        command = [sys.executable, "-m", "mimolab.rl.service", "--port", str(self.port), "--timeout", str(self.timeout),
                   "--workers", str(self.workers), "--parent-pid", str(os.getpid())]
        for spec in self.rewards:
            command += ["--reward", spec]
        env = dict(os.environ)
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (self.pythonpath, env.get("PYTHONPATH")) if p)
        # stderr to a file, not a pipe: a pipe nobody reads fills up and blocks the server
        self.log = tempfile.NamedTemporaryFile(prefix="mimolab-rewards-", suffix=".log", delete=False)
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        # a server nobody stops still ends: when this object is collected, or at interpreter exit
        self._end = weakref.finalize(self, stop_process, self.process)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RewardServiceError(f"the reward service exited with code {self.process.returncode}:\n"
                                         + Path(self.log.name).read_text()[-2000:])
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RewardServiceError(f"the reward service did not answer on {self.url} within {self.start_timeout:g} s")

    def stop(self) -> None:
        if self.process is not None:
            self._end()  # stop_process, once
        self.process = None

    def __enter__(self) -> "RewardServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------- client
class RemoteRewards:
    """The client: ``score`` and ``__call__`` as ``RewardRouter``'s, over HTTP with batching, time limits
    and retries; ``RewardServiceError`` once the retries are spent."""

    __name__ = "remote_rewards"

    def __init__(self, url: str, *, timeout: float = 60.0, retries: int = 3, backoff: float = 0.5,
                 batch_size: int = 256, transport=None) -> None:
        import httpx

        self.url, self.retries, self.backoff, self.batch_size = url.rstrip("/"), retries, backoff, batch_size
        self.client = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)
        self.attempts = 0  # requests sent, retries included (for logs and tests)

    def _post(self, payload: dict) -> dict:
        import httpx

        errors = []
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self.attempts += 1
            try:
                response = self.client.post("/score", json=payload)
                if response.status_code == 200:
                    return response.json()
                errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                if response.status_code < 500:
                    break  # the request itself is wrong: retrying would not help
            except httpx.HTTPError as err:
                errors.append(f"{type(err).__name__}: {err}")
        raise RewardServiceError(f"reward service {self.url} failed {len(errors)} time(s); last error: {errors[-1]}")

    def score(self, completions: list, **columns: list) -> RewardBatch:
        n = len(completions)
        wire = columns_to_wire(columns)
        parts = []
        for start in range(0, max(n, 1), self.batch_size):
            rows = slice(start, start + self.batch_size)
            parts.append(self._post({"completions": list(completions[rows]),
                                     "columns": {k: v[rows] if isinstance(v, list) else v for k, v in wire.items()}}))
        return RewardBatch(total=[v for p in parts for v in p["total"]],
                           components={k: [v for p in parts for v in p["components"][k]] for k in parts[0]["components"]},
                           reasons={k: [v for p in parts for v in p["reasons"][k]] for k in parts[0]["reasons"]})

    def __call__(self, completions: list, **columns: list) -> list[float]:
        return self.score(completions, **columns).total

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "RemoteRewards":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["RemoteRewards", "RewardBatch", "RewardRouter", "RewardServer", "RewardServiceError", "load_rewards",
           "make_app", "sample_from_wire", "sample_to_wire"]

if __name__ == "__main__":
    main()
