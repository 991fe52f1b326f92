"""What each kind of inference server takes and returns: one class per server kind, mapping a role's request
(prompt, max_tokens, sampling, grammar) to that server's completion endpoint and its streamed answer back.

Kinds and their sources (the field names are theirs, checked against their docs and code):
- "llama.cpp": llama.cpp's llama-server `POST /completion` (tools/server/README.md): token-id prompt, GBNF
  `grammar`, `cache_prompt`, `id_slot`, `return_tokens`; the last chunk has `timings.cache_n` / `prompt_n`.
- "llama-cpp-python": `python -m llama_cpp.server` `POST /v1/completions` (llama_cpp/server/types.py): the prompt
  is a string (no token arrays), GBNF `grammar`; no usage when streaming, no cached-token count.
- "vllm": vLLM's `POST /v1/completions` (vllm/entrypoints/openai/completion/protocol.py): token-id prompt,
  `structured_outputs.grammar`, `return_token_ids`, `usage.prompt_tokens_details.cached_tokens` (reported
  when vLLM runs with --enable-prompt-tokens-details).
- "openai": any OpenAI-style `/v1/completions` taking a token-id prompt; no grammar, no top_k / min_p.
- "ollama": `POST /api/generate` with `raw: true`: the prompt is a string; `format` takes only a JSON schema,
  and no α-UMi output is one JSON value, so no grammar is enforced.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import EngineError
from .base import Sampling

# llama.cpp sampler order of the local engine (engine/sampling.py): top_k → typical → top_p → min_p → temperature
_LLAMA_SAMPLERS = ["top_k", "typ_p", "top_p", "min_p", "temperature"]


@dataclass(frozen=True)
class Capabilities:
    """What a server kind can do; the engine and the loop adapt to it, and docs/remote-engines.md tabulates it."""

    token_prompt: bool    # takes the prompt as token ids (else as text, checked to read back as the same specials)
    grammar: bool         # enforces a GBNF grammar server-side
    token_ids: bool       # streams the output's token ids (else the role's vocab tokenizes the streamed text)
    cached: bool          # reports how many prompt tokens came from its prefix cache


@dataclass
class Reply:
    """What a streamed answer said so far; `read` fills it chunk by chunk."""

    text: list[str] = field(default_factory=list)
    tokens: list[int] | None = None     # None: this kind streams text only
    stop: str | None = None             # "eos" | "length" | "stop"
    n_prompt: int | None = None         # as the server counted it
    n_generated: int | None = None      # as the server counted it (None: the output ids are counted)
    cached: int | None = None           # prompt tokens it took from its cache
    evaluated: int | None = None        # prompt tokens it evaluated
    server_seconds: float | None = None  # its own prompt + decode time, where it reports one (llama-server)
    done: bool = False


class Server:
    """One server kind. `stream`: "sse" (`data: {...}` lines, `data: [DONE]`), "ndjson" (one object a line) or
    "json" (no streaming: one answer at the end)."""

    name = ""
    caps = Capabilities(token_prompt=True, grammar=False, token_ids=False, cached=False)
    stream = "sse"
    needs_model = False       # requests must name the served model (`served_model`)

    def probe_path(self, spec) -> tuple[str, str, dict | None]:
        """(method, path, body) of a cheap request that shows the server is up and this kind."""
        return "GET", "/v1/models", None

    def probe(self, obj: Any, spec, label: str) -> dict:
        """Facts from the probe's answer: {"n_ctx": per-request context or None, "n_vocab": … or None}."""
        return {}

    def request(self, prompt: Sequence[int] | str, *, max_tokens: int, grammar: str | None, sampling: Sampling,
                seed: int, spec, n_ctx: int) -> tuple[str, dict]:
        raise NotImplementedError

    def read(self, obj: Any, reply: Reply) -> None:
        raise NotImplementedError


def _error_text(obj: Any) -> str | None:
    """The message of an error object in any of the shapes servers use, else None."""
    if not isinstance(obj, dict):
        return None
    err = obj.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err)
    if isinstance(err, str):
        return err
    if obj.get("object") == "error" and "message" in obj:
        return str(obj["message"])
    if "detail" in obj and len(obj) == 1:
        return str(obj["detail"])
    return None


def _shape(cond: bool, what: str) -> None:
    if not cond:
        raise EngineError(f"malformed response: {what}")


class LlamaServer(Server):
    name = "llama.cpp"
    caps = Capabilities(token_prompt=True, grammar=True, token_ids=True, cached=True)

    def probe(self, obj, spec, label):
        data = obj.get("data") if isinstance(obj, dict) else None
        meta = data[0].get("meta") if isinstance(data, list) and data and isinstance(data[0], dict) else None
        if not isinstance(meta, dict):
            raise EngineError(f"{label}: GET /v1/models has no model `meta`, so this is not llama.cpp's llama-server; "
                              f"set `server` in models.toml to the kind it is")
        return {"n_ctx": meta.get("n_ctx"), "n_vocab": meta.get("n_vocab")}

    def request(self, prompt, *, max_tokens, grammar, sampling, seed, spec, n_ctx):
        body = {
            "prompt": list(prompt), "n_predict": max_tokens, "stream": True, "return_tokens": True,
            "cache_prompt": spec.cache_prompt, "id_slot": -1 if spec.slot is None else spec.slot,
            "temperature": sampling.temperature, "top_k": sampling.top_k, "top_p": sampling.top_p,
            "min_p": sampling.min_p, "typical_p": 1.0, "samplers": _LLAMA_SAMPLERS, "seed": seed,
            # no repetition penalties (protocol.md §4.5); the sampler list above already leaves them out
            "repeat_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "dry_multiplier": 0.0,
            "xtc_probability": 0.0, "mirostat": 0, "n_probs": 0,
            # the final chunk would otherwise echo the whole prompt back
            "response_fields": ["content", "tokens", "stop", "stop_type", "timings", "tokens_evaluated", "truncated"],
        }
        if grammar is not None:
            body["grammar"] = grammar
        if spec.served_model:
            body["model"] = spec.served_model
        return "/completion", body

    def read(self, obj, reply):
        _shape(isinstance(obj, dict) and ("content" in obj or "stop" in obj), f"a chunk without content: {obj!r:.120}")
        reply.text.append(obj.get("content") or "")
        reply.tokens = (reply.tokens or []) + [int(t) for t in obj.get("tokens") or ()]
        if obj.get("stop"):
            reply.done = True
            reply.stop = {"eos": "eos", "limit": "length", "word": "stop"}.get(obj.get("stop_type"), "stop")
            timings = obj.get("timings") or {}
            reply.n_prompt = obj.get("tokens_evaluated")
            reply.cached, reply.evaluated = timings.get("cache_n"), timings.get("prompt_n")
            if "prompt_ms" in timings and "predicted_ms" in timings:
                reply.server_seconds = (timings["prompt_ms"] + timings["predicted_ms"]) / 1000


class OpenAICompletions(Server):
    """Any OpenAI-style /v1/completions server taking a token-id prompt: sampling beyond temperature / top_p
    cannot be asked for, and no grammar."""

    name = "openai"
    caps = Capabilities(token_prompt=True, grammar=False, token_ids=False, cached=True)
    needs_model = True

    def probe(self, obj, spec, label):
        ids = [m.get("id") for m in obj.get("data") or () if isinstance(m, dict)] if isinstance(obj, dict) else []
        if spec.served_model not in ids:
            raise EngineError(f"{label} does not serve a model named {spec.served_model!r} (it serves: "
                              f"{', '.join(map(str, ids)) or 'none'}); fix `served_model` in models.toml")
        model = next(m for m in obj["data"] if isinstance(m, dict) and m.get("id") == spec.served_model)
        return {"n_ctx": model.get("max_model_len")}

    def _body(self, prompt, max_tokens, sampling, seed, spec) -> dict:
        return {"model": spec.served_model, "prompt": list(prompt), "max_tokens": max_tokens, "stream": True,
                "stream_options": {"include_usage": True}, "temperature": sampling.temperature,
                "top_p": sampling.top_p, "seed": seed, "presence_penalty": 0.0, "frequency_penalty": 0.0}

    def request(self, prompt, *, max_tokens, grammar, sampling, seed, spec, n_ctx):
        return "/v1/completions", self._body(prompt, max_tokens, sampling, seed, spec)

    def read(self, obj, reply):
        _shape(isinstance(obj, dict) and isinstance(obj.get("choices"), list), f"a chunk without choices: {obj!r:.120}")
        for choice in obj["choices"][:1]:
            reply.text.append(choice.get("text") or "")
            if choice.get("token_ids") is not None:
                reply.tokens = (reply.tokens or []) + [int(t) for t in choice["token_ids"]]
            if choice.get("finish_reason"):
                reply.stop = "length" if choice["finish_reason"] == "length" else "eos"
        usage = obj.get("usage")
        if isinstance(usage, dict):
            reply.n_prompt, reply.n_generated = usage.get("prompt_tokens"), usage.get("completion_tokens")
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict) and details.get("cached_tokens") is not None:
                reply.cached = details["cached_tokens"]
                if reply.n_prompt is not None:
                    reply.evaluated = reply.n_prompt - reply.cached


class VLLM(OpenAICompletions):
    name = "vllm"
    caps = Capabilities(token_prompt=True, grammar=True, token_ids=True, cached=True)

    def request(self, prompt, *, max_tokens, grammar, sampling, seed, spec, n_ctx):
        body = self._body(prompt, max_tokens, sampling, seed, spec)
        body.update({
            "top_k": sampling.top_k or -1,          # -1 disables top-k in every vLLM release (0 only in newer ones)
            "min_p": sampling.min_p, "repetition_penalty": 1.0, "return_token_ids": True,
        })
        if grammar is not None:
            body["structured_outputs"] = {"grammar": grammar}
        return "/v1/completions", body


class LlamaCppPython(Server):
    """Not streamed: by default this server cuts a running stream short when another request arrives
    (--interrupt_requests), which would break concurrent roles and `eval --jobs`; a plain request waits its
    turn and reports its token counts. On cancel the client leaves at once, but the server finishes that
    generation (at most max_tokens) before it takes the next request."""

    name = "llama-cpp-python"
    caps = Capabilities(token_prompt=False, grammar=True, token_ids=False, cached=False)
    stream = "json"

    def request(self, prompt, *, max_tokens, grammar, sampling, seed, spec, n_ctx):
        body = {
            "prompt": prompt, "max_tokens": max_tokens, "stream": False, "temperature": sampling.temperature,
            "top_p": sampling.top_p, "top_k": sampling.top_k, "min_p": sampling.min_p, "seed": seed,
            # its defaults are repeat_penalty 1.1, top_k 40, min_p 0.05: every one is set
            "repeat_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "mirostat_mode": 0,
        }
        if grammar is not None:
            body["grammar"] = grammar
        if spec.served_model:
            body["model"] = spec.served_model
        return "/v1/completions", body

    read = OpenAICompletions.read


class Ollama(Server):
    name = "ollama"
    caps = Capabilities(token_prompt=False, grammar=False, token_ids=False, cached=False)
    stream = "ndjson"
    needs_model = True

    def probe_path(self, spec):
        return "POST", "/api/show", {"model": spec.served_model}

    def request(self, prompt, *, max_tokens, grammar, sampling, seed, spec, n_ctx):
        options = {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k,
                   "min_p": sampling.min_p, "seed": seed, "num_predict": max_tokens, "num_ctx": n_ctx, "repeat_penalty": 1.0,
                   "typical_p": 1.0}
        return "/api/generate", {"model": spec.served_model, "prompt": prompt, "raw": True, "stream": True,
                                 "options": options}

    def read(self, obj, reply):
        _shape(isinstance(obj, dict) and "response" in obj, f"a line without response: {obj!r:.120}")
        reply.text.append(obj.get("response") or "")
        if obj.get("done"):
            reply.done = True
            reply.stop = "length" if obj.get("done_reason") == "length" else "eos"
            reply.evaluated, reply.n_generated = obj.get("prompt_eval_count"), obj.get("eval_count")


SERVERS: dict[str, Server] = {s.name: s for s in (LlamaServer(), LlamaCppPython(), VLLM(), OpenAICompletions(),
                                                  Ollama())}
