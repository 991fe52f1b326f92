"""Team: a loaded planner / caller / summarizer trio plus its tools; runs tasks as a stream of events.
(A set on the single-model backbone protocol loads one role, "backbone", and runs through the same API.)

`Team.load(set)` resolves a models.toml set, fetches its GGUFs, loads each distinct file once and opens
one llama.cpp context per role on it. `Team(roles=...)` wraps engines you built (e.g. the fake engine).
A Team runs one task at a time (role contexts hold KV state); `cancel()` may be called from any thread.
"""
from __future__ import annotations

import contextlib
import dataclasses
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator, Mapping, Sequence, Union

from .engine.base import RoleEngine
from .errors import ConfigError, ModelError
from .events import Event, Token
from .registry import SetSpec, load_registry, protocol_roles, resolve_set

if TYPE_CHECKING:
    from .loop import Choice, Limits
    from .protocol import AnyProtocol, Turn
    from .tools import ToolSet

# Team.load's engine seam: (the resolved set, role → GGUF path) → the role engines, or a context manager
# yielding them that the Team exits when it closes. Default: llama.cpp contexts (_open_engines).
Engines = Mapping[str, RoleEngine]
Backend = Callable[[SetSpec, Mapping[str, Path]], Union[Engines, ContextManager[Engines]]]


class Team:
    """Three role engines sharing one loop configuration. Use as a context manager, or call close()."""

    def __init__(
        self,
        roles: Mapping[str, RoleEngine],
        tools: Any = None,
        *,
        protocol: str = "alpha-umi/toolbench-v1",
        limits: Limits | None = None,
        constrained: bool = True,
        spec: SetSpec | None = None,
        tool_top_k: int = 0,
    ) -> None:
        wanted = protocol_roles(protocol)
        missing = [r for r in wanted if r not in roles]
        extra = [r for r in roles if r not in wanted]
        if missing or extra:
            bad = f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(extra)}"
            raise ConfigError(f"Team roles: {bad}; protocol {protocol!r} needs exactly: {', '.join(wanted)}")
        from .loop import Limits
        from .protocol import get_protocol

        self.roles: dict[str, RoleEngine] = {r: roles[r] for r in wanted}
        self.protocol_name = protocol
        self.protocol: AnyProtocol = get_protocol(protocol)    # resolved once, here
        self.limits = limits if limits is not None else Limits()
        self.constrained = constrained
        self.spec = spec
        from .tools.retrieval import check_top_k

        # a larger tool set offers the planner and caller only its top k per step (0: every tool); settable
        self.tool_top_k = check_top_k(tool_top_k, "tool_top_k")
        self.models: dict[str, Any] = {}      # GGUF realpath -> the engine's shared model (Team.load only)
        self.paths: dict[str, Path] = {}      # role -> GGUF path (Team.load only)
        self._stack = contextlib.ExitStack()
        self._busy = threading.Lock()
        self._cancel: threading.Event | None = None
        self._closed = False
        # last: an MCP tool source starts a server process, which this Team's stack then owns
        self.tools = to_toolset(tools, self._stack)

    # --- construction from models.toml ------------------------------------------------------------

    @classmethod
    def load(
        cls,
        set_name: str | None = None,
        *,
        models: str | Path | None = None,
        tools: Any = None,
        download: bool = True,
        progress: bool = False,
        verbose: bool = False,
        backend: Backend | None = None,
        **overrides: Any,
    ) -> "Team":
        """Load set `set_name` (default: $UMI_EDGE_SET or "default") from the bundled models.toml overlaid
        by `models`; `overrides` are flag-level settings (n_ctx=…, temperature=…, caller={…}, max_steps=…).
        `backend` builds the role engines instead of llama.cpp (tests, apps with engines of their own).

        Everything cheap is checked before any weight is read: set, roles, model files, adapters, tools.
        """
        return _load(cls, set_name, models=models, tools=tools, download=download, progress=progress,
                     verbose=verbose, backend=backend, overrides=overrides)

    # --- running ----------------------------------------------------------------------------------

    def run(
        self,
        query: str,
        *,
        tools: Any = None,
        max_steps: int | None = None,
        budget_seconds: float | None = None,
        cancel: threading.Event | None = None,
        on_token: Callable[[Token], None] | None = None,
        history: Sequence[Turn] = (),
        choice: Choice | None = None,
    ) -> Iterator[Event]:
        """Run one task; yields typed events, the last one an `Outcome`. `tools` replaces the team's tools
        for this run (callables, OpenAI schemas, ToolBench docs, a ToolSet, or "module:ATTR"). `on_token`
        streams: it gets a Token event for each piece of text a role decodes (see loop.run_team). `history`
        (protocol Turns after the query) resumes a task; `choice` (a loop.Choice) constrains its first step."""
        if self._closed:
            raise RuntimeError("this Team is closed")
        check_query(query)
        toolset = self.tools if tools is None else to_toolset(tools)
        changes: dict[str, Any] = {}
        if max_steps is not None:
            changes["max_steps"] = max_steps
        if budget_seconds is not None:
            changes["budget_seconds"] = budget_seconds
        limits = dataclasses.replace(self.limits, **changes) if changes else self.limits
        return self._run(query, toolset, limits, cancel or threading.Event(), on_token, tuple(history), choice)

    def _run(self, query: str, toolset: ToolSet, limits: Limits, cancel: threading.Event,
             on_token: Callable[[Token], None] | None = None, history: Sequence[Turn] = (),
             choice: Choice | None = None) -> Iterator[Event]:
        from .loop import run_team

        if not self._busy.acquire(blocking=False):
            raise RuntimeError("this Team is already running a task; a Team runs one task at a time")
        try:
            self._cancel = cancel
            yield from run_team(query, self.roles, toolset, protocol=self.protocol, limits=limits,
                                constrained=self.constrained, tool_top_k=self.tool_top_k, cancel=cancel,
                                on_token=on_token,
                                history=history, choice=choice)
        finally:
            self._cancel = None
            self._busy.release()

    def cancel(self) -> None:
        """Stop the running task (from any thread): it ends with an Outcome of status "cancelled"."""
        ev = self._cancel
        if ev is not None:
            ev.set()

    # --- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Free every native resource (contexts, adapters, models); idempotent."""
        if not self._closed:
            self._closed = True
            self.cancel()
            self._stack.close()

    def __enter__(self) -> "Team":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        name = self.spec.name if self.spec else "custom"
        return f"<Team {name!r} roles={list(self.roles)} tools={len(self.tools)}>"


def _load(cls, set_name, *, models, tools, download, progress, verbose, backend, overrides) -> Team:
    """Team.load: resolve the set, find its files and check every cheap thing, then open the engines."""
    from . import fetch

    registry = load_registry(models)
    spec = resolve_set(set_name, registry=registry, overrides=overrides)
    from .protocol import get_protocol

    get_protocol(spec.protocol)   # an unknown protocol name fails here, before any download or load
    # MCP servers a tool source starts are closed if anything below fails, and owned by the Team once built
    tool_stack = contextlib.ExitStack()
    toolset = to_toolset(tools if tools is not None else spec.tools, tool_stack, registry.toolsources)
    with tool_stack:
        paths: dict[str, Path] = {}
        by_model: dict[str, Path] = {}
        for role, rs in spec.roles.items():
            if rs.model not in by_model:
                by_model[rs.model] = fetch.model_path(registry.model(rs.model), download=download,
                                                      progress=progress, set_name=spec.name)
            paths[role] = by_model[rs.model]
            _check_adapters(spec.name, role, rs)

        from .loop import Limits

        limits = Limits(
            max_steps=spec.max_steps,
            **{f"{role}_tokens": rs.max_tokens for role, rs in spec.roles.items()},
            budget_seconds=spec.budget_seconds,
            tool_timeout=spec.tool_timeout,
            tool_isolation=spec.tool_isolation,
            truncation=spec.truncation,
            grounded_answers=spec.grounded_answers,
            tool_order=spec.tool_order,
        )
        opened = _open_engines(spec, paths, verbose=verbose) if backend is None else _injected(backend, spec, paths)
        with opened as (engines, shared, stack):
            team = cls(engines, toolset, protocol=spec.protocol, limits=limits, constrained=spec.constrained,
                       spec=spec, tool_top_k=spec.tool_top_k)
            team.models = shared
            team.paths = paths
            if spec.prefix_cache:
                from .warm import attach

                attach(team)
            team._stack.push(stack.pop_all())
        team._stack.push(tool_stack.pop_all())
    return team


@contextlib.contextmanager
def _injected(backend: Backend, spec: SetSpec, paths: Mapping[str, Path]):
    """_open_engines' shape for engines a Backend made: (engines, no shared models, the stack owning them)."""
    with contextlib.ExitStack() as stack:
        made = backend(spec, paths)
        engines = stack.enter_context(made) if hasattr(made, "__enter__") else made
        yield dict(engines), {}, stack


@contextlib.contextmanager
def _open_engines(spec: SetSpec, paths: Mapping[str, Path], *, verbose: bool):
    """Yields (role engines, {realpath: SharedModel}, ExitStack owning them); frees all if the body raises.
    Each distinct GGUF is loaded once; each adapter once per model; one context per role, except roles with
    share_context, which run on their host role's context, roles pooled by kv_layout = "pool", which run on a
    sequence of their own in their host's context (layout.py), and remote roles, which run on their server."""
    from .engine.llama import LlamaBackend
    from .engine.remote import open_remote_roles
    from .layout import pools

    with contextlib.ExitStack() as stack:
        backend = stack.enter_context(LlamaBackend(verbose=verbose))
        shared: dict[str, Any] = {}
        adapters: dict[tuple[str, str], Any] = {}
        engines: dict[str, Any] = {}
        pooled = pools(spec.roles, spec.kv_layout)      # host -> roles on a sequence of its own in its context
        pool_host = {m: h for h, members in pooled.items() for m in members}
        # hosts first, so that a role with share_context finds its host's context open
        for role, rs in sorted(spec.roles.items(), key=lambda kv: kv[1].share_context is not None):
            if rs.remote is not None:
                continue
            key = str(Path(paths[role]).resolve())
            if key not in shared:
                shared[key] = backend.load_model(paths[role], n_gpu_layers=rs.n_gpu_layers)

            def adapter(path):
                akey = (key, str(Path(path).resolve()))
                if akey not in adapters:
                    adapters[akey] = backend.load_adapter(shared[key], path)
                return adapters[akey]

            mine = [adapter(path) for path in rs.adapters]
            if rs.share_context is not None:
                engines[role] = engines[rs.share_context].view(name=role, adapter=mine or None, sampling=rs.sampling)
                continue
            if role in pool_host:
                engines[role] = engines[pool_host[role]].sequence(name=role, adapter=mine or None,
                                                                  sampling=rs.sampling)
                continue
            engines[role] = backend.new_role(
                shared[key], name=role, adapter=mine or None, n_ctx=rs.n_ctx, n_threads=rs.threads,
                n_batch=rs.n_batch, sampling=rs.sampling, type_k=rs.type_k,
                trunk_adapter=None if rs.trunk_adapter is None else adapter(rs.trunk_adapter),
                n_seq=1 + len(pooled.get(role, ())),
            )
        # after the local models, so a remote role reads its vocab from one already loaded; each is probed here
        engines.update(open_remote_roles(spec, paths, shared, stack))
        yield engines, shared, stack


def _check_adapters(set_name: str, role: str, rs) -> None:
    """Every adapter exists and, where models.toml gives its sha256, matches it (before any weight loads)."""
    from .fetch import sha256_file

    checks = [("adapter", path, digest) for path, digest in zip(rs.adapters, rs.adapter_sums)]
    if rs.trunk_adapter is not None:
        checks.append(("trunk_adapter", rs.trunk_adapter, rs.trunk_adapter_sha256))
    for key, path, sha in checks:
        if not Path(path).is_file():
            raise ModelError(f"set {set_name!r} {role}: {key} {path} does not exist; fix `{key}` in models.toml")
        if sha and sha256_file(path) != sha.lower():
            raise ModelError(f"set {set_name!r} {role}: {key} {path} does not match its {key}_sha256 in "
                             f"models.toml; reinstall umi-edge or fix the checksum")


def check_query(query: Any, *, source: str = "") -> str:
    """`query` if it is a task to run, else ConfigError: not empty, and valid Unicode (undecodable bytes from
    argv arrive as lone surrogates and would fail only at tokenization, after the models load)."""
    where = f"the query from {source}" if source else "the query"
    if not isinstance(query, str):
        raise ConfigError(f"{where} must be text (str), not {type(query).__name__}")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = ord(query[e.start])
        byte = f"byte 0x{bad - 0xDC00:02x}" if 0xDC80 <= bad <= 0xDCFF else f"U+{bad:04X}"
        raise ConfigError(f"{where} is not UTF-8 text ({byte} at character {e.start}); pass UTF-8 text") from None
    if not query.strip():
        raise ConfigError(f"{where} is empty; give the task to run")
    return query


def to_toolset(tools: Any, stack: contextlib.ExitStack | None = None, toolsources: Mapping[str, Any] | None = None):
    """A ToolSet from a ToolSet, a Tool / function, a source string ("module:ATTR", "mcp:COMMAND",
    "mcp+http://URL" or a `toolsources` name), or a list of those (and ToolBench docs); MCP servers it starts
    are registered on `stack` (none given: an MCP source is an error). OpenAI schemas need their callable:
    pass `ToolSet.from_openai(specs, fns)` or `Tool.from_openai(spec, fn)`."""
    from .tools import ToolSet, as_toolset
    from .tools.sources import open_sources

    if tools is None:
        return ToolSet([])
    if isinstance(tools, str):
        return open_sources([tools], stack, toolsources)
    if isinstance(tools, (list, tuple)) and any(isinstance(t, str) for t in tools):
        return open_sources(tools, stack, toolsources)
    return as_toolset(tools)
