"""Lifetimes of the processes the RL code starts: reward worker pools and the reward service.

Each one ends with its owner, however the owner ends:
- ``close()`` / ``stop()`` (or leaving a ``with`` block) ends it at once;
- a forgotten owner: a ``weakref.finalize`` ends it when the owner is collected, or at interpreter exit;
- an owner killed outright (SIGKILL, or uvicorn re-raising SIGTERM, so no exit hook runs): the child
  watches its parent and ends itself (a worker busy in a hung call never reads the end-of-file of its
  pipe, so it polls), and the multiprocessing resource tracker, once every process holding its pipe is
  gone, ends too.
"""

from __future__ import annotations

import importlib
import multiprocessing
import multiprocessing.process
import os
import queue
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future

PARENT_POLL_S = 0.5  # how soon an orphan notices; a thread asleep costs nothing
PROCESS_START_S = 120.0  # a worker spawned without a fork server imports sympy: seconds on a loaded machine


def watch_parent(parent: int, on_gone: Callable[[], None]) -> None:
    """Call ``on_gone`` once the process ``parent`` is no longer this process's parent."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        on_gone()

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def exit_with_parent(parent: int) -> None:
    """In a worker: exit as soon as the process ``parent`` that started it is gone."""
    watch_parent(parent, lambda: os._exit(1))


def worker_context(preload: Sequence[str] = ()):
    """The way workers start: from a fork server where the platform has one (a clean single-threaded
    process, safe beside torch's threads, that imports ``preload`` once: a worker that replaces a
    killed one is forked in milliseconds, not spawned and made to import sympy again, which took
    seconds of CPU each and stalled every other call when several time limits ran out at once);
    else ``spawn``. The fork server is a child of this process and ends with it."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))  # (read when the fork server starts: the first pool's list)
    return context


class WorkerPool:
    """Up to ``workers`` processes that each run one call at a time under a time limit, shared by any
    number of threads (the reward service's concurrent requests). A call past its limit has its own
    process killed and replaced, and fails alone with ``TimeoutError``: the calls on the other
    processes go on. (A ``ProcessPoolExecutor`` cannot kill one worker, only all of them.)

    Workers start on demand, one more whenever calls wait and none is idle (``worker_context``), each
    importing ``preload`` before its first call so that start-up never counts against a time limit.
    ``close()`` ends them all at once; a later ``submit`` starts afresh. Each worker also ends when the
    process that started it does (``watch_parent``), and a pool nobody closes is closed when collected
    or at interpreter exit.
    """

    def __init__(self, workers: int = 1, preload: Sequence[str] = (), mp_context=None) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        self.workers, self.preload = workers, tuple(preload)
        self.context = mp_context or worker_context(self.preload)
        self._lock = threading.Lock()
        self._crew: _Crew | None = None

    def submit(self, fn: Callable, *args, timeout: float) -> Future:
        """``fn(*args)`` in a worker, its result (or exception) in the returned future; ``TimeoutError``
        once it has run ``timeout`` seconds. ``fn`` must be importable (a module-level function)."""
        future: Future = Future()
        with self._lock:
            if self._crew is None:
                self._crew = _Crew(self)
                weakref.finalize(self, self._crew.stop)
            self._crew.put((future, fn, args, timeout), self.workers)
        return future

    def pids(self) -> list[int]:
        """The worker processes alive now (for tests and logs)."""
        crew = self._crew
        return [p.pid for p in list(crew.processes.values()) if p.is_alive()] if crew else []

    def close(self) -> None:
        """Kill every worker and fail the calls still waiting; returns once the workers are reaped."""
        with self._lock:
            crew, self._crew = self._crew, None
        if crew is not None:
            crew.stop()


class _Crew:
    """One generation of a WorkerPool's threads and processes: each thread owns one process."""

    def __init__(self, pool: WorkerPool) -> None:
        self.context, self.preload = pool.context, pool.preload
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.stopped = threading.Event()
        self.processes: dict[int, multiprocessing.process.BaseProcess] = {}  # thread number -> its process
        self.threads: list[threading.Thread] = []
        self.idle = 0
        self.lock = threading.Lock()

    def put(self, task: tuple, limit: int) -> None:
        with self.lock:
            if self.tasks.qsize() >= self.idle and len(self.threads) < limit:  # every worker busy: one more
                thread = threading.Thread(target=self.serve, args=(len(self.threads),), name="reward-worker",
                                          daemon=True)
                self.threads.append(thread)
                thread.start()
        self.tasks.put(task)

    def spawn(self, number: int):
        here, there = self.context.Pipe()
        process = self.context.Process(target=_work, args=(there, self.preload), daemon=True)
        with self.lock:  # stop() either sees this process or this sees stop(): none is started after it
            if self.stopped.is_set():
                raise RuntimeError("the worker pool was closed")
            process.start()
            self.processes[number] = process
        there.close()
        if not here.poll(PROCESS_START_S) or here.recv() != "ready":
            raise RuntimeError(f"a worker process did not start within {PROCESS_START_S} s")
        return process, here

    def serve(self, number: int) -> None:
        process = connection = None
        while not self.stopped.is_set():
            with self.lock:
                self.idle += 1
            task = self.tasks.get()
            with self.lock:
                self.idle -= 1
            if task is None:
                break
            future, fn, args, timeout = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                if process is None or not process.is_alive():
                    process, connection = self.spawn(number)  # before the clock starts
                connection.send((fn, args))
                if not connection.poll(timeout):
                    process = _end(process, connection)
                    future.set_exception(TimeoutError(f"no answer within {timeout:g} s"))
                    continue
                ok, value = connection.recv()
                future.set_result(value) if ok else future.set_exception(value)
            except (OSError, EOFError, RuntimeError) as err:  # the process died, or the pool was closed
                process = _end(process, connection)
                future.set_exception(RuntimeError(f"the worker process ended: {err!r}"))
        _end(process, connection)

    def stop(self) -> None:
        with self.lock:
            self.stopped.set()
            processes = list(self.processes.values())
        for process in processes:
            process.kill()  # a call in progress sees end-of-file at once
        while True:  # calls still queued fail rather than wait forever
            try:
                task = self.tasks.get_nowait()
            except queue.Empty:
                break
            if task is not None and task[0].set_running_or_notify_cancel():
                task[0].set_exception(RuntimeError("the worker pool was closed"))
        for _ in self.threads:  # then wake every idle thread: it ends
            self.tasks.put(None)
        for process in processes:
            process.join(5.0)


def _end(process, connection) -> None:
    """Kill and reap a worker, close its pipe; returns None (the thread's new process)."""
    if process is not None:
        process.kill()
        process.join(5.0)
    if connection is not None:
        connection.close()


def _work(connection, preload: tuple[str, ...]) -> None:
    """A worker's loop: run each ``(fn, args)`` received, send back ``(ok, result or exception)``. It ends
    with the process that started it: the pool's owner, or the fork server, which ends with the owner."""
    exit_with_parent(os.getppid())
    for module in preload:
        importlib.import_module(module)
    connection.send("ready")
    while True:
        try:
            fn, args = connection.recv()
        except EOFError:  # the owner is gone
            return
        try:
            result = (True, fn(*args))
        except Exception as err:  # noqa: BLE001  (the caller's to judge)
            result = (False, err)
        try:
            connection.send(result)
        except Exception as err:  # noqa: BLE001  (an unpicklable result or exception)
            connection.send((False, RuntimeError(f"unpicklable result: {err!r}")))


def stop_process(process: subprocess.Popen, wait_s: float = 10.0) -> None:
    """SIGTERM (a server shuts down cleanly and closes its pools), then SIGKILL after ``wait_s``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
