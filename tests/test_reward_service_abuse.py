"""The reward service under careless and hostile clients on 127.0.0.1: a malformed request gets 422 with
its reason and is not retried, innocent requests in the same concurrent burst all succeed, a completion
that hangs until its time limit holds up no other client, and however the server ends (stop(),
SIGTERM, SIGKILL) no worker process or resource tracker outlives it.

(Latencies of a mixed burst, before and after, are measured by benchmarks/bench_reward_service.py.)"""

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from mimolab.rl.service import RemoteRewards, RewardServer, RewardServiceError
from test_processes import is_worker, running, wait_until_gone

HOSTILE = "\\boxed{" + "9" * 20 + "^" + "9" * 20 + "^" + "9" * 20 + "}"  # sympy computes for ages
INNOCENT = {"completions": ["3", "There are 4.", "\\boxed{12}"],
            "columns": {"task": ["counting", "counting", "visual_math"],
                        "answer": [{"count": 3}, {"count": 3}, {"number": 12}]}}
MALFORMED = {  # body -> what the 422 says
    "no completions": ({"columns": {"task": ["counting"]}}, "'completions' is missing"),
    "completions a string": ({"completions": "3", "columns": {}}, "'completions' must be a list, got str"),
    "columns of other lengths": ({"completions": ["3", "4"], "columns": {"task": ["counting"], "answer": [{"count": 3}]}},
                                 "column 'task' has 1 entries for 2 completions"),
    "columns not an object": ({"completions": ["3"], "columns": [1]}, "'columns' must be an object"),
    "a list body": ([1, 2, 3], "the body must be a JSON object"),
    "a reference of the wrong type": ({"completions": ["3"], "columns": {"task": ["counting"], "answer": [{"count": "3"}]}},
                                      "'count' must be a number, got '3'"),
    "samples that are not samples": ({"completions": ["3"], "columns": {"samples": [5]}}, "TypeError"),
}


@pytest.fixture(scope="module")
def server():
    with RewardServer(["verifiable"], timeout=15.0, workers=3) as running_server:
        yield running_server


def post(url: str, body) -> tuple[int, dict, float]:
    start = time.monotonic()
    response = httpx.post(url + "/score", json=body, timeout=60.0)
    return response.status_code, response.json(), time.monotonic() - start


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_request_gets_422_with_its_reason_and_is_not_retried(server, name):
    body, reason = MALFORMED[name]
    status, answer, _ = post(server.url, body)
    assert status == 422 and reason in answer["detail"]
    if isinstance(body, dict) and isinstance(body.get("completions"), list) and isinstance(body.get("columns"), dict) \
            and "samples" not in body["columns"]:  # (the client itself refuses samples it cannot send)
        with RemoteRewards(server.url, retries=3, backoff=0.01) as client:
            with pytest.raises(RewardServiceError, match="HTTP 422"):
                client(body["completions"], **body["columns"])
            assert client.attempts == 1  # a 4xx is the request's fault: retrying would not mend it


def test_innocent_requests_in_a_burst_with_malformed_ones_all_succeed(server):
    """24 requests, 8 at a time on one shared client and raw posts: the malformed ones are refused, and
    none of the innocent ones fails (before: 500s that closed connections under them)."""
    bodies = [INNOCENT if i % 3 else MALFORMED[list(MALFORMED)[i // 3 % len(MALFORMED)]][0] for i in range(24)]
    with RemoteRewards(server.url, retries=0) as client, ThreadPoolExecutor(8) as burst:
        def send(body):
            if body is INNOCENT:
                return client(body["completions"], **body["columns"])
            return post(server.url, body)[0]
        results = list(burst.map(send, bodies))
    innocent = [r for r, b in zip(results, bodies) if b is INNOCENT]
    refused = [r for r, b in zip(results, bodies) if b is not INNOCENT]
    assert len(innocent) == 16 and all(r == [1.0, 0.0, 1.0] for r in innocent)
    assert refused == [422] * 8


def test_a_hanging_completion_holds_up_no_other_client(server):
    """A request whose completion keeps sympy busy for seconds (until math-verify's own 5 s limit, or the
    service's) is sent first; every innocent request sent after it is answered while it still runs
    (before: they queued behind it, one batch at a time)."""
    hostile = {"completions": [HOSTILE], "columns": {"task": ["text_reasoning"], "answer": [{"number": 4}]}}
    done: dict[str, float] = {}
    with ThreadPoolExecutor(3) as warm:  # three batches at once: the pool has started its three workers
        assert list(warm.map(lambda _: post(server.url, INNOCENT)[0], range(3))) == [200] * 3

    def slow():
        status, answer, _ = post(server.url, hostile)
        done["hostile"] = time.monotonic()
        done["hostile answer"] = (status, answer["total"], answer["reasons"]["accuracy"])

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(1.0)  # the hostile completion is in a worker by now
    with ThreadPoolExecutor(4) as burst:
        answers = list(burst.map(lambda _: post(server.url, INNOCENT), range(8)))
    finished = time.monotonic()
    thread.join()
    assert [(status, answer["total"]) for status, answer, _ in answers] == [(200, [1.0, 0.0, 1.0])] * 8
    assert finished < done["hostile"]  # all answered before the hostile request came back
    assert done["hostile answer"][:2] == (200, [0.0])


@pytest.mark.parametrize("how", ["stop", "SIGTERM", "SIGKILL"])
def test_no_worker_or_resource_tracker_outlives_the_server(how):
    server = RewardServer(["verifiable"], workers=2, timeout=30.0).start()  # math-verify ends the hostile one at 5 s
    try:
        with RemoteRewards(server.url) as client:  # the hostile completion holds one worker: a second one starts
            got = client([HOSTILE, "\\boxed{4}"], task=["text_reasoning"] * 2, answer=[{"number": 4}] * 2)
            assert got == [0.0, 1.0]
        root = psutil.Process(server.process.pid)
        tree = [root, *root.children(recursive=True)]
        commands = [" ".join(p.cmdline()) for p in tree]
        assert sum(map(is_worker, tree)) == 2 and any("resource_tracker" in c for c in commands)
        if how == "stop":
            server.stop()
        else:
            server.process.send_signal(getattr(signal, how))
            server.process.wait(30)
        assert wait_until_gone(tree, within=20) == [], [" ".join(p.cmdline()) for p in running(tree)]
    finally:
        server.stop()
