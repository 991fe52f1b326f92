"""`umi-edge serve` with scripted fake teams: the real app under uvicorn on 127.0.0.1, driven by the real
`openai` client (and stdlib urllib for the wire format): both tool modes, streaming, tool_choice, usage,
errors, auth, CORS, /v1/runs, the queue and cancellation."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

pytest.importorskip("starlette")
openai = pytest.importorskip("openai")

from serve_util import (ANSWER, CALL, PLAN_CALL, PLAN_DONE, LiveServer, add, fake_team, http,  # noqa: E402
                        mul, sse_data, sum_team)

from umi_edge.engine.fake import Scripted  # noqa: E402
from umi_edge.errors import ConfigError  # noqa: E402
from umi_edge.loop import run_team  # noqa: E402
from umi_edge.serve.app import ServeConfig  # noqa: E402
from umi_edge.tools import Tool, ToolSet  # noqa: E402

QUESTION = [{"role": "user", "content": "What is 2 + 40?"}]
WEATHER = {"type": "function", "function": {
    "name": "weather", "description": "The weather in a city now.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "city name"}},
                   "required": ["city"]}}}
W_PLAN = "I look up the weather in Paris.\n Next: caller."
W_CALL = 'Action: weather\nAction Input: {"city": "Paris"}'
W_DONE = "I have the weather now.\n Next: conclusion."
W_ANSWER = "It is sunny in Paris."
W_OBS = '{"sky": "sunny", "temp_c": 21}'


def weather_team(n: int = 1, **kw):
    return fake_team([W_PLAN, W_DONE] * n, [W_CALL] * n, [W_ANSWER] * n, **kw)


# --- models, health ---------------------------------------------------------------------------------------

def test_models_and_health():
    with LiveServer({"fake": sum_team(), "other": sum_team()}) as s:
        ids = [m.id for m in s.client().models.list().data]
        assert ids == ["fake", "other"]
        status, _, body = http("GET", s.url + "/health")
        health = json.loads(body)
        assert status == 200 and health["status"] == "ready"
        assert health["models"]["fake"] == {"running": 0, "waiting": 0, "max_queue": 8}


def test_health_says_loading_until_the_teams_are_loaded():
    release = threading.Event()

    def load():
        release.wait(10)
        return {"fake": sum_team()}

    server = LiveServer(load)
    server.thread.start()
    while not server.server.started:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{server.server.servers[0].sockets[0].getsockname()[1]}"
    try:
        status, headers, body = http("GET", url + "/health")
        assert status == 503 and json.loads(body)["status"] == "loading"
        status, headers, body = http("POST", url + "/v1/chat/completions", {"model": "fake", "messages": QUESTION})
        assert status == 503 and json.loads(body)["error"]["code"] == "loading" and headers["Retry-After"] == "2"
        release.set()
        deadline = time.monotonic() + 10
        while http("GET", url + "/health")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        release.set()
        server.__exit__()


# --- server-side tools ------------------------------------------------------------------------------------

def test_server_side_tools_run_the_whole_loop():
    team = sum_team()
    with LiveServer({"fake": team}) as s:
        r = s.client().chat.completions.create(model="fake", messages=QUESTION)
    choice = r.choices[0]
    assert (choice.message.content, choice.finish_reason, choice.message.tool_calls) == (ANSWER, "stop", None)
    assert r.object == "chat.completion" and r.model == "fake" and r.id.startswith("chatcmpl-")
    assert r.model_extra["umi"] == {"status": "answered", "steps": 2}
    # the tool ran in the server: its result is in the second planner prompt
    assert "observation: 42" in team.roles["planner"].prompts[1]
    # usage: summed over roles, per-role counts as an extension
    roles = r.usage.model_extra["roles"]
    assert set(roles) == {"planner", "caller", "summarizer"}
    assert r.usage.prompt_tokens == sum(u["prompt_tokens"] for u in roles.values())
    assert r.usage.completion_tokens == sum(u["completion_tokens"] for u in roles.values())
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert roles["summarizer"]["completion_tokens"] == len(ANSWER)      # the fake's tokens are characters
    assert r.usage.prompt_tokens_details.cached_tokens == sum(u["cached_tokens"] for u in roles.values()) > 0


def test_give_up_and_max_steps_say_so():
    team = fake_team(["There is no tool for stock prices.\n Next: give up.", PLAN_CALL], [CALL])
    with LiveServer({"fake": team}, max_steps=1) as s:
        c = s.client()
        r = c.chat.completions.create(model="fake", messages=[{"role": "user", "content": "AAPL price?"}])
        assert r.choices[0].finish_reason == "stop" and r.model_extra["umi"]["status"] == "gave_up"
        assert r.choices[0].message.content == "I could not answer this: There is no tool for stock prices."
        r = c.chat.completions.create(model="fake", messages=QUESTION)
        assert r.choices[0].finish_reason == "length" and r.model_extra["umi"]["status"] == "max_steps"
        assert r.choices[0].message.content == "no answer after 1 steps"


# --- client-side tools ------------------------------------------------------------------------------------

def test_client_side_tools_round_trip_rebuilds_the_exact_history():
    team = weather_team()
    with LiveServer({"fake": team}) as s:
        c = s.client()
        messages = [{"role": "system", "content": "You are helpful."},
                    {"role": "user", "content": "What is the weather in Paris?"}]
        r = c.chat.completions.create(model="fake", messages=messages, tools=[WEATHER])
        msg = r.choices[0].message
        assert r.choices[0].finish_reason == "tool_calls" and r.model_extra["umi"]["status"] == "tool_calls"
        assert msg.content == W_PLAN
        (call,) = msg.tool_calls
        assert call.type == "function" and call.id.startswith("call_")
        assert (call.function.name, json.loads(call.function.arguments)) == ("weather", {"city": "Paris"})
        assert set(r.usage.model_extra["roles"]) == {"planner", "caller"}
        messages += [msg.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": W_OBS}]
        r2 = c.chat.completions.create(model="fake", messages=messages, tools=[WEATHER])
    assert (r2.choices[0].message.content, r2.choices[0].finish_reason) == (W_ANSWER, "stop")
    assert r2.model_extra["umi"] == {"status": "answered", "steps": 2}
    # the same task run in one piece with the tool in-process sends the same prompts
    ref = weather_team()
    local = ToolSet([Tool.from_openai(WEATHER, lambda city: {"sky": "sunny", "temp_c": 21})])
    events = list(run_team("What is the weather in Paris?", ref.roles, local))
    assert events[-1].answer == W_ANSWER
    for role in ("planner", "caller", "summarizer"):
        assert team.roles[role].prompts == ref.roles[role].prompts, role


def test_client_side_tools_are_never_run_by_the_server():
    team = weather_team()
    with LiveServer({"fake": team}) as s:
        r = s.client().chat.completions.create(model="fake", messages=QUESTION, tools=[WEATHER])
    assert r.choices[0].finish_reason == "tool_calls"
    assert len(team.roles["planner"].prompts) == 1     # the run stopped at the call: no observation, no 2nd turn


def test_unconstrained_calls_the_client_cannot_run_become_faults_the_model_sees():
    team = fake_team([W_PLAN, W_PLAN], ['Action: wether\nAction Input: {"city": "Paris"}', W_CALL])
    team.constrained = False
    with LiveServer({"fake": team}) as s:
        r = s.client().chat.completions.create(model="fake", messages=QUESTION, tools=[WEATHER])
    assert r.choices[0].message.tool_calls[0].function.name == "weather"
    assert "No such function name: wether" in team.roles["planner"].prompts[1]


def test_a_call_outside_the_client_tools_never_goes_to_the_client():
    """The call grammar rules it out; should an engine not enforce it, the call is a fault the model sees."""
    team = fake_team([W_PLAN, W_PLAN] * 2, [CALL, W_CALL] * 2)
    with LiveServer({"fake": team}) as s:
        r = s.client().chat.completions.create(model="fake", messages=QUESTION, tools=[WEATHER])
        assert r.choices[0].message.tool_calls[0].function.name == "weather"
        assert "No such function name: add" in team.roles["planner"].prompts[1]
        _, _, body = http("POST", s.base + "/chat/completions",
                          {"model": "fake", "messages": QUESTION, "tools": [WEATHER], "stream": True})
    chunks = [json.loads(d) for d in sse_data(body)[:-1]]
    calls = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [tc["function"].get("name") for tc in calls if "id" in tc] == ["weather"]
    assert json.loads("".join(tc["function"]["arguments"] for tc in calls)) == {"city": "Paris"}


def test_a_conversation_after_an_answer_continues_as_a_new_user_turn():
    team = fake_team([PLAN_DONE], [], ["84."])
    with LiveServer({"fake": team}) as s:
        r = s.client().chat.completions.create(model="fake", messages=[
            *QUESTION, {"role": "assistant", "content": "42."}, {"role": "user", "content": "Twice that?"}])
    assert r.choices[0].message.content == "84."
    assert "user: What is 2 + 40?</s>conclusion: 42.</s>user: Twice that?</s>" in team.roles["planner"].prompts[0]


# --- streaming --------------------------------------------------------------------------------------------

def test_streaming_answer_tokens_as_they_decode():
    team = fake_team([PLAN_CALL, PLAN_DONE], [CALL], [Scripted(ANSWER, token_delay=0.02)])
    with LiveServer({"fake": team}) as s:
        stream = s.client().chat.completions.create(model="fake", messages=QUESTION, stream=True,
                                                     stream_options={"include_usage": True})
        arrivals, pieces, chunks = [], [], []
        for chunk in stream:
            chunks.append(chunk)
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic())
                pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces) == ANSWER and len(pieces) >= 10
    assert arrivals[-1] - arrivals[0] > 0.15                  # they came while the summarizer decoded
    assert chunks[0].choices[0].delta.role == "assistant"
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1 and final[0].choices[0].finish_reason == "stop"
    assert final[0].model_extra["umi"]["status"] == "answered"
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage.completion_tokens > 0 and "roles" in usage.usage.model_extra
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_tool_call_deltas_carry_index_and_a_first_chunk_with_id_type_and_name():
    team = fake_team([W_PLAN], [Scripted(W_CALL, token_delay=0.005)])
    with LiveServer({"fake": team}) as s:
        status, headers, body = http("POST", s.base + "/chat/completions",
                                     {"model": "fake", "messages": QUESTION, "tools": [WEATHER], "stream": True})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    data = sse_data(body)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert len(calls) > 3                                    # the arguments stream in pieces
    assert all(tc["index"] == 0 for tc in calls)
    first, rest = calls[0], calls[1:]
    assert first["id"].startswith("call_") and first["type"] == "function"
    assert first["function"] == {"name": "weather", "arguments": ""}
    assert all(set(tc) == {"index", "function"} and set(tc["function"]) == {"arguments"} for tc in rest)
    assert json.loads("".join(tc["function"]["arguments"] for tc in rest)) == {"city": "Paris"}
    assert "".join(d.get("content") or "" for d in deltas) == W_PLAN   # the plan comes before the call
    content_at = max(i for i, d in enumerate(deltas) if d.get("content"))
    assert content_at < min(i for i, d in enumerate(deltas) if d.get("tool_calls"))
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_the_openai_stream_helper_accumulates_the_call():
    """openai's stream helper assembles tool calls by `index` (and fails without it)."""
    team = weather_team()
    with LiveServer({"fake": team}) as s:
        with s.client().chat.completions.stream(model="fake", messages=QUESTION, tools=[WEATHER]) as stream:
            events = [e.type for e in stream]
            final = stream.get_final_completion()
    msg = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls" and msg.content == W_PLAN
    assert msg.tool_calls[0].function.name == "weather"
    assert json.loads(msg.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert "tool_calls.function.arguments.delta" in events and "tool_calls.function.arguments.done" in events


def test_unconstrained_streams_send_the_call_only_once_the_client_can_run_it():
    team = fake_team([W_PLAN, W_PLAN], ['Action: weather\nAction Input: {"town": 1}', W_CALL])
    team.constrained = False
    with LiveServer({"fake": team}) as s:
        _, _, body = http("POST", s.base + "/chat/completions",
                          {"model": "fake", "messages": QUESTION, "tools": [WEATHER], "stream": True})
    chunks = [json.loads(d) for d in sse_data(body)[:-1]]
    calls = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "weather"
    assert json.loads("".join(tc["function"]["arguments"] for tc in calls)) == {"city": "Paris"}
    contents = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert [x for x in contents if x] == [W_PLAN]


# --- tool_choice ------------------------------------------------------------------------------------------

def test_tool_choice_required_turns_a_conclusion_into_a_call():
    team = fake_team(["I can answer directly.\n Next: conclusion.", "\n Next: caller."], [W_CALL])
    with LiveServer({"fake": team}) as s:
        r = s.client().chat.completions.create(model="fake", messages=QUESTION, tools=[WEATHER],
                                               tool_choice="required")
    assert r.choices[0].finish_reason == "tool_calls"
    assert r.choices[0].message.content == "I can answer directly.\n Next: caller."
    assert team.roles["planner"].grammars[1] == 'root ::= "\\n"? ( " Next: caller." )\n'


def test_tool_choice_none_answers_without_a_call():
    team = fake_team([W_PLAN, " Next: conclusion."], [], ["I cannot check the weather."])
    with LiveServer({"fake": team}) as s:
        r = s.client().chat.completions.create(model="fake", messages=QUESTION, tools=[WEATHER], tool_choice="none")
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.tool_calls is None
    assert r.choices[0].message.content == "I cannot check the weather."
    assert not team.roles["caller"].prompts


def test_tool_choice_named_bounds_the_call_grammar():
    from umi_edge.protocol.grammar import caller_grammar

    team = fake_team([PLAN_CALL], ['Action: mul\nAction Input: {"a": 6, "b": 7}'])
    spec = lambda f: {"type": "function", "function": {"name": f.name, "description": f.description,  # noqa: E731
                                                       "parameters": f.parameters}}
    tools = [spec(Tool.from_function(add)), spec(Tool.from_function(mul))]
    with LiveServer({"fake": team}) as s:
        r = s.client().chat.completions.create(model="fake", messages=QUESTION, tools=tools,
                                               tool_choice={"type": "function", "function": {"name": "mul"}})
    assert r.choices[0].message.tool_calls[0].function.name == "mul"
    (grammar,) = team.roles["caller"].grammars
    assert grammar == caller_grammar([Tool.from_openai(tools[1])], max_tokens=512)
    assert '"Name": "add"' in team.roles["caller"].prompts[0]     # the caller still sees every tool


def test_tool_choice_applies_to_server_side_tools_too():
    team = fake_team(["Easy.\n Next: conclusion.", " Next: caller.", PLAN_DONE], [CALL], [ANSWER])
    with LiveServer({"fake": team}) as s:
        r = s.client().chat.completions.create(model="fake", messages=QUESTION, tool_choice="required")
    assert r.choices[0].message.content == ANSWER and "observation: 42" in team.roles["planner"].prompts[-1]


# --- errors -----------------------------------------------------------------------------------------------

def _error(s, body, **kw):
    status, _, raw = http("POST", s.base + "/chat/completions", body, **kw)
    return status, json.loads(raw)["error"]


def test_each_bad_request_names_its_field():
    tool_reply = {"role": "assistant", "content": "plan", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]}
    cases = [
        ({"messages": QUESTION}, "model"),
        ({"model": "nope", "messages": QUESTION}, "model"),
        ({"model": "fake"}, "messages"),
        ({"model": "fake", "messages": [{"role": "assistant", "content": "hi"}]}, "messages[0]"),
        ({"model": "fake", "messages": [*QUESTION, {"role": "assistant", "content": "42"}]}, "messages"),
        ({"model": "fake", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": "fake", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
         "messages[0].content[0]"),
        ({"model": "fake", "messages": [{"role": "user", "content": "  "}]}, "messages[0].content"),
        ({"model": "fake", "tools": [WEATHER], "messages": [*QUESTION, tool_reply,
                                                            {"role": "tool", "tool_call_id": "c9", "content": "x"}]},
         "messages[2].tool_call_id"),
        ({"model": "fake", "tools": [WEATHER], "messages": [*QUESTION, tool_reply, *QUESTION]},
         "messages[1].tool_calls"),
        ({"model": "fake", "tools": [WEATHER], "messages": [*QUESTION, {**tool_reply, "tool_calls": [
            tool_reply["tool_calls"][0], {**tool_reply["tool_calls"][0], "id": "c2"}]}]}, "messages[1].tool_calls"),
        ({"model": "fake", "messages": [*QUESTION, tool_reply]}, "messages[1].tool_calls[0].function.name"),
        ({"model": "fake", "messages": QUESTION, "tools": [{"type": "function", "function": {
            "name": "f", "parameters": {"type": "array", "items": {}}}}]}, "tools[0].function.parameters"),
        ({"model": "fake", "messages": QUESTION, "tools": [{"type": "function", "function": {
            "name": "f", "parameters": {"type": "object", "properties": {"x": {"type": 12}}}}}]},
         "tools[0].function.parameters"),
        ({"model": "fake", "messages": QUESTION, "tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"model": "fake", "messages": QUESTION, "tools": [{"type": "function", "function": {"name": "a b"}}]},
         "tools[0].function.name"),
        ({"model": "fake", "messages": QUESTION, "tools": []}, "tools"),
        ({"model": "fake", "messages": QUESTION, "tool_choice": "always"}, "tool_choice"),
        ({"model": "fake", "messages": QUESTION, "tools": [WEATHER],
          "tool_choice": {"type": "function", "function": {"name": "add"}}}, "tool_choice.function.name"),
        ({"model": "fake", "messages": QUESTION, "n": 2}, "n"),
        ({"model": "fake", "messages": QUESTION, "stream_options": {"include_usage": True}}, "stream_options"),
        ({"model": "fake", "messages": QUESTION, "stream": "yes"}, "stream"),
        ([1, 2], "body"),
    ]
    with LiveServer({"fake": sum_team()}) as s:
        for body, field in cases:
            status, err = _error(s, body)
            assert status == 400, (body, err)
            assert err["param"] == field and err["message"].startswith(field + ": "), (field, err)
            assert err["type"] == "invalid_request_error"
        status, _, raw = http("POST", s.base + "/chat/completions", raw=b'{"model": "fake", "messages": [')
        err = json.loads(raw)["error"]
        assert status == 400 and err["param"] == "body" and "not valid JSON" in err["message"]
        # the openai client raises its typed error with the same message
        with pytest.raises(openai.BadRequestError, match="tool_call_id"):
            s.client().chat.completions.create(model="fake", tools=[WEATHER], messages=[
                *QUESTION, tool_reply, {"role": "tool", "tool_call_id": "zzz", "content": "x"}])
        assert s.worker().load() == {"running": 0, "waiting": 0, "max_queue": 8}   # nothing was queued


def test_oversize_bodies_are_refused_before_they_are_read():
    with LiveServer({"fake": sum_team()}, max_body=2000) as s:
        big = {"model": "fake", "messages": [{"role": "user", "content": "x" * 5000}]}
        status, err = _error(s, big)
        assert status == 413 and err["param"] == "body" and err["code"] == "body_too_large"
        assert "--max-body" in err["message"]
        # without a Content-Length (chunked), the count stops at the limit too
        with socket.create_connection(("127.0.0.1", int(s.url.rsplit(":", 1)[1]))) as sock:
            payload = json.dumps(big).encode()
            head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            sock.sendall(head + b"%x\r\n" % len(payload) + payload + b"\r\n0\r\n\r\n")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 413") and b"body_too_large" in reply


def test_unknown_routes_and_methods_are_openai_shaped():
    with LiveServer({"fake": sum_team()}) as s:
        status, _, raw = http("GET", s.base + "/completions")
        assert status == 404 and json.loads(raw)["error"]["code"] == "not_found"
        status, _, raw = http("GET", s.base + "/chat/completions")
        assert status == 405 and "error" in json.loads(raw)


def test_an_engine_failure_is_a_500_error_object():
    team = fake_team([Scripted(error=RuntimeError("the GPU caught fire"))])
    with LiveServer({"fake": team}) as s:
        status, err = _error(s, {"model": "fake", "messages": QUESTION})
        assert status == 500 and err["type"] == "server_error" and "the GPU caught fire" in err["message"]
        team.roles["planner"].push(Scripted(error=RuntimeError("again")))
        status, _, body = http("POST", s.base + "/chat/completions",
                               {"model": "fake", "messages": QUESTION, "stream": True})
    data = sse_data(body)
    assert status == 200 and data[-1] == "[DONE]"
    assert json.loads(data[-2])["error"]["type"] == "server_error" and "again" in data[-2]


def test_the_request_budget_ends_a_run_with_a_clean_error():
    team = fake_team([Scripted("slow", delay=30)] * 2)
    with LiveServer({"fake": team}, budget_seconds=0.3) as s:
        t0 = time.monotonic()
        status, headers, raw = http("POST", s.base + "/chat/completions", {"model": "fake", "messages": QUESTION})
        assert time.monotonic() - t0 < 5
        err = json.loads(raw)["error"]
        assert status == 504 and err["code"] == "budget_exceeded" and headers["x-should-retry"] == "false"
        status, _, body = http("POST", s.base + "/chat/completions",
                               {"model": "fake", "messages": QUESTION, "stream": True})
    data = sse_data(body)
    assert data[-1] == "[DONE]" and json.loads(data[-2])["error"]["code"] == "budget_exceeded"


# --- auth, binding, CORS ----------------------------------------------------------------------------------

def test_api_key_is_required_when_set():
    with LiveServer({"fake": sum_team()}, api_key="s3cret") as s:
        with pytest.raises(openai.AuthenticationError):
            s.client(api_key="wrong").models.list()
        status, headers, raw = http("GET", s.base + "/models")
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
        assert json.loads(raw)["error"]["code"] == "invalid_api_key"
        assert [m.id for m in s.client(api_key="s3cret").models.list()] == ["fake"]
        assert http("GET", s.url + "/health")[0] == 200 and http("GET", s.url + "/")[0] == 200


def test_binding_beyond_loopback_needs_a_key():
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.com"):
        with pytest.raises(ConfigError, match="--api-key"):
            ServeConfig(host=host).check()
        ServeConfig(host=host, api_key="k").check()
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        ServeConfig(host=host).check()


def test_cors_only_for_the_given_origins():
    origin = {"Origin": "http://app.example"}
    with LiveServer({"fake": sum_team()}) as s:
        _, headers, _ = http("GET", s.base + "/models", headers=origin)
        assert "access-control-allow-origin" not in {k.lower() for k in headers}
    with LiveServer({"fake": sum_team()}, cors_origins=("http://app.example",), api_key="k") as s:
        status, headers, _ = http("OPTIONS", s.base + "/chat/completions", headers={
            **origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"})
        assert status == 200 and headers["access-control-allow-origin"] == "http://app.example"
        _, headers, _ = http("GET", s.base + "/models", headers={**origin, "Authorization": "Bearer k"})
        assert headers["access-control-allow-origin"] == "http://app.example"
        _, headers, _ = http("GET", s.base + "/models", headers={"Origin": "http://evil.example",
                                                                 "Authorization": "Bearer k"})
        assert "access-control-allow-origin" not in {k.lower() for k in headers}


# --- the wire format with the standard library only --------------------------------------------------------

def test_wire_format_with_urllib():
    with LiveServer({"fake": sum_team(2)}) as s:
        status, headers, raw = http("POST", s.base + "/chat/completions", {"model": "fake", "messages": QUESTION})
        assert status == 200 and headers["Content-Type"] == "application/json"
        body = json.loads(raw)
        assert set(body) == {"id", "object", "created", "model", "choices", "usage", "umi"}
        assert body["choices"][0]["message"] == {"role": "assistant", "content": ANSWER}
        status, headers, raw = http("POST", s.base + "/chat/completions",
                                    {"model": "fake", "messages": QUESTION, "stream": True})
    text = raw.decode()
    assert headers["Content-Type"].startswith("text/event-stream") and headers["Cache-Control"] == "no-store"
    blocks = [b for b in text.split("\n\n") if b]
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks)   # one data line per event
    assert blocks[-1] == "data: [DONE]" and text.endswith("data: [DONE]\n\n")
    chunks = [json.loads(b[6:]) for b in blocks[:-1]]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]} and all(c["object"] == "chat.completion.chunk"
                                                                  for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == ANSWER


# --- /v1/runs: the typed event stream ---------------------------------------------------------------------

def _plain(d: dict) -> dict:
    d = {k: v for k, v in d.items() if k not in ("seconds", "usage_by_role")}
    if "usage" in d:
        d["usage"] = {k: v for k, v in d["usage"].items() if not k.endswith("seconds")}
    return d


def test_runs_stream_the_events_exactly_as_run_json_prints_them():
    team = sum_team()
    with LiveServer({"fake": team}) as s:
        status, headers, raw = http("POST", s.base + "/runs", {"query": "What is 2 + 40?"})
    assert status == 200 and len(headers["X-Run-Id"]) == 32
    got = [json.loads(d) for d in sse_data(raw)]
    ref = sum_team()
    want = [json.loads(json.dumps(e.to_dict(), ensure_ascii=False, default=str))
            for e in ref.run("What is 2 + 40?")]
    assert [_plain(d) for d in got] == [_plain(d) for d in want]
    assert got[-1]["event"] == "outcome" and got[-1]["answer"] == ANSWER


def test_runs_can_stream_tokens_pick_tools_and_refuse_bad_input():
    team = sum_team()
    with LiveServer({"fake": team}) as s:
        _, _, raw = http("POST", s.base + "/runs", {"query": "q", "stream_tokens": True, "tools": ["add"]})
        events = [json.loads(d) for d in sse_data(raw)]
        tokens = [e["text"] for e in events if e["event"] == "token" and e["role"] == "summarizer"]
        assert "".join(tokens) == ANSWER
        assert '"Name": "mul"' not in team.roles["planner"].prompts[0]
        for body, field in (({}, "query"), ({"query": "q", "set": "x"}, "set"), ({"query": "q", "tools": ["rm"]},
                                                                                   "tools[0]")):
            status, _, raw = http("POST", s.base + "/runs", body)
            assert status == 400 and json.loads(raw)["error"]["param"] == field


def test_delete_cancels_a_run():
    team = fake_team([Scripted("slow. Next: caller.", delay=30)])
    with LiveServer({"fake": team}) as s:
        box = {}

        def start():
            box["reply"] = http("POST", s.base + "/runs", {"query": "q"})

        t = threading.Thread(target=start)
        t.start()
        while not s.state.runs:
            time.sleep(0.01)
        (run_id,) = list(s.state.runs)
        t0 = time.monotonic()
        status, _, raw = http("DELETE", s.base + f"/runs/{run_id}")
        assert status == 200 and json.loads(raw) == {"id": run_id, "object": "run", "cancelled": True}
        t.join(10)
        assert time.monotonic() - t0 < 1
        last = json.loads(sse_data(box["reply"][2])[-1])
        assert last["event"] == "outcome" and last["status"] == "cancelled"
        status, _, raw = http("DELETE", s.base + f"/runs/{run_id}")
        assert status == 404 and json.loads(raw)["error"]["param"] == "run_id"


# --- queue, disconnects --------------------------------------------------------------------------------------

def test_a_full_queue_answers_429_with_retry_after():
    team = fake_team([Scripted("slow. Next: give up.", delay=1.0)] * 3)
    with LiveServer({"fake": team}, max_queue=1) as s:
        results = []
        threads = [threading.Thread(target=lambda: results.append(
            http("POST", s.base + "/chat/completions", {"model": "fake", "messages": QUESTION})))
            for _ in range(2)]
        for t in threads:
            t.start()
            while sum(s.worker().load()[k] for k in ("running", "waiting")) < len(results) + threads.index(t) + 1:
                time.sleep(0.01)
        status, headers, raw = http("POST", s.base + "/chat/completions", {"model": "fake", "messages": QUESTION})
        assert status == 429 and int(headers["Retry-After"]) >= 1
        err = json.loads(raw)["error"]
        assert err["type"] == "rate_limit_error" and err["code"] == "queue_full"
        with pytest.raises(openai.RateLimitError):
            s.client().chat.completions.create(model="fake", messages=QUESTION)
        for t in threads:
            t.join(10)
    assert sorted(r[0] for r in results) == [200, 200]


def test_a_client_that_disconnects_frees_the_team_within_a_second():
    team = fake_team([PLAN_DONE, PLAN_DONE, PLAN_DONE],
                     summarizer=[Scripted("x" * 2000, token_delay=0.01), Scripted("y" * 2000, token_delay=0.01),
                                 "next"])
    with LiveServer({"fake": team}) as s:
        port = int(s.url.rsplit(":", 1)[1])
        # streaming: read a few chunks, then hang up
        stream = s.client().chat.completions.create(model="fake", messages=QUESTION, stream=True)
        for i, _ in enumerate(stream):
            if i == 5:
                break
        stream.close()
        t0 = time.monotonic()
        while s.worker().load()["running"]:
            assert time.monotonic() - t0 < 1.0
            time.sleep(0.01)
        # non-streaming: send the request and hang up without reading
        with socket.create_connection(("127.0.0.1", port)) as sock:
            payload = json.dumps({"model": "fake", "messages": QUESTION}).encode()
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
            while not s.worker().load()["running"]:
                time.sleep(0.01)
            time.sleep(0.2)
        t0 = time.monotonic()
        while s.worker().load()["running"]:
            assert time.monotonic() - t0 < 1.0
            time.sleep(0.01)
        r = s.client().chat.completions.create(model="fake", messages=QUESTION)
    assert r.choices[0].message.content == "next"
    assert len(team.roles["summarizer"].prompts) == 3


def test_stopping_the_server_ends_every_request_with_an_error_not_a_cut():
    team = fake_team([Scripted("slow. Next: give up.", delay=60)] * 3)
    s = LiveServer({"fake": team}, max_queue=2).__enter__()
    replies = {}

    def call(key, path, body):
        replies[key] = http("POST", s.base + path, body)

    threads = [threading.Thread(target=call, args=("stream", "/chat/completions",
                                                   {"model": "fake", "messages": QUESTION, "stream": True}))]
    threads.append(threading.Thread(target=call, args=("plain", "/chat/completions",
                                                       {"model": "fake", "messages": QUESTION})))
    threads.append(threading.Thread(target=call, args=("run", "/runs", {"query": "q"})))
    for k, t in enumerate(threads):
        t.start()
        while sum(s.worker().load()[x] for x in ("running", "waiting")) < k + 1:
            time.sleep(0.01)
    t0 = time.monotonic()
    s.__exit__()
    for t in threads:
        t.join(10)
    assert time.monotonic() - t0 < 5
    status, _, body = replies["stream"]
    data = sse_data(body)
    assert status == 200 and data[-1] == "[DONE]" and json.loads(data[-2])["error"]["code"] == "shutting_down"
    status, _, body = replies["plain"]
    assert status == 503 and json.loads(body)["error"]["code"] == "shutting_down"
    status, _, body = replies["run"]
    last = json.loads(sse_data(body)[-1])
    assert last["event"] == "outcome" and last["status"] == "cancelled" and "shutting down" in last["reason"]
