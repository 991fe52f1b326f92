"""Remote role engines: a role decoded by an inference server (llama.cpp's llama-server, llama-cpp-python's server,
vLLM, an OpenAI-style completions API, Ollama) behind the same RoleEngine contract as a local context.

How it stays exact:
- Ids in, as locally. The loop encodes the α-UMi prompt with the role's own vocab, loaded here without weights
  (engine/vocab.py): the template's `</s>` separators are EOS ids and untrusted text is plain tokens. Servers
  that take token ids get exactly those ids, with no chat template. Servers that take only text get it with the
  special tokens spelled out, and each prompt is first checked to read back as the same special tokens; a prompt
  that would not (a tool output spelling `</s>`) is refused, never sent.
- Each server kind declares what it can do (remote_servers.Capabilities); the loop validates the calls of a
  caller whose server cannot enforce the tool-call grammar, as in an unconstrained run, and says so.
- Answers stream: output tokens reach `on_token` as they arrive, and a cancel shuts the socket, which servers
  read as the client leaving. Connection errors, timeouts, HTTP errors and malformed answers raise EngineError
  naming the role and the server; a failed connect is retried once.

The HTTP client is the standard library's (http.client): no dependency, nothing imported until a role opens.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

from ..errors import ConfigError, EngineError
from .base import Generation, Sampling, TokenCallback
from .context import left_cut, output_limit
from .remote_servers import SERVERS, Reply
from .vocab import Vocab

LOCAL, REMOTE = "llama", "openai-completions"
ENGINES = (LOCAL, REMOTE)
REMOTE_KEYS = ("server", "base_url", "served_model", "api_key_env", "connect_timeout", "read_timeout",
               "cache_prompt", "slot")
_RETRY_DELAY = 0.5         # before the one retry of a failed connect
_MAX_ERROR_BODY = 1 << 16  # an error page is read this far for its message
_CANCEL_POLL = 0.01        # how often a running request looks at its cancel event (seconds)


@dataclass(frozen=True)
class RemoteSpec:
    """Where a remote role's server is and how to talk to it (models.toml keys of a role with
    engine = "openai-completions"); each default says why."""

    base_url: str                       # the server's root, e.g. http://127.0.0.1:8080 (a trailing /v1 is dropped)
    server: str = "llama.cpp"           # the kind: llama.cpp | llama-cpp-python | vllm | openai | ollama
    served_model: str | None = None     # the name requests give as "model" (vLLM, OpenAI, Ollama need it)
    api_key_env: str | None = None      # the environment variable holding a bearer token (never the token itself)
    connect_timeout: float = 10.0       # seconds to open a connection; a refused one is retried once
    read_timeout: float = 300.0         # seconds of silence before giving up: a long prompt on a busy CPU server
    cache_prompt: bool = True           # llama-server: reuse the slot's KV for the common prefix
    slot: int | None = None             # llama-server: pin this role to a slot (None: the server picks by prefix)


def remote_spec(layer: dict[str, Any], where: str) -> RemoteSpec | None:
    """Pops `engine` and the remote keys from a role's settings; a RemoteSpec for a remote role, None for a local
    one. Raises ConfigError naming the key for anything invalid (before any model or server is touched)."""
    engine = layer.pop("engine", LOCAL)
    given = {k: layer.pop(k) for k in REMOTE_KEYS if k in layer}
    if engine not in ENGINES:
        raise ConfigError(f"{where}: engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == LOCAL:
        if given:
            raise ConfigError(f"{where}: {', '.join(given)} apply only to engine = \"{REMOTE}\"; set engine or "
                              f"remove them")
        return None
    for key in ("adapter", "trunk_adapter", "share_context"):
        if layer.get(key) is not None:
            raise ConfigError(f"{where}: a remote role has no local context, so {key} cannot apply; load adapters "
                              f"on the server (llama-server --lora) and remove {key}")
    types = {"server": str, "base_url": str, "served_model": str, "api_key_env": str, "cache_prompt": bool,
             "slot": int, "connect_timeout": (int, float), "read_timeout": (int, float)}
    for key, value in given.items():
        if not isinstance(value, types[key]) or (key != "cache_prompt" and isinstance(value, bool)):
            raise ConfigError(f"{where}: {key} must be a {getattr(types[key], '__name__', 'number')}, got {value!r}")
    if "base_url" not in given:
        raise ConfigError(f"{where}: a remote role needs base_url, the server's root (e.g. http://127.0.0.1:8080)")
    url = urlsplit(given["base_url"])
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"{where}: base_url must be an http:// or https:// address, got {given['base_url']!r}")
    base = given["base_url"].rstrip("/")
    given["base_url"] = base[:-3] if base.endswith("/v1") else base
    kind = given.get("server", RemoteSpec.server)
    if kind not in SERVERS:
        raise ConfigError(f"{where}: server must be one of {', '.join(SERVERS)}, got {kind!r}")
    if SERVERS[kind].needs_model and not given.get("served_model"):
        raise ConfigError(f"{where}: a {kind} server needs served_model, the name it serves the model under")
    for key in ("connect_timeout", "read_timeout"):
        if key in given and given[key] <= 0:
            raise ConfigError(f"{where}: {key} must be a positive number of seconds, got {given[key]!r}")
    if given.get("slot") is not None and (kind != "llama.cpp" or given["slot"] < 0):
        raise ConfigError(f"{where}: slot is a llama-server slot number (≥ 0) and needs server = \"llama.cpp\"")
    return RemoteSpec(**given)


def check_sampling(spec: RemoteSpec, sampling: Sampling, where: str) -> None:
    """A generic OpenAI server takes temperature and top_p only: other sampling settings would be dropped."""
    if spec.server == "openai" and (sampling.top_k or sampling.min_p):
        raise ConfigError(f"{where}: an OpenAI-style server cannot apply top_k / min_p; use server = \"vllm\" or "
                          f"\"llama.cpp\" if it is one, or remove them")


class _Cancelled(Exception):
    """Internal: the request's socket was shut because its cancel event was set."""


class _Http:
    """One server's HTTP client: a fresh connection per request (a dropped keep-alive can never be mistaken for
    a dead server), one retry of a failed connect, a watcher that shuts the socket on cancel."""

    def __init__(self, base_url: str, label: str, *, api_key: str | None, connect_timeout: float,
                 read_timeout: float):
        u = urlsplit(base_url)
        self.https, self.host = u.scheme == "https", u.hostname
        self.port = u.port or (443 if self.https else 80)
        self.prefix = u.path.rstrip("/")
        self.label, self.connect_timeout, self.read_timeout = label, connect_timeout, read_timeout
        self.headers = {"Content-Type": "application/json", "Accept": "text/event-stream, application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def _connect(self):
        import http.client

        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        last: OSError | None = None
        for attempt in range(2):
            if attempt:
                time.sleep(_RETRY_DELAY)
            conn = cls(self.host, self.port, timeout=self.connect_timeout)
            try:
                conn.connect()
            except OSError as e:       # refused, unreachable, name not found, timed out, TLS failure
                conn.close()
                last = e
                continue
            conn.sock.settimeout(self.read_timeout)
            return conn
        reason = "timed out" if isinstance(last, TimeoutError) else (last.strerror or str(last)) if last else "?"
        raise EngineError(f"{self.label}: cannot connect ({reason}; tried twice); is the server running there? "
                          f"Check base_url in models.toml")

    def _fail(self, method: str, path: str, status: int, data: bytes) -> EngineError:
        from .remote_servers import _error_text

        try:
            detail = _error_text(json.loads(data)) or data.decode("utf-8", "replace")
        except ValueError:
            detail = data.decode("utf-8", "replace")
        detail = " ".join(detail.split())[:300] or "(no message)"
        hint = {401: "check the API key (api_key_env)", 403: "check the API key (api_key_env)",
                404: "check base_url (the server's root) and server (its kind)"}.get(status, "")
        if status >= 500:
            hint = "the server failed; see its log"
        return EngineError(f"{self.label}: {method} {path} answered HTTP {status}: {detail}" + (f"; {hint}" if hint else ""))

    def json(self, method: str, path: str, body: dict | None = None) -> Any:
        """One request, its JSON answer (a probe)."""
        import http.client

        conn = self._connect()
        try:
            conn.request(method, self.prefix + path, body=None if body is None else json.dumps(body).encode(),
                         headers=self.headers)
            resp = conn.getresponse()
            data = resp.read(_MAX_ERROR_BODY if resp.status != 200 else None)
        except (OSError, http.client.HTTPException) as e:
            raise EngineError(f"{self.label}: {method} {path} failed ({_reason(e, self.read_timeout)})") from None
        finally:
            conn.close()
        if resp.status != 200:
            raise self._fail(method, path, resp.status, data)
        try:
            return json.loads(data)
        except ValueError:
            raise EngineError(f"{self.label}: {method} {path} answered something that is not JSON: "
                              f"{data[:120]!r}") from None

    def stream(self, path: str, body: dict, cancel: threading.Event | None, fmt: str) -> Iterator[Any]:
        """POST `body`, yield each streamed JSON object. Raises _Cancelled once `cancel` shut the socket."""
        import http.client

        conn = self._connect()
        done, shut = threading.Event(), threading.Event()

        def watch():
            while not done.wait(_CANCEL_POLL):
                if cancel.is_set():
                    shut.set()
                    try:
                        conn.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return

        if cancel is not None:
            threading.Thread(target=watch, name="umi-remote-cancel", daemon=True).start()
        try:
            conn.request("POST", self.prefix + path, body=json.dumps(body).encode(), headers=self.headers)
            resp = conn.getresponse()
            if resp.status != 200:
                raise self._fail("POST", path, resp.status, resp.read(_MAX_ERROR_BODY))
            if fmt == "json":           # one answer at the end
                data = resp.read()
                if shut.is_set():
                    raise _Cancelled
                obj = _parse_line(data, fmt, self.label)
                if obj is not None:
                    yield obj
                return
            for raw in resp:
                obj = _parse_line(raw, fmt, self.label)
                if obj is _DONE:
                    return
                if obj is not None:
                    yield obj
            if shut.is_set():
                raise _Cancelled
        except (OSError, http.client.HTTPException) as e:
            if shut.is_set():
                raise _Cancelled from None
            raise EngineError(f"{self.label}: the request to {path} failed ({_reason(e, self.read_timeout)})") from None
        finally:
            done.set()
            conn.close()


_DONE = object()


def _parse_line(raw: bytes, fmt: str, label: str):
    """One line of a stream (or a whole "json" answer) → a JSON object, _DONE, or None (blank, comment, event)."""
    line = raw.strip()
    if not line:
        return None
    if fmt == "sse":
        if line.startswith(b":") or line.startswith(b"event:"):
            return None
        if not line.startswith(b"data:"):
            if line.startswith(b"error:"):
                line = line[len(b"error:"):]
            else:
                raise EngineError(f"{label}: malformed stream line {line[:120]!r}")
        else:
            line = line[len(b"data:"):].strip()
        if line == b"[DONE]":
            return _DONE
    try:
        obj = json.loads(line)
    except ValueError:
        raise EngineError(f"{label}: malformed response data {line[:120]!r}") from None
    from .remote_servers import _error_text

    err = _error_text(obj)
    if err is not None:
        raise EngineError(f"{label}: the server reported an error: {' '.join(err.split())[:300]}")
    return obj


def _reason(e: BaseException, read_timeout: float) -> str:
    if isinstance(e, TimeoutError):
        return f"nothing received for {read_timeout:g} s; raise read_timeout in models.toml or check the server"
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}" if text != type(e).__name__ else text


class RemoteRole:
    """A role decoded by an inference server (RoleEngine contract). Tokenizes with the served model's vocab,
    sends ids (or checked text), streams the answer back. One generation at a time, like a local context."""

    has_trunk = False

    def __init__(self, name: str, spec: RemoteSpec, vocab: Vocab, *, n_ctx: int, sampling: Sampling = Sampling(),
                 env: Mapping[str, str] | None = None):
        self.name, self.spec, self.vocab = name, spec, vocab
        self.server = SERVERS[spec.server]
        self.caps = self.server.caps
        self.n_ctx, self.sampling = n_ctx, sampling
        self.bos_id, self.eos_id = vocab.bos_id, vocab.eos_id
        self.label = f"{name} on {self.server.name} server {spec.base_url}"
        check_sampling(spec, sampling, name)
        key = None
        if spec.api_key_env:
            key = (os.environ if env is None else env).get(spec.api_key_env)
            if not key:
                raise ConfigError(f"{name}: api_key_env names {spec.api_key_env}, which is not set; export it")
        self._http = _Http(spec.base_url, self.label, api_key=key, connect_timeout=spec.connect_timeout,
                           read_timeout=spec.read_timeout)
        self._lock = threading.Lock()
        self._calls = 0
        # the server's own compute time for the last generation, where it reports one (benchmarks: wall − this
        # is what running remotely costs)
        self.last_server_seconds: float | None = None

    def __repr__(self) -> str:
        return f"RemoteRole({self.name!r}, {self.server.name} {self.spec.base_url})"

    @property
    def enforces_grammar(self) -> bool:
        """Whether generate(grammar=…) is enforced; when False the loop passes no grammar (see base.RoleEngine)."""
        return self.caps.grammar

    def describe(self) -> str:
        c = self.caps
        facts = ["grammar enforced" if c.grammar else "no grammar", "token-id prompt" if c.token_prompt else
                 "text prompt", "cache reported" if c.cached else "cache not reported"]
        model = f" model {self.spec.served_model}" if self.spec.served_model else ""
        return f"{self.name}: {self.server.name} server {self.spec.base_url}{model} ({', '.join(facts)})"

    def open(self) -> "RemoteRole":
        """Asks the server what it serves (fails early, before any task): its context per request and, where
        it says, its vocab size, which must be the local vocab's."""
        method, path, body = self.server.probe_path(self.spec)
        facts = self.server.probe(self._http.json(method, path, body), self.spec, self.label)
        n_vocab, n_ctx = facts.get("n_vocab"), facts.get("n_ctx")
        if isinstance(n_vocab, int) and n_vocab != self.vocab.n_vocab:
            raise ConfigError(f"{self.label} serves a model with {n_vocab} tokens in its vocab, but {self.vocab.path} "
                              f"has {self.vocab.n_vocab}: the role's model must be the served model (its vocab "
                              f"encodes the prompts)")
        if isinstance(n_ctx, int) and 0 < n_ctx < self.n_ctx:
            raise ConfigError(f"{self.label} has a context of {n_ctx} tokens per request, smaller than the role's "
                              f"n_ctx {self.n_ctx}; set n_ctx = {n_ctx} for {self.name} (or give the server more)")
        return self

    # -- RoleEngine ----------------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        return self.vocab.tokenize(text)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.vocab.detokenize(ids)

    def generate(self, prompt: Sequence[int], *, max_tokens: int, grammar: str | None = None,
                 cancel: threading.Event | None = None, trunk: int = 0,
                 on_token: TokenCallback | None = None) -> Generation:
        """Send `prompt` (cut to the last n_ctx - max_tokens - 8 tokens, as locally) and stream the answer.
        `trunk` is ignored: a server has no trunk adapter (has_trunk is False)."""
        prompt = list(prompt)
        if not prompt:
            raise ValueError("generate() needs a non-empty prompt (start it with bos_id)")
        if grammar is not None and not self.caps.grammar:
            raise ConfigError(f"{self.label} cannot enforce a grammar; decode this role unconstrained (the loop "
                              f"does so by itself)")
        with self._lock:
            return self._generate(prompt, max_tokens, grammar, cancel, on_token)

    def _generate(self, prompt, max_tokens, grammar, cancel, on_token) -> Generation:
        max_tokens = output_limit(self.n_ctx, max_tokens)
        prompt, n_truncated = left_cut(prompt, self.n_ctx, max_tokens)
        t0 = time.perf_counter()
        tokens: list[int] = []

        def result(stop, reply: Reply | None = None, t1=None):
            t2 = time.perf_counter()
            self.last_server_seconds = reply.server_seconds if reply is not None else None
            t1 = t2 if t1 is None else t1
            cached = min(reply.cached or 0, len(prompt)) if reply is not None else 0
            evaluated = (reply.evaluated if reply is not None and reply.evaluated is not None
                         else len(prompt) - cached if reply is not None else 0)
            # the text is the ids rendered by the vocab, as a local role renders its output (the server's own
            # rendering may differ, e.g. in llama.cpp's clean-up of spaces before punctuation)
            return Generation(text=self.vocab.detokenize(tokens), tokens=tuple(tokens), stop_reason=stop,
                              n_prompt=len(prompt),
                              n_reused=cached, n_evaluated=evaluated,
                              n_generated=(reply.n_generated if reply is not None and reply.n_generated is not None
                                           else len(tokens)),
                              n_truncated=n_truncated, prompt_seconds=t1 - t0, decode_seconds=t2 - t1)

        if cancel is not None and cancel.is_set():
            return result("cancelled")
        if max_tokens == 0:
            return result("length")
        sent = prompt if self.caps.token_prompt else self._as_text(prompt)
        seed = self.sampling.seed + (self._calls if self.sampling.temperature > 0 else 0)
        self._calls += 1    # sampled roles get a fresh draw per call, as the local random stream goes on
        path, body = self.server.request(sent, max_tokens=max_tokens, grammar=grammar, sampling=self.sampling,
                                         seed=seed, spec=self.spec, n_ctx=self.n_ctx)
        reply = Reply()
        t1 = None
        try:
            for obj in self._http.stream(path, body, cancel, self.server.stream):
                n_text, n_ids = len(reply.text), len(reply.tokens or ())
                try:
                    self.server.read(obj, reply)
                except EngineError as e:
                    raise EngineError(f"{self.label}: {e}") from None
                new_text = "".join(reply.text[n_text:])
                ids = (reply.tokens[n_ids:] if reply.tokens is not None
                       else self.vocab.continuation(new_text) if new_text else [])
                ids = [t for t in ids if not self.vocab.is_eog(t)]   # as locally: the stop token is not output
                if t1 is None and (ids or new_text):
                    t1 = time.perf_counter()
                for t in ids:
                    tokens.append(t)
                    if on_token is not None:
                        on_token(t)
        except _Cancelled:
            return result("cancelled", reply, t1)
        if not reply.done and reply.stop is None:
            raise EngineError(f"{self.label}: the answer ended before the server said it was complete")
        return result(reply.stop or "eos", reply, t1)

    def _as_text(self, ids: list[int]) -> str:
        """The prompt as a text-only server must get it, which it reads back with special-token parsing: special
        tokens spelled out, the text between them as its exact bytes (a SentencePiece vocab's dummy-prefix space
        left out, as the server adds it again after each special token), BOS left to the server when its vocab
        adds one. Refused, unsent, unless that text reads back as the same special tokens with the same text
        between them: content that spells a special token (a tool output holding `</s>`) never becomes one."""
        v = self.vocab
        body = ids[1:] if v.add_bos and ids[0] == v.bos_id else ids
        mine = _runs(v, ([v.bos_id] if v.add_bos else []) + body)
        text = "".join(run.decode("utf-8", "replace") + ("" if t is None else v.detokenize([t], special=True))
                       for run, t in _runs(v, body))
        theirs = _runs(v, ([v.bos_id] if v.add_bos else []) + v.tokenize(text, special=True))
        if [t for _, t in theirs] != [t for _, t in mine]:
            raise EngineError(f"{self.label}: the prompt holds text that this server would read as a special token "
                              f"(e.g. a tool output spelling {v.detokenize([v.eos_id], special=True)!r}); it takes "
                              f"prompts only as text, so nothing was sent. Run this role on llama-server or vLLM, "
                              f"which take token ids")
        if theirs != mine:
            raise EngineError(f"{self.label}: the prompt cannot be written as text that reads back as the same "
                              f"text (e.g. output cut inside a UTF-8 character), so nothing was sent. Run this role "
                              f"on llama-server or vLLM, which take token ids")
        return text

    def close(self) -> None:
        """Nothing is held between requests; present for symmetry with local roles."""


def _runs(vocab: Vocab, ids: Sequence[int]) -> list[tuple[bytes, int | None]]:
    """`ids` as (bytes of the plain tokens, the special token after them or None at the end): equal for two
    tokenizations that differ only in how plain text was split. Each run's bytes are its raw pieces, less the
    one leading space a SentencePiece vocab's tokenizer puts before every run of text it starts."""
    out, run = [], []
    for t in list(ids) + [None]:
        if t is None or vocab.is_special(t):
            raw = vocab.pieces(run)
            if vocab.space_prefix and raw.startswith(b" "):
                raw = raw[1:]
            out.append((raw, t))
            run = []
        else:
            run.append(t)
    return out


def open_remote_roles(spec, paths: Mapping[str, Path], models: Mapping[str, Any], stack) -> dict[str, RemoteRole]:
    """The remote roles of a SetSpec, each probed: its vocab borrowed from a model a local role loaded (same
    file) or read vocab-only from its GGUF, freed with `stack`."""
    vocabs: dict[str, Vocab] = {}
    roles: dict[str, RemoteRole] = {}
    for role, rs in spec.roles.items():
        if rs.remote is None:
            continue
        key = str(Path(paths[role]).resolve())
        if key not in vocabs:
            vocabs[key] = Vocab.of_model(models[key]) if key in models else Vocab.load(paths[role], stack)
        roles[role] = RemoteRole(role, rs.remote, vocabs[key], n_ctx=rs.n_ctx, sampling=rs.sampling).open()
    return roles
