"""Test helpers for `umi-edge serve`: the real app under uvicorn on 127.0.0.1 (a random port) in a thread,
teams of scripted fake engines, and raw HTTP helpers (stdlib only) for the wire format."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

from umi_edge import Team
from umi_edge.engine.fake import FakeEngine


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first number
        b: the second number
    """
    return a + b


def mul(a: int, b: int) -> int:
    """Multiply two integers.

    Args:
        a: the first number
        b: the second number
    """
    return a * b


PLAN_CALL = "I need the sum of 2 and 40.\n Next: caller."
CALL = 'Action: add\nAction Input: {"a": 2, "b": 40}'
PLAN_DONE = "The sum is known now.\n Next: conclusion."
ANSWER = "The sum is 42."


def fake_team(planner=(), caller=(), summarizer=(), tools=(add, mul)) -> Team:
    return Team({"planner": FakeEngine(planner, name="planner"), "caller": FakeEngine(caller, name="caller"),
                 "summarizer": FakeEngine(summarizer, name="summarizer")}, list(tools))


def sum_team(n: int = 1, **kw) -> Team:
    """A team scripted for `n` tasks of: plan a call, add 2 + 40, conclude, answer."""
    return fake_team([PLAN_CALL, PLAN_DONE] * n, [CALL] * n, [ANSWER] * n, **kw)


class LiveServer:
    """`with LiveServer({"fake": team}, max_queue=2) as s:` — s.url, s.base (…/v1), s.app."""

    def __init__(self, teams, **config):
        from umi_edge.serve.app import ServeConfig, create_app, uvicorn_server

        cfg = ServeConfig(port=0, **config)
        self.app = create_app(teams, cfg)
        self.server = uvicorn_server(self.app, cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.base = self.url + "/v1"
        while self.state.status == "loading":
            time.sleep(0.01)
        return self

    @property
    def state(self):
        return self.app.state.umi

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    def client(self, **kw):
        import openai

        return openai.OpenAI(base_url=self.base, api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)

    def worker(self, name: str = "fake"):
        return self.state.workers[name]


def http(method: str, url: str, body=None, *, headers=None, raw: bytes | None = None, timeout: float = 30):
    """(status, headers, body bytes) with urllib; error statuses are returned, not raised."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def sse_data(body: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, in order (comments and other fields skipped)."""
    out = []
    for block in body.decode().split("\n\n"):
        lines = [line[5:].lstrip(" ") for line in block.split("\n") if line.startswith("data:")]
        if lines:
            out.append("\n".join(lines))
    return out
