"""The live page at `/` in a real headless Chromium (DevTools protocol over a pipe): a run shown step by step
with the answer streaming in, cancelling from the page, and an API-key server."""
from __future__ import annotations

import urllib.parse

import pytest

pytest.importorskip("starlette")
from headless import Browser, find_chromium  # noqa: E402
from serve_util import ANSWER, CALL, PLAN_CALL, PLAN_DONE, LiveServer, fake_team  # noqa: E402

from umi_edge.engine.fake import Scripted  # noqa: E402

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (apt-get install chromium)")

STATUS = "document.getElementById('status').dataset.status"
ANSWER_JS = "(document.querySelector('.step.answer pre') || {}).textContent"


def page(s, query: str, **extra) -> str:
    return s.url + "/?" + urllib.parse.urlencode({"q": query, "run": "1", **extra})


def test_the_page_shows_a_run_live():
    team = fake_team([PLAN_CALL, PLAN_DONE], [CALL], [Scripted(ANSWER, token_delay=0.08)])
    with LiveServer({"fake": team}) as s, Browser(CHROMIUM) as b:
        b.open(page(s, "What is 2 + 40?"))
        # while the summarizer decodes, part of the answer is on the page and the run is not over
        partial = b.wait_for(f"!{STATUS} && ({ANSWER_JS} || '').length > 1 && {ANSWER_JS}", 20)
        assert ANSWER.startswith(partial) and partial != ANSWER
        assert b.wait_for(STATUS, 20) == "answered"
        cards = b.evaluate("[...document.querySelectorAll('.step')].map(e => [e.className, "
                           "e.querySelector('b').textContent, e.querySelector('pre').textContent])")
        assert [c[1] for c in cards] == ["[1] planner → caller", "[1] caller → add", "[1] observation (add)",
                                         "[2] planner → conclusion", "[2] answer"]
        assert cards[2][2] == "42" and cards[-1][2] == ANSWER
        heads = b.evaluate("[...document.querySelectorAll('.step .head span:last-child')].map(e => e.textContent)")
        assert "prompt tok" in heads[0] and "generated" in heads[0] and heads[0].endswith(" s")
        assert "answered after 2 step(s)" in b.evaluate("document.getElementById('status').textContent")
        roles = b.evaluate("[...document.querySelectorAll('#summary td:first-child')].map(e => e.textContent)")
        assert roles == ["planner", "caller", "summarizer"]
        assert b.evaluate("document.getElementById('set').value") == "fake"


def test_cancel_from_the_page():
    team = fake_team([Scripted("thinking hard. Next: caller.", delay=30)])
    with LiveServer({"fake": team}) as s, Browser(CHROMIUM) as b:
        b.open(page(s, "a slow task"))
        run_id = b.wait_for("document.body.dataset.run", 20)      # the server answered the POST
        assert list(s.state.runs) == [run_id]
        b.evaluate("document.getElementById('cancel').click()")
        assert b.wait_for(STATUS, 10) == "cancelled"
        assert s.worker().load()["running"] == 0


def test_a_server_with_a_key_asks_for_it():
    team = fake_team([PLAN_DONE], [], ["ok"])
    with LiveServer({"fake": team}, api_key="k3y") as s, Browser(CHROMIUM) as b:
        b.open(s.url + "/")
        b.wait_for("getComputedStyle(document.getElementById('key')).display !== 'none'", 20)
        b.evaluate("localStorage.setItem('umi-key', 'k3y')")
        b.open(page(s, "hello"))
        assert b.wait_for(STATUS, 20) == "answered"
        assert b.evaluate(ANSWER_JS) == "ok"
