"""Remote role engines against real servers started here on 127.0.0.1: llama-cpp-python's own server serving a
tiny GGUF built by the test (grammar enforced server-side; the same greedy task gives the same calls local vs
remote; a mixed team), and a stdlib server speaking llama-server's, vLLM's, OpenAI's and Ollama's documented
wire shapes (request mapping, token accounting, faults, the one connect retry, cancel)."""
from __future__ import annotations

import json
import textwrap
import threading
import time

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("llama_cpp.server", reason="llama-cpp-python's server extra (the test extra installs it)")

from remote_util import CannedServer, llama_cpp_python_server, sse, write_ascii_llama  # noqa: E402

from umi_edge import Team  # noqa: E402
from umi_edge.engine.base import Sampling  # noqa: E402
from umi_edge.engine.fake import FakeEngine  # noqa: E402
from umi_edge.engine.remote import RemoteRole, RemoteSpec  # noqa: E402
from umi_edge.engine.vocab import Vocab  # noqa: E402
from umi_edge.errors import ConfigError, EngineError  # noqa: E402
from umi_edge.events import Call, Error, Notice, Outcome, Plan  # noqa: E402
from umi_edge.loop import Limits, run_team  # noqa: E402
from umi_edge.protocol import get_protocol  # noqa: E402
from umi_edge.registry import load_registry, resolve_set  # noqa: E402
from umi_edge.tools import parse_arguments  # noqa: E402
from umi_edge.tools.demo import TOOLS  # noqa: E402

PLANS = ["I should look up a country first.\n Next: caller.", "Now compute something.\n Next: caller.",
         "I have what I need.\n Next: conclusion."]


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("remote") / "ascii.gguf"
    write_ascii_llama(path, seed=3)
    return path


@pytest.fixture(scope="module")
def server(gguf, tmp_path_factory):
    with llama_cpp_python_server(gguf, tmp_path_factory.mktemp("log") / "server.log", n_ctx=2048) as s:
        yield s


@pytest.fixture(scope="module")
def vocab(gguf):
    import contextlib

    with contextlib.ExitStack() as stack:
        yield Vocab.load(gguf, stack)


@pytest.fixture(scope="module")
def local(gguf):
    from umi_edge.engine.llama import LlamaBackend

    with LlamaBackend() as backend:
        yield backend, backend.load_model(gguf)


def remote(url, vocab, name="caller", server="llama-cpp-python", n_ctx=2048, **kw) -> RemoteRole:
    return RemoteRole(name, RemoteSpec(base_url=url, server=server, **kw), vocab, n_ctx=n_ctx)


def calls(events):
    return [(e.tool, e.arguments, e.text) for e in events if isinstance(e, Call)]


# -- llama-cpp-python's server: exactness, grammar, mixed team ---------------------------------------------------

def test_same_greedy_task_gives_the_same_calls_local_and_remote(server, vocab, local):
    """The caller under the tool-call grammar, greedy: enforced server-side, every call is a registered tool with
    schema-valid arguments, and call for call the remote caller says what the local one says."""
    backend, model = local
    caller = backend.new_role(model, name="caller-local", n_ctx=2048, n_threads=1)
    far = remote(server.url, vocab).open()
    assert far.enforces_grammar and far.describe().startswith("caller: llama-cpp-python server")
    limits = Limits(max_steps=3, caller_tokens=96)
    got = {}
    for name, engine in (("local", caller), ("remote", far)):
        team = {"planner": FakeEngine(PLANS * 2, name="planner"), "caller": engine,
                "summarizer": FakeEngine(["done"] * 2, name="summarizer")}
        events = [e for q in ("population of France?", "What is 7 times 6?")
                  for e in run_team(q, team, TOOLS, limits=limits)]
        assert not [e for e in events if isinstance(e, Error)], [e.text for e in events if isinstance(e, Error)]
        got[name] = calls(events)
    assert len(got["remote"]) == 4
    for tool, arguments, _ in got["remote"]:
        assert tool in TOOLS.names
        assert parse_arguments(arguments, TOOLS[tool].parameters)[1] is None, arguments
    assert got["remote"] == got["local"]


def test_remote_generation_matches_local_text(server, vocab, local):
    """Greedy, the server writes what the local context writes. This server streams text only, so the output
    ids are the vocab's tokenization of that text (a generated BOS, say, leaves no text to count)."""
    backend, model = local
    here = backend.new_role(model, name="planner-local", n_ctx=2048, n_threads=1)
    far = remote(server.url, vocab, name="planner").open()
    ids = get_protocol().encode(get_protocol().planner_prompt(TOOLS.docs(256), [_turn("What is 2+2?")]),
                                vocab.tokenize, vocab.bos_id, vocab.eos_id)
    a, b = here.generate(ids, max_tokens=40), far.generate(ids, max_tokens=40)
    assert (b.text, b.n_prompt, b.stop_reason) == (a.text, a.n_prompt, a.stop_reason) and len(a.text) > 10
    assert far.detokenize(b.tokens) == b.text and b.n_generated == a.n_generated   # the server counts
    # cut to fit n_ctx the same way; llama-cpp-python's server reports no cache use: all counts as evaluated
    assert b.n_truncated == a.n_truncated == len(ids) - b.n_prompt > 0
    assert (b.n_reused, b.n_evaluated) == (0, b.n_prompt)


def _turn(query):
    from umi_edge.protocol import Turn

    return Turn("user", query)


def mixed_toml(tmp_path, gguf, url):
    """Two sets on one tiny model: `local` (every role here) and `mixed` (the planner on the server at `url`)."""
    toml = tmp_path / "models.toml"
    toml.write_text(textwrap.dedent(f"""
        [models.tiny]
        path = "{gguf}"

        [sets.local]
        model = "tiny"
        n_ctx = 2048
        threads = 1
        max_tokens = 40
        max_steps = 2

        [sets.mixed]
        model = "tiny"
        n_ctx = 2048
        threads = 1
        max_tokens = 40
        max_steps = 2
        [sets.mixed.planner]
        engine = "openai-completions"
        server = "llama-cpp-python"
        base_url = "{url}/v1"
        """))
    return toml


def test_mixed_team_planner_remote_caller_and_summarizer_local(server, gguf, tmp_path):
    """A models.toml set with the planner on the server and the caller and summarizer on the local base runs
    end to end; greedy, it makes the very same plans and calls as the all-local set."""
    toml = mixed_toml(tmp_path, gguf, server.url)
    runs = {}
    for name in ("local", "mixed"):
        with Team.load(name, models=toml) as team:
            if name == "mixed":
                planner = team.roles["planner"]
                assert isinstance(planner, RemoteRole) and planner.spec.base_url == server.url
                (model,) = team.models.values()
                assert planner.vocab._owner is model          # the vocab of the local model, not a second load
                assert not isinstance(team.roles["caller"], RemoteRole)
            runs[name] = list(team.run("What is 15% of 2,480?"))
    for name, events in runs.items():
        assert isinstance(events[-1], Outcome) and events[-1].status != "error", [e.text for e in events]
    plans = {n: [(e.text, e.route, e.route_source) for e in ev if isinstance(e, Plan)] for n, ev in runs.items()}
    assert plans["mixed"] == plans["local"] and plans["local"]
    assert calls(runs["mixed"]) == calls(runs["local"])
    usage = runs["mixed"][-1].usage_by_role["planner"]
    assert usage.prompt > 0 and usage.generated > 0


def test_trace_names_the_remote_role_and_shows_its_tokens(server, gguf, tmp_path):
    from click.testing import CliRunner

    from umi_edge.cli import cli

    toml = mixed_toml(tmp_path, gguf, server.url)
    r = CliRunner().invoke(cli, ["run", "What is 6 times 7?", "--models", str(toml), "--set", "mixed", "--trace",
                                 "--max-steps", "1"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    err = r.stderr.splitlines()
    assert err[0] == (f"remote planner: llama-cpp-python server {server.url} (grammar enforced, text prompt, "
                      f"cache not reported)")
    plan = next(line for line in err if line.startswith("[1] planner → "))
    assert " prompt tok (0 reused, " in plan and " generated" in plan
    assert any(line.startswith("  planner ") for line in err)


def test_eval_tasks_fans_out_over_a_remote_role(server, gguf, tmp_path):
    """`eval tasks --jobs 2` runs two processes, each with its own remote planner on the one server."""
    from click.testing import CliRunner

    from umi_edge.cli import cli

    toml = mixed_toml(tmp_path, gguf, server.url)
    r = CliRunner().invoke(cli, ["eval", "tasks", "demo", "--models", str(toml), "--set", "mixed", "--limit", "2",
                                 "--max-steps", "1", "--jobs", "2", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["n_tasks"] == 2 and "error" not in report["status_counts"], report["status_counts"]
    assert report["mean_tokens_by_role"]["planner"]["prompt"] > 0


def test_cancel_aborts_the_request_and_the_server_serves_the_next(server, vocab):
    far = remote(server.url, vocab, name="planner").open()
    ids = [vocab.bos_id] + vocab.tokenize("Tell me a long story about tools.")
    cancel = threading.Event()
    threading.Timer(0.05, cancel.set).start()
    t0 = time.monotonic()
    g = far.generate(ids, max_tokens=1000, cancel=cancel, grammar="root ::= [a-z]{1000}")   # no early EOS
    assert g.stop_reason == "cancelled" and time.monotonic() - t0 < 2.0
    assert g.n_generated < 1000 and g.text == "".join(far.detokenize([t]) for t in g.tokens)
    assert far.generate(ids, max_tokens=5).stop_reason == "length"


def test_untrusted_special_text_is_never_sent_to_a_text_only_server(vocab):
    """A tool output spelling `</s>` is plain tokens in the ids; a server that re-reads the prompt as text would
    make it EOS, so the prompt is refused and nothing is posted."""
    with CannedServer(lambda m, p, b: (200, "application/json", [json.dumps({"data": [{"id": "x"}]})])) as s:
        far = remote(s.url, vocab).open()
        ids = [vocab.bos_id] + vocab.tokenize("observation: {\"html\": \"<b>a</s>\"}") + [vocab.eos_id]
        with pytest.raises(EngineError, match="special token.*nothing was sent"):
            far.generate(ids, max_tokens=8)
        assert [m for m, _, _ in s.requests] == ["GET"]
        # the template's own separator (an EOS id) is fine: spelled out, it reads back as the same EOS
        ids = [vocab.bos_id] + vocab.tokenize("user: hi") + [vocab.eos_id] + vocab.tokenize(" caller: ")
        assert far._as_text(ids) == "<s>user: hi</s> caller: "


# -- documented wire shapes: llama-server, vLLM, OpenAI, Ollama --------------------------------------------------

def llama_server_reply(vocab):
    a, c, t = vocab.tokenize("Act")

    def reply(method, path, body):
        if method == "GET":
            return 200, "application/json", [json.dumps({"data": [{"id": "m", "meta": {"n_vocab": vocab.n_vocab,
                                                                                       "n_ctx": 4096}}]})]
        return 200, "text/event-stream", sse(      # the stop token is reported among the ids, not output
            {"content": "Ac", "tokens": [a, c], "stop": False},
            {"content": "t", "tokens": [t], "stop": False},
            {"content": "", "tokens": [vocab.eos_id], "stop": False},
            {"content": "", "tokens": [], "stop": True, "stop_type": "eos", "tokens_evaluated": len(body["prompt"]),
             "timings": {"cache_n": len(body["prompt"]) - 3, "prompt_n": 3, "predicted_n": 4}}, done=False)
    return reply


def test_llama_server_request_and_accounting(vocab):
    with CannedServer(llama_server_reply(vocab)) as s:
        far = remote(s.url, vocab, server="llama.cpp", slot=2, cache_prompt=True).open()
        ids = [vocab.bos_id] + vocab.tokenize("hello") + [vocab.eos_id] + vocab.tokenize(" caller: ")
        got = []
        g = far.generate(ids, max_tokens=30, grammar='root ::= "Act"', on_token=got.append)
    (_, path, body), = [r for r in s.requests if r[0] == "POST"]
    assert path == "/completion" and body["prompt"] == ids           # token ids, no chat template
    assert body["grammar"] == 'root ::= "Act"' and body["id_slot"] == 2 and body["cache_prompt"] is True
    assert body["n_predict"] == 30 and body["temperature"] == 0.0 and body["samplers"][-1] == "temperature"
    assert body["repeat_penalty"] == 1.0 and body["return_tokens"] is True and body["stream"] is True
    assert (g.text, g.tokens, got, g.stop_reason) == ("Act", tuple(vocab.tokenize("Act")), list(g.tokens), "eos")
    assert (g.n_prompt, g.n_reused, g.n_evaluated, g.n_generated) == (len(ids), len(ids) - 3, 3, 3)


# The documented CompletionRequest fields of vLLM (vllm/entrypoints/openai/completion/protocol.py, 2026): a
# request naming anything else would be refused by its validation.
VLLM_FIELDS = {
    "model", "prompt", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n", "presence_penalty",
    "seed", "stop", "stream", "stream_options", "suffix", "temperature", "top_p", "user", "use_beam_search", "top_k",
    "min_p", "repetition_penalty", "length_penalty", "stop_token_ids", "include_stop_str_in_output", "ignore_eos",
    "min_tokens", "skip_special_tokens", "spaces_between_special_tokens", "truncate_prompt_tokens",
    "allowed_token_ids", "prompt_logprobs", "bad_words", "add_special_tokens", "response_format",
    "structured_outputs", "priority", "request_id", "return_tokens_as_token_ids", "return_token_ids", "cache_salt",
}
VLLM_STRUCTURED = {"json", "regex", "choice", "grammar", "json_object", "structural_tag", "whitespace_pattern"}


def vllm_reply(vocab):
    ac, t = vocab.tokenize("Ac"), vocab.tokenize("t")

    def reply(method, path, body):
        if method == "GET":
            return 200, "application/json", [json.dumps({"object": "list", "data": [
                {"id": "org/planner-13b", "object": "model", "max_model_len": 4096}]})]
        return 200, "text/event-stream", sse(
            {"id": "c", "object": "text_completion", "model": "org/planner-13b",
             "choices": [{"index": 0, "text": "Ac", "token_ids": ac, "finish_reason": None}]},
            {"id": "c", "object": "text_completion", "model": "org/planner-13b",
             "choices": [{"index": 0, "text": "t", "token_ids": t, "finish_reason": "stop", "stop_reason": None}]},
            {"id": "c", "object": "text_completion", "model": "org/planner-13b", "choices": [],
             "usage": {"prompt_tokens": len(body["prompt"]), "completion_tokens": 3,
                       "total_tokens": len(body["prompt"]) + 3,
                       "prompt_tokens_details": {"cached_tokens": len(body["prompt"]) - 2}}})
    return reply


def test_vllm_request_follows_its_documented_shape(vocab):
    with CannedServer(vllm_reply(vocab)) as s:
        far = RemoteRole("caller", RemoteSpec(base_url=s.url, server="vllm", served_model="org/planner-13b"), vocab,
                         n_ctx=2048, sampling=Sampling(temperature=0.5, top_k=0, min_p=0.05, seed=7)).open()
        ids = [vocab.bos_id] + vocab.tokenize("hello") + [vocab.eos_id]
        g = far.generate(ids, max_tokens=16, grammar='root ::= "Act"')
        far.generate(ids, max_tokens=16)
    (_, p1, b1), (_, p2, b2) = [r for r in s.requests if r[0] == "POST"]
    assert p1 == "/v1/completions" and set(b1) <= VLLM_FIELDS, set(b1) - VLLM_FIELDS
    assert b1["prompt"] == ids and b1["model"] == "org/planner-13b" and b1["max_tokens"] == 16
    assert b1["structured_outputs"] == {"grammar": 'root ::= "Act"'} and set(b1["structured_outputs"]) <= VLLM_STRUCTURED
    assert (b1["top_k"], b1["min_p"], b1["temperature"], b1["repetition_penalty"]) == (-1, 0.05, 0.5, 1.0)
    assert b1["return_token_ids"] is True and b1["stream_options"] == {"include_usage": True}
    assert (b1["seed"], b2["seed"]) == (7, 8)          # sampled: a fresh draw per call, as the local stream goes on
    assert "structured_outputs" not in b2
    assert (g.text, g.tokens, g.stop_reason) == ("Act", tuple(vocab.tokenize("Act")), "eos")
    assert (g.n_reused, g.n_evaluated) == (len(ids) - 2, 2)


def test_openai_and_ollama_shapes_and_their_missing_grammar(vocab):
    def reply(method, path, body):
        if path == "/api/show":
            return 200, "application/json", [json.dumps({"modelfile": "", "details": {}})]
        if path == "/api/generate":
            return 200, "application/x-ndjson", [json.dumps({"response": "Ac", "done": False}) + "\n",
                                                  json.dumps({"response": "t", "done": True, "done_reason": "length",
                                                              "prompt_eval_count": 5, "eval_count": 2}) + "\n"]
        if method == "GET":
            return 200, "application/json", [json.dumps({"data": [{"id": "gpt-x"}]})]
        return vllm_reply(vocab)(method, path, body)

    with CannedServer(reply) as s:
        ids = [vocab.bos_id] + vocab.tokenize("hello")
        openai = remote(s.url, vocab, server="openai", served_model="gpt-x").open()
        assert not openai.enforces_grammar
        with pytest.raises(ConfigError, match="cannot enforce a grammar"):
            openai.generate(ids, max_tokens=4, grammar='root ::= "x"')
        g = openai.generate(ids, max_tokens=4)
        assert g.text == "Act" and g.tokens == tuple(vocab.tokenize("Ac") + vocab.tokenize("t"))
        ollama = remote(s.url, vocab, server="ollama", served_model="llama3").open()
        g = ollama.generate(ids, max_tokens=4)
        assert (g.text, g.stop_reason, g.n_evaluated) == ("Act", "length", 5)
    posts = {p: b for m, p, b in s.requests if m == "POST" and p != "/api/show"}
    assert set(posts["/v1/completions"]) == {"model", "prompt", "max_tokens", "stream", "stream_options", "temperature",
                                             "top_p", "seed", "presence_penalty", "frequency_penalty"}
    gen = posts["/api/generate"]
    assert gen["raw"] is True and gen["prompt"] == "<s>hello" and gen["model"] == "llama3" and "format" not in gen
    assert gen["options"]["num_predict"] == 4 and gen["options"]["num_ctx"] == 2048


def test_unenforced_grammar_runs_unconstrained_and_says_so(vocab):
    """A caller on a server without grammars gets no grammar; its calls are parsed and validated as in an
    unconstrained run, and a notice says so once."""
    call = 'Action: calculator\nAction Input: {"expression": "6 * 7"}'

    def reply(method, path, body):
        if method == "GET":
            return 200, "application/json", [json.dumps({"data": [{"id": "m"}]})]
        return 200, "text/event-stream", sse({"choices": [{"text": call, "finish_reason": "stop"}]})

    with CannedServer(reply) as s:
        team = {"planner": FakeEngine(["Compute it.\n Next: caller.", "Done.\n Next: conclusion."], name="planner"),
                "caller": remote(s.url, vocab, server="openai", served_model="m").open(),
                "summarizer": FakeEngine(["42"], name="summarizer")}
        events = list(run_team("What is 6 times 7?", team, TOOLS))
    notes = [e for e in events if isinstance(e, Notice) and e.code == "grammar_unenforced"]
    assert len(notes) == 1 and notes[0].role == "caller"
    assert calls(events) == [("calculator", '{"expression": "6 * 7"}', call)]
    assert events[-1].status == "answered"
    assert all("grammar" not in b for m, _, b in s.requests if m == "POST")


# -- faults ------------------------------------------------------------------------------------------------

def test_faults_are_engine_errors_naming_the_server(vocab):
    def fail(status, payload):
        return lambda m, p, b: ((200, "application/json", [json.dumps({"data": [{"id": "x"}]})]) if m == "GET"
                                else (status, "application/json", [payload]))

    ids = [vocab.bos_id] + vocab.tokenize("hello")
    with CannedServer(fail(500, json.dumps({"error": {"code": 500, "message": "boom"}}))) as s:
        with pytest.raises(EngineError, match=rf"caller on llama-cpp-python server {s.url}: POST /v1/completions "
                                              r"answered HTTP 500: boom; the server failed"):
            remote(s.url, vocab).open().generate(ids, max_tokens=4)
    with CannedServer(lambda m, p, b: (200, "text/event-stream", ["data: {not json\n\n"]) if m == "POST"
                      else fail(0, "")(m, p, b)) as s:
        with pytest.raises(EngineError, match="malformed response data"):
            remote(s.url, vocab).open().generate(ids, max_tokens=4)
        with pytest.raises(EngineError, match="malformed response data"):
            remote(s.url, vocab, server="openai", served_model="x").open().generate(ids, max_tokens=4)
    with CannedServer(lambda m, p, b: (200, "text/event-stream", sse({"choices": [{"text": "a"}]}, done=False))
                      if m == "POST" else fail(0, "")(m, p, b)) as s:
        with pytest.raises(EngineError, match="ended before the server said it was complete"):
            remote(s.url, vocab, server="openai", served_model="x").open().generate(ids, max_tokens=4)
    with CannedServer(lambda m, p, b: (404, "application/json", ['{"detail": "Not Found"}'])) as s:
        with pytest.raises(EngineError, match="GET /v1/models answered HTTP 404: Not Found; check base_url"):
            remote(s.url, vocab).open()


def test_a_silent_server_times_out(vocab):
    gate = threading.Event()

    def hang(method, path, body):
        if method == "GET":
            return 200, "application/json", [json.dumps({"data": [{"id": "x"}]})]
        gate.wait(5)
        return 200, "text/event-stream", []

    with CannedServer(hang) as s:
        far = remote(s.url, vocab, read_timeout=0.3).open()
        t0 = time.monotonic()
        with pytest.raises(EngineError, match="nothing received for 0.3 s; raise read_timeout"):
            far.generate([vocab.bos_id], max_tokens=4)
        assert time.monotonic() - t0 < 3
        gate.set()


def test_a_refused_connect_is_retried_once(vocab):
    down = CannedServer(lambda m, p, b: (200, "application/json", ["{}"]))
    t0 = time.monotonic()
    with pytest.raises(EngineError, match=rf"caller on llama-cpp-python server {down.url}: cannot connect "
                                          r"\(.*tried twice\); is the server running there"):
        remote(down.url, vocab).open()
    assert time.monotonic() - t0 >= 0.5                    # the retry waited once
    # a server that comes up during the retry delay is reached by the retry
    with CannedServer(lambda m, p, b: (200, "application/json", [json.dumps({"data": [{"id": "x"}]})]),
                      delay_start=0.15) as late:
        remote(late.url, vocab).open()
        assert [m for m, _, _ in late.requests] == ["GET"]


def test_an_engine_fault_ends_the_run_with_status_error(vocab):
    with CannedServer(lambda m, p, b: (200, "application/json", [json.dumps({"data": [{"id": "x"}]})]) if m == "GET"
                      else (503, "application/json", ['{"error": {"message": "loading model"}}'])) as s:
        team = {"planner": remote(s.url, vocab, name="planner").open(), "caller": FakeEngine(name="caller"),
                "summarizer": FakeEngine(name="summarizer")}
        events = list(run_team("hi", team, TOOLS))
    err = [e for e in events if isinstance(e, Error)]
    assert events[-1].status == "error" and len(err) == 1 and err[0].error_type == "EngineError"
    assert f"planner on llama-cpp-python server {s.url}" in err[0].text and "HTTP 503: loading model" in err[0].text


def test_probe_checks_vocab_and_context(vocab):
    with CannedServer(lambda m, p, b: (200, "application/json",
                                       [json.dumps({"data": [{"id": "m", "meta": {"n_vocab": 7, "n_ctx": 512}}]})])) as s:
        with pytest.raises(ConfigError, match="serves a model with 7 tokens in its vocab"):
            remote(s.url, vocab, server="llama.cpp").open()
    ok = json.dumps({"data": [{"id": "m", "meta": {"n_vocab": vocab.n_vocab, "n_ctx": 512}}]})
    with CannedServer(lambda m, p, b: (200, "application/json", [ok])) as s:
        with pytest.raises(ConfigError, match="context of 512 tokens per request, smaller than the role's n_ctx 2048; "
                                              "set n_ctx = 512"):
            remote(s.url, vocab, server="llama.cpp").open()
        remote(s.url, vocab, server="llama.cpp", n_ctx=512).open()


# -- models.toml -------------------------------------------------------------------------------------------

def _set(tmp_path, body: str):
    toml = tmp_path / "m.toml"
    toml.write_text('[models.tiny]\npath = "tiny.gguf"\n[sets.s]\nmodel = "tiny"\n' + textwrap.dedent(body))
    return resolve_set("s", registry=load_registry(toml))


def test_registry_reads_remote_roles(tmp_path):
    spec = _set(tmp_path, """
        [sets.s.planner]
        engine = "openai-completions"
        server = "vllm"
        base_url = "http://gpu-box:8000/v1/"
        served_model = "org/planner-13b"
        api_key_env = "VLLM_KEY"
        read_timeout = 60
        """)
    r = spec.roles["planner"].remote
    assert (r.base_url, r.server, r.served_model, r.api_key_env, r.read_timeout) == (
        "http://gpu-box:8000", "vllm", "org/planner-13b", "VLLM_KEY", 60)
    assert spec.roles["caller"].remote is None and spec.roles["planner"].model == "tiny"
    with pytest.raises(ConfigError, match="VLLM_KEY, which is not set; export it"):
        RemoteRole("planner", r, vocab=_NoVocab(), n_ctx=2048, env={})


class _NoVocab:
    bos_id = eos_id = n_vocab = 0


@pytest.mark.parametrize("body, message", [
    ('engine = "remote"', "engine must be one of llama, openai-completions"),
    ('base_url = "http://x"', "base_url apply only to engine = \"openai-completions\""),
    ('engine = "openai-completions"', "needs base_url"),
    ('engine = "openai-completions"\nbase_url = "ftp://x"', "must be an http:// or https:// address"),
    ('engine = "openai-completions"\nbase_url = "http://x"\nserver = "tgi"', "server must be one of llama.cpp"),
    ('engine = "openai-completions"\nbase_url = "http://x"\nserver = "vllm"', "needs served_model"),
    ('engine = "openai-completions"\nbase_url = "http://x"\nadapter = "a.gguf"', "cannot apply; load adapters"),
    ('engine = "openai-completions"\nbase_url = "http://x"\nslot = 1\nserver = "vllm"\nserved_model = "m"',
     "slot is a llama-server slot"),
    ('engine = "openai-completions"\nbase_url = "http://x"\nread_timeout = 0', "read_timeout must be a positive"),
    ('engine = "openai-completions"\nbase_url = "http://x"\ncache_prompt = 1', "cache_prompt must be a bool"),
    ('engine = "openai-completions"\nbase_url = "http://x"\nserver = "openai"\nserved_model = "m"\n'
     'sampling = { top_k = 40 }', "cannot apply top_k / min_p"),
])
def test_registry_refuses_bad_remote_settings(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        _set(tmp_path, "[sets.s.planner]\n" + body + "\n")


def test_a_local_role_cannot_share_a_remote_context(tmp_path):
    with pytest.raises(ConfigError, match="names a remote role, which has no local context"):
        _set(tmp_path, """
            [sets.s.planner]
            engine = "openai-completions"
            base_url = "http://x"
            [sets.s.caller]
            share_context = "planner"
            """)


# -- a SentencePiece vocab (the α-UMi checkpoints' Llama-2 kind) -------------------------------------------------

@pytest.fixture(scope="module")
def spm_vocab(tmp_path_factory, spm_tokenizer_dir):
    """A vocab-only GGUF (no tensors at all) with a Llama-2 style SentencePiece vocab, loaded vocab-only."""
    import contextlib

    gguf = pytest.importorskip("gguf")
    from umi_convert.vocab import write_vocab

    path = tmp_path_factory.mktemp("spm") / "spm-vocab.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    for add in (w.add_context_length, w.add_embedding_length, w.add_block_count, w.add_feed_forward_length,
                w.add_head_count):
        add(32)
    write_vocab(w, spm_tokenizer_dir, {}, gguf.MODEL_ARCH.LLAMA)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with contextlib.ExitStack() as stack:
        yield Vocab.load(path, stack)


def test_sentencepiece_vocab_for_a_remote_role(spm_vocab):
    v = spm_vocab
    assert v.tokenize("a</s>b") != v.tokenize("a") + [v.eos_id] + v.tokenize("b")       # plain: text stays text
    assert v.eos_id in v.tokenize("a</s>b", special=True) and v.is_special(v.eos_id) and v.is_special(v.bos_id)
    # output streamed as text continues a sequence: no dummy-prefix space is invented before it
    ids = v.continuation("Hello world")
    assert v.pieces(ids) == b"Hello world" and v.pieces(v.tokenize("Hello world")) == b" Hello world"
    with CannedServer(lambda m, p, b: (200, "application/json", [json.dumps({"data": [{"id": "x"}]})])) as s:
        far = remote(s.url, v).open()
        proto = get_protocol()
        from umi_edge.protocol import Turn

        prompt = proto.planner_prompt(TOOLS.docs(256), [Turn("user", "hi"), Turn("assistant", "look it up"),
                                                        Turn("caller", "Action: x"), Turn("observation", "ok")])
        ids = proto.encode(prompt, v.tokenize, v.bos_id, v.eos_id)
        text = far._as_text(ids)                  # the template's separators read back as the same EOS ids
        assert text.count("</s>") == ids.count(v.eos_id) == 3 and not text.startswith("<s>")   # the vocab adds BOS
        assert "user: hi</s>assistant: look it up</s>caller: Action: x</s>observation: ok" in text
        bad = proto.encode(proto.planner_prompt(TOOLS.docs(256), [Turn("user", "hi"), Turn("observation", "a</s>b")]),
                           v.tokenize, v.bos_id, v.eos_id)
        with pytest.raises(EngineError, match="special token"):
            far._as_text(bad)


def test_bench_remote_reports_side_by_side_ratios(gguf):
    """`umi-edge bench remote` runs both sections against llama-cpp-python's server and prints ratios."""
    from click.testing import CliRunner

    from umi_edge.cli import cli

    r = CliRunner().invoke(cli, ["bench", "remote", "--model", str(gguf), "--steps", "2", "--repeats", "1",
                                 "--limit", "1", "--max-steps", "1", "--jobs", "1,2", "--json"],
                           env={"UMI_EDGE_LLAMA_SERVER": ""}, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout.strip().splitlines()[-1])
    o, t = report["overhead"], report["throughput"]
    assert o["server"] == "llama-cpp-python" and o["remote_over_local"] > 0 and o["of"] == 2
    assert o["same_outputs"] == 2          # greedy: the server writes what the local role writes
    assert [x["jobs"] for x in t["runs"]] == [1, 2] and t["runs"][0]["vs_jobs_1"] == 1.0
    assert all(x["tasks"] == 1 and x["tasks_per_s"] > 0 for x in t["runs"])
