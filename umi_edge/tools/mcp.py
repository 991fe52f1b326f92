"""MCP servers as a tool source: start or connect to a server (stdio command line or streamable HTTP), list its
tools as ordinary `Tool`s (doc line and caller grammar from each input schema), and run calls through the
session with the tool fault policy: error results, timeouts and a crashed or hung server become observations,
and a server that crashed or hung is restarted on the next call.

The async SDK runs on one event-loop thread per source; the synchronous `Tool.run` waits on it in short
slices so that a timeout or a cancel from the loop is honoured at once. Needs the `mcp` extra (SDK 2.x).
"""
from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError, ToolError
from .core import EMPTY_PARAMETERS, Tool, ToolResult, _check_schema, fault, parse_arguments, serialize

log = logging.getLogger(__name__)

STDIO_PREFIX = "mcp:"
HTTP_PREFIXES = ("mcp+http://", "mcp+https://")
CONNECT_TIMEOUT = 60.0    # a Python server starts in about a second; `uvx` may first download the package
CLOSE_TIMEOUT = 15.0      # the SDK's own shutdown is bounded (stdin close, 2 s, SIGTERM, 2 s, SIGKILL)
POLL = 0.05               # how often a waiting call looks at its deadline and the cancel event
INSTALL_HINT = 'MCP tool sources need the MCP SDK: pip install "umi-edge[mcp]"'


def require_sdk() -> None:
    """Raise ToolError with the install command when the MCP SDK (2.x) is not importable."""
    try:
        import mcp.client  # noqa: F401
    except ImportError:
        raise ToolError(INSTALL_HINT) from None


def is_mcp_spec(spec: str) -> bool:
    """True for "mcp:COMMAND LINE" and "mcp+http(s)://URL"."""
    return spec.startswith(STDIO_PREFIX) or spec.startswith(HTTP_PREFIXES)


@dataclass(frozen=True)
class McpServer:
    """How to reach one MCP server: a command started with stdio pipes, or a streamable-HTTP `url`."""

    label: str                         # names the source in errors and logs
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)   # added to the SDK's safe default environment
    cwd: str | None = None
    url: str | None = None

    @classmethod
    def from_spec(cls, spec: str) -> "McpServer":
        """From `mcp:python -m mcp_server_time` (split like a shell would) or `mcp+http://127.0.0.1:8931/mcp`."""
        if spec.startswith(HTTP_PREFIXES):
            return cls(label=spec, url=spec[len("mcp+"):])
        if not spec.startswith(STDIO_PREFIX):
            raise ToolError(f"--tools {spec!r}: an MCP source starts with mcp: (a command) or mcp+http:// (a URL)")
        try:
            argv = shlex.split(spec[len(STDIO_PREFIX):])
        except ValueError as e:
            raise ToolError(f"--tools {spec!r}: cannot split the command line ({e})") from None
        if not argv:
            raise ToolError(f"--tools {spec!r}: give the server's command line after mcp:, e.g. "
                            "mcp:python -m mcp_server_time")
        return cls(label=spec, command=argv[0], args=tuple(argv[1:]))

    @classmethod
    def from_table(cls, table: Any, where: str, base: Path | None = None) -> "McpServer":
        """From models.toml's `mcp = { command, args, env, cwd }` or `mcp = { url }` (cwd relative to `base`)."""
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: mcp must be a table like {{ command = \"python\", args = [\"-m\", "
                                  f"\"mcp_server_time\"] }} or {{ url = \"http://127.0.0.1:8931/mcp\" }}")
        valid = ("command", "args", "env", "cwd", "url")
        for key in table:
            if key not in valid:
                raise ConfigError(f"{where}: unknown key mcp.{key}; valid keys: {', '.join(valid)}")
        if ("command" in table) == ("url" in table):
            raise ConfigError(f"{where}: give exactly one of mcp.command (a server started on stdio) or mcp.url")
        for key in ("command", "url", "cwd"):
            if key in table and not (isinstance(table[key], str) and table[key]):
                raise ConfigError(f"{where}: mcp.{key} must be a non-empty string")
        args = table.get("args", [])
        if not (isinstance(args, list) and all(isinstance(a, str) for a in args)):
            raise ConfigError(f"{where}: mcp.args must be a list of strings")
        env = table.get("env", {})
        if not (isinstance(env, Mapping) and all(isinstance(v, str) for v in env.values())):
            raise ConfigError(f"{where}: mcp.env must be a table of strings, like {{ TZ = \"UTC\" }}")
        if "url" in table:
            if "args" in table or "env" in table or "cwd" in table:
                raise ConfigError(f"{where}: mcp.args, env and cwd apply to a command, not to a url")
            if not table["url"].startswith(("http://", "https://")):
                raise ConfigError(f"{where}: mcp.url must start with http:// or https://")
            return cls(label=where, url=table["url"])
        cwd = table.get("cwd")
        if cwd is not None and base is not None and not Path(cwd).expanduser().is_absolute():
            cwd = str((base / cwd).resolve())
        return cls(label=where, command=table["command"], args=tuple(args), env=dict(env), cwd=cwd)

    def describe(self) -> str:
        return self.url if self.url else shlex.join([self.command or "", *self.args])


# --- the tool --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class McpTool(Tool):
    """A tool listed by an MCP server; `run` validates the arguments here, then calls through the session."""

    source: "McpSource | None" = None
    # the server wraps a plain return value as {"result": value} (the SDK does for str, int, list...): unwrapped
    wrapped_result: bool = False

    @property
    def executable(self) -> bool:
        return self.source is not None

    def run(self, arguments: str, *, timeout: float, cancel: threading.Event | None = None,
            isolation: str = "auto") -> ToolResult:
        """`isolation` changes nothing here: the server is already its own process, and a call that hangs is
        abandoned (cancelled on the server) and the server restarted on the next call."""
        t0 = time.monotonic()
        if self.source is None:
            return ToolResult(fault(f"{self.name} has no MCP session"), "not_executable", self.name)
        args, problem = parse_arguments(arguments, self.parameters)
        if problem:
            return ToolResult(fault(f"invalid arguments for {self.name}: {problem}"), "bad_arguments", self.name,
                              seconds=time.monotonic() - t0)
        limit = self.timeout if self.timeout is not None else timeout
        text, error = self.source.call(self.name, args, timeout=limit, cancel=cancel, unwrap=self.wrapped_result)
        return ToolResult(text, error, self.name, seconds=time.monotonic() - t0)


def result_text(result: Any, *, unwrap: bool = False) -> str:
    """Observation text of a CallToolResult: structured content as sorted JSON (a string as is), else the
    content blocks joined (text as is; other blocks as a short bracketed note, since the model reads text only).
    `unwrap`: structured content {"result": value} stands for value."""
    structured = getattr(result, "structured_content", None)
    if unwrap and isinstance(structured, Mapping) and list(structured) == ["result"]:
        structured = structured["result"]
    if structured is not None:
        try:
            return serialize(structured)
        except TypeError:
            pass
    parts = []
    for block in result.content or ():
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource":
            res = block.resource
            text = getattr(res, "text", None)
            parts.append(text if text is not None else f"[resource {res.uri}, {len(getattr(res, 'blob', ''))} "
                                                       f"base64 chars]")
        elif kind == "resource_link":
            parts.append(f"[resource {block.uri}]")
        else:
            parts.append(f"[{kind} {getattr(block, 'mime_type', '')}, {len(getattr(block, 'data', ''))} "
                         f"base64 chars]")
    return "\n".join(parts)


# --- the source ------------------------------------------------------------------------------------------------


class _StderrLog:
    """The server's stderr: a pipe drained by a thread into our log at debug level (last lines kept for errors)."""

    def __init__(self, label: str):
        read_fd, write_fd = os.pipe()
        self.file = os.fdopen(write_fd, "w")
        self.tail: collections.deque[str] = collections.deque(maxlen=5)
        self._label = label
        self._thread = threading.Thread(target=self._drain, args=(os.fdopen(read_fd, "rb"),),
                                        name="mcp-stderr", daemon=True)
        self._thread.start()

    def _drain(self, pipe) -> None:
        with pipe:
            for raw in pipe:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    self.tail.append(line)
                    log.debug("%s: %s", self._label, line)

    def last(self) -> str:
        return f" (its stderr ends: {self.tail[-1][:300]})" if self.tail else ""

    def close(self) -> None:
        self.file.close()
        self._thread.join(timeout=2)


class _Connection:
    """One live session: a task on the source's loop holds the SDK client open until `stop` is set, because
    the SDK's cancel scopes must be entered and left by the same task."""

    def __init__(self, source: "McpSource"):
        self.source = source
        self.ready: concurrent.futures.Future = concurrent.futures.Future()
        self.ended = threading.Event()
        self.client: Any = None
        self.stop: asyncio.Event | None = None
        self.task: concurrent.futures.Future = source._submit(self._main())

    async def _main(self) -> None:
        from mcp.client import Client
        from mcp.client.stdio import StdioServerParameters, stdio_client

        import asyncio

        server = self.source.server
        self.stop = asyncio.Event()
        try:
            if server.url is not None:
                client = Client(server.url)
            else:
                params = StdioServerParameters(command=server.command, args=list(server.args),
                                               env=dict(server.env) or None, cwd=server.cwd)
                client = Client(stdio_client(params, errlog=self.source._stderr.file))
            async with client:
                self.client = client
                tools, cursor = [], None
                while True:
                    page = await client.list_tools(cursor=cursor)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
                info = client.server_info
                self.ready.set_result((tools, getattr(info, "name", None)))
                await self.stop.wait()
        except BaseException as e:  # noqa: BLE001 - reported to whoever waits on `ready`, else logged
            if not self.ready.done():
                self.ready.set_exception(e)
            else:
                log.debug("%s: session ended: %s", server.label, _root(e))
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
        finally:
            self.client = None
            self.ended.set()

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Leave the session (the SDK ends a stdio server: stdin closed, then SIGTERM, then SIGKILL)."""
        loop = self.source._loop
        if not self.ended.is_set():
            if self.stop is not None:
                loop.call_soon_threadsafe(self.stop.set)
            else:
                self.task.cancel()
            if not self.ended.wait(timeout):
                self.task.cancel()
                self.ended.wait(timeout)


class McpSource:
    """One MCP server as a tool source. `open()` starts or connects to it and returns its tools; `close()`
    ends it. A context manager; owned by the Team (or the caller) that opened it."""

    def __init__(self, server: McpServer, *, connect_timeout: float = CONNECT_TIMEOUT):
        self.server = server
        self.connect_timeout = connect_timeout
        self.server_name: str | None = None
        self.restarts = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stderr: _StderrLog | None = None
        self._conn: _Connection | None = None
        self._lock = threading.Lock()
        self._stale = False           # a call crashed or timed out: restart on the next call
        self._down: str | None = None  # a restart failed: every later call reports this
        self._closed = False

    # --- lifetime ----------------------------------------------------------------------------------------
    def open(self) -> list[McpTool]:
        """Start (stdio) or connect (HTTP), list the tools; raises ToolError naming the source on failure."""
        import asyncio   # here, not at the top: a team without MCP sources never pays for the event loop

        require_sdk()
        if self._loop is not None:
            raise RuntimeError(f"MCP source {self.server.label} is already open")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mcp-loop", daemon=True)
        self._thread.start()
        if self.server.url is None:
            self._stderr = _StderrLog(self.server.label)
        try:
            listing = self._connect()
            return self._tools(listing)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """End the session and the server process; stop the loop thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=CLOSE_TIMEOUT)
            if not self._thread.is_alive():
                self._loop.close()
        if self._stderr is not None:
            self._stderr.close()

    def __enter__(self) -> "McpSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _submit(self, coro) -> concurrent.futures.Future:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _connect(self) -> list:
        """A new session; its tool listing. ToolError (the server ended) if it does not come up in time."""
        conn = _Connection(self)
        self._conn = conn
        what = f"MCP server {self.server.label}"
        try:
            tools, self.server_name = conn.ready.result(timeout=self.connect_timeout)
        except concurrent.futures.TimeoutError:
            conn.close(timeout=5)
            raise ToolError(f"{what} did not answer within {self.connect_timeout:g} s"
                            f"{self._stderr.last() if self._stderr else ''}") from None
        except BaseException as e:  # noqa: BLE001 - any startup failure is the source's, reported in one line
            conn.close(timeout=5)
            if isinstance(e, KeyboardInterrupt):
                raise
            root = _root(e)
            if isinstance(root, FileNotFoundError) and self.server.command:
                raise ToolError(f"{what}: command {self.server.command!r} not found; give a full path or install "
                                "it") from None
            if self.server.url is not None:
                raise ToolError(f"{what} cannot be reached: {_describe(root)}") from None
            raise ToolError(f"{what} failed to start: {_describe(root)}{self._stderr.last()}") from None
        return tools

    def _tools(self, listing: list) -> list[McpTool]:
        out = []
        for t in listing:
            where = f"{self.server.label}: tool {t.name!r}"
            schema = t.input_schema or EMPTY_PARAMETERS
            try:
                out.append(McpTool(name=t.name, description=(t.description or "").strip(),
                                   parameters=_check_schema(schema, where), toolkit=self.server_name, source=self,
                                   wrapped_result=_wraps_result(t.output_schema)))
            except ToolError as e:
                msg = str(e)
                raise ToolError(msg if msg.startswith(self.server.label) else f"{self.server.label}: {msg}") from None
        return out

    # --- calls -------------------------------------------------------------------------------------------
    def call(self, name: str, args: dict, *, timeout: float, cancel: threading.Event | None = None,
             unwrap: bool = False) -> tuple[str, str | None]:
        """(observation text, fault code or None). Never raises for a fault of the server or the tool."""
        from mcp.shared.exceptions import MCPError
        from mcp_types import CONNECTION_CLOSED

        with self._lock:  # calls on one source are sequential, so a restart never races a call
            if self._closed:
                return fault(f"{name} failed: its MCP server was closed"), "raised"
            if self._down is not None:
                return fault(f"{name} failed: {self._down}"), "raised"
            if self._stale or self._conn is None or self._conn.ended.is_set():
                problem = self._restart()
                if problem is not None:
                    return fault(f"{name} failed: {problem}"), "raised"
            client = self._conn.client
            if client is None:
                self._stale = True
                return fault(f"{name} failed: its MCP server {self.server.label} has ended"), "raised"
            future = self._submit(client.call_tool(name, args))
            deadline = time.monotonic() + timeout
            while True:
                try:
                    result = future.result(timeout=max(0.0, min(POLL, deadline - time.monotonic())))
                    break
                except concurrent.futures.TimeoutError:
                    if future.done():
                        continue
                    if cancel is not None and cancel.is_set():
                        future.cancel()
                        return fault(f"{name} was cancelled"), "cancelled"
                    if time.monotonic() >= deadline:
                        future.cancel()   # the SDK tells the server the request is cancelled
                        self._stale = True
                        return fault(f"{name} timed out after {timeout:g} s"), "timeout"
                except concurrent.futures.CancelledError:
                    self._stale = True
                    return fault(f"{name} failed: its MCP session ended"), "raised"
                except MCPError as e:
                    if e.code == CONNECTION_CLOSED:
                        self._stale = True
                        return (fault(f"{name} failed: its MCP server {self.server.label} exited"
                                      f"{self._stderr.last() if self._stderr else ''}"), "raised")
                    return fault(f"{name} failed: {e.message}"), "raised"
                except Exception as e:  # noqa: BLE001 - a transport failure: the session is not trusted again
                    self._stale = True
                    return fault(f"{name} failed: {_describe(_root(e))}"), "raised"
        text = result_text(result, unwrap=unwrap)
        if result.is_error:
            return fault(f"{name} failed: {text}"), "raised"
        return text, None

    def _restart(self) -> str | None:
        """End the old session, start a new one; a failure leaves the source down for good (so a server that
        cannot start is not retried on every call). Returns the problem, or None."""
        old, self._conn = self._conn, None
        if old is not None:
            old.close(timeout=5)
        self.restarts += 1
        log.info("restarting MCP server %s", self.server.label)
        try:
            listing = self._connect()
        except ToolError as e:
            self._down = f"restarting its MCP server failed: {e}"
            return self._down
        self._stale = False
        log.debug("%s restarted with %d tools", self.server.label, len(listing))
        return None


def _wraps_result(schema: Any) -> bool:
    """An output schema that is only a wrapper: one required property, "result"."""
    return (isinstance(schema, Mapping) and list(schema.get("properties") or {}) == ["result"]
            and list(schema.get("required") or []) == ["result"])


def _root(e: BaseException) -> BaseException:
    """The first leaf of an exception group (anyio task groups wrap transport errors in them)."""
    while getattr(e, "exceptions", None):
        e = e.exceptions[0]
    return e


def _describe(e: BaseException) -> str:
    from mcp.shared.exceptions import MCPError

    return str(e) if isinstance(e, MCPError) else f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
