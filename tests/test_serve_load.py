"""Load on `umi-edge serve` (loopback, bounded): 32 concurrent clients against a queue of 8, several rounds,
streaming and not, both tool modes. Every request is answered or refused with 429; none is lost, none is a
server error, and the process RSS stays flat from round to round."""
from __future__ import annotations

import json
import threading

import pytest

pytest.importorskip("starlette")
openai = pytest.importorskip("openai")

from serve_util import ANSWER, CALL, PLAN_CALL, PLAN_DONE, LiveServer, fake_team  # noqa: E402

from umi_edge.engine.fake import Scripted  # noqa: E402

CLIENTS, QUEUE, ROUNDS = 32, 8, 5
ADD = {"type": "function", "function": {"name": "add", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}}


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def scripted(n: int):
    """A team for n tasks whose planner reads the prompt (requests interleave); each generation takes a little
    while, like a small model's."""
    slow = lambda text: Scripted(text, delay=0.01, token_delay=0.0005)  # noqa: E731
    plan = lambda prompt: slow(PLAN_DONE if "observation: " in prompt else PLAN_CALL)  # noqa: E731
    return fake_team([plan] * 2 * n, [slow(CALL)] * n, [slow(ANSWER)] * n)


def one_request(c, k: int) -> str:
    """One client's request; returns "ok", "429" or what went wrong."""
    q = [{"role": "user", "content": f"What is 2 + 40? ({k})"}]
    try:
        if k % 3 == 0:
            text = "".join(ch.choices[0].delta.content or "" for ch in
                           c.chat.completions.create(model="fake", messages=q, stream=True) if ch.choices)
            return "ok" if text == ANSWER else f"bad stream {text!r}"
        if k % 3 == 1:
            r = c.chat.completions.create(model="fake", messages=q)
            return "ok" if r.choices[0].message.content == ANSWER else f"bad answer {r!r}"
        r = c.chat.completions.create(model="fake", messages=q, tools=[ADD])
        call = r.choices[0].message.tool_calls[0]
        return "ok" if json.loads(call.function.arguments) == {"a": 2, "b": 40} else f"bad call {r!r}"
    except openai.RateLimitError as e:
        return "429" if int(e.response.headers["Retry-After"]) >= 1 else "429 without Retry-After"
    except Exception as e:  # noqa: BLE001 - every other outcome is a failure the test reports
        return f"{type(e).__name__}: {e}"


@pytest.mark.slow
def test_32_clients_against_a_queue_of_8():
    team = scripted(CLIENTS * ROUNDS)
    with LiveServer({"fake": team}, max_queue=QUEUE) as s:
        clients = [s.client(timeout=60) for _ in range(CLIENTS)]
        rss, tally = [], []
        for _ in range(ROUNDS):
            results: list[str] = [""] * CLIENTS
            go = threading.Barrier(CLIENTS)

            def worker(k):
                go.wait()
                results[k] = one_request(clients[k], k)

            threads = [threading.Thread(target=worker, args=(k,)) for k in range(CLIENTS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert not any(t.is_alive() for t in threads), "a request hung"
            bad = [r for r in results if r not in ("ok", "429")]
            assert not bad, bad
            tally.append((results.count("ok"), results.count("429")))
            rss.append(rss_mb())
            assert s.worker().load() == {"running": 0, "waiting": 0, "max_queue": QUEUE}
        assert not s.state.runs
    print(json.dumps({"answered_429": tally, "rss_mb": [round(x, 1) for x in rss]}))
    for ok, refused in tally:
        assert ok + refused == CLIENTS and ok >= QUEUE + 1 and refused > 0
    # flat after the first round (which warms the client pools and the app)
    assert max(rss[1:]) - rss[1] < 10, rss
