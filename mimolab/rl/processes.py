"""Lifetimes of the processes the RL code starts: reward worker pools and the reward service.

Each one ends with its owner, however the owner ends:
- ``close()`` / ``stop()`` (or leaving a ``with`` block) ends it at once;
- a forgotten owner: a ``weakref.finalize`` ends it when the owner is collected, or at interpreter exit;
- an owner killed outright (SIGKILL, or uvicorn re-raising SIGTERM, so no exit hook runs): the child
  watches its parent and ends itself. A pool worker cannot notice on its own: its task queue holds both
  ends of a pipe, so it never reads end-of-file and would wait, parented to init, forever.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

PARENT_POLL_S = 0.5  # how soon an orphan notices; a thread asleep costs nothing


def watch_parent(parent: int, on_gone: Callable[[], None]) -> None:
    """Call ``on_gone`` once the process ``parent`` is no longer this process's parent."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        on_gone()

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def exit_with_parent(parent: int) -> None:
    """Pool initializer: the worker exits as soon as the process that started it is gone."""
    watch_parent(parent, lambda: os._exit(1))


def worker_pool(mp_context) -> ProcessPoolExecutor:
    """A one-worker pool whose worker ends with this process (see the module docstring)."""
    return ProcessPoolExecutor(max_workers=1, mp_context=mp_context, initializer=exit_with_parent,
                               initargs=(os.getpid(),))


def kill_pool(pool: ProcessPoolExecutor, wait_s: float = 5.0) -> None:
    """Kill the pool's workers (one may be stuck in a call) and reap them, so none is left as a zombie."""
    processes = list((pool._processes or {}).values())  # None once the pool has shut down
    for process in processes:
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(wait_s)


def stop_process(process: subprocess.Popen, wait_s: float = 10.0) -> None:
    """SIGTERM (a server shuts down cleanly and closes its pools), then SIGKILL after ``wait_s``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
