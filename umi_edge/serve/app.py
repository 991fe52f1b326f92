"""The HTTP app: OpenAI-compatible chat completions over loaded teams, `/v1/runs` (the typed event stream of a
run, as `umi-edge run --json` prints it), `/v1/models`, `/health` and the live page at `/`.

Limits and safety: one task at a time per team with a bounded queue (beyond it 429 + Retry-After), a client
that disconnects cancels its run, a wall-clock budget per request, a body-size limit, Bearer auth when an
API key is set (required off loopback), CORS only for the origins given. Errors are OpenAI-shaped.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable, Iterator, Mapping

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route
import uvicorn
from sse_starlette import EventSourceResponse, ServerSentEvent

from ..errors import ConfigError
from .chat import ChatRun, client_calls, client_can_run
from .conversation import parse_chat
from .errors import ApiError, bad_request
from .worker import Closed, Job, QueueFull, TeamWorker

log = logging.getLogger(__name__)

STOP_GRACE = 5.0        # seconds a stream has, once the server stops, to send its error and [DONE]


@dataclass(frozen=True)
class ServeConfig:
    """Server settings; each default says why."""

    host: str = "127.0.0.1"             # loopback: only this machine's apps reach the team
    port: int = 8080
    api_key: str | None = None          # Bearer key for /v1/*; required when host is not loopback
    max_queue: int = 8                  # requests waiting per team beyond the running one; more get 429
    max_body: int = 1 << 20             # bytes; a long tool conversation is tens of kB
    cors_origins: tuple[str, ...] = ()  # no CORS headers unless an origin is given
    budget_seconds: float | None = None  # wall clock per request (None: the set's budget)
    max_steps: int | None = None        # planner turns per request (None: the set's)
    ping_seconds: float = 15.0          # SSE keep-alive comments

    def check(self) -> None:
        """Refuse settings that would expose the team or cannot work (before anything loads)."""
        if not is_loopback(self.host) and not self.api_key:
            raise ConfigError(f"--host {self.host} is reachable from other machines: give --api-key (or "
                              f"$UMI_EDGE_API_KEY) so that only holders of the key can use the team")
        if self.max_queue < 0 or self.max_body < 1:
            raise ConfigError("--max-queue must be >= 0 and --max-body >= 1")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port {self.port} is not a TCP port")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Server:
    """The app's state: loading → ready (teams and their workers) or error; the runs that can be cancelled."""

    def __init__(self, load: Callable[[], Mapping[str, Any]], config: ServeConfig,
                 on_ready: Callable[[], None] | None, on_error: Callable[[BaseException], None] | None):
        self.load_fn, self.config = load, config
        self.on_ready, self.on_error = on_ready, on_error
        self.status, self.error = "loading", ""
        self.workers: dict[str, TeamWorker] = {}
        self.runs: dict[str, tuple[Job, TeamWorker]] = {}
        self.closing = False
        self.loaded_at = 0

    def load(self) -> None:
        try:
            teams = dict(self.load_fn())
            workers = {name: TeamWorker(name, team, max_queue=self.config.max_queue,
                                        budget_seconds=self.config.budget_seconds, max_steps=self.config.max_steps)
                       for name, team in teams.items()}
        except BaseException as e:  # noqa: BLE001 - reported through /health and on_error
            self.status, self.error = "error", f"{type(e).__name__}: {e}"
            if self.on_error is not None:
                self.on_error(e)
            return
        if self.closing:
            for w in workers.values():
                w.close()
                w.team.close()
            return
        self.workers, self.loaded_at, self.status = workers, int(time.time()), "ready"
        if self.on_ready is not None:
            self.on_ready()

    def stop_runs(self) -> None:
        """Refuse new runs and stop the queued and running ones (each still gets its error response)."""
        self.closing = True
        for w in self.workers.values():
            w.close()

    def close(self) -> None:
        self.stop_runs()
        for w in self.workers.values():
            w.team.close()

    def ready(self) -> dict[str, TeamWorker]:
        if self.status == "ready":
            return self.workers
        if self.status == "loading":
            raise ApiError(503, "the server is still loading its models; retry shortly", type="server_error",
                           code="loading", headers={"Retry-After": "2"})
        raise ApiError(503, f"the models failed to load: {self.error}", type="server_error", code="load_failed")

    def submit(self, worker: TeamWorker, job: Job) -> None:
        job.bind()
        try:
            worker.submit(job)
        except QueueFull as e:
            raise ApiError(429, f"set {worker.name!r} is busy and its queue of {worker.max_queue} is full; retry "
                                f"in about {e.retry_after} s", type="rate_limit_error", code="queue_full",
                           headers={"Retry-After": str(e.retry_after)}) from None
        except Closed:
            raise ApiError(503, "the server is shutting down", type="server_error", code="shutting_down") from None


def create_app(load: Callable[[], Mapping[str, Any]] | Mapping[str, Any], config: ServeConfig = ServeConfig(), *,
               on_ready: Callable[[], None] | None = None,
               on_error: Callable[[BaseException], None] | None = None) -> Starlette:
    """The ASGI app. `load` gives {set name: Team} (called in a thread at startup, so /health can say
    "loading"), or is that mapping itself. The app closes the teams on shutdown."""
    config.check()
    loader = load if callable(load) else (lambda: load)
    server = _Server(loader, config, on_ready, on_error)
    page = resources.files("umi_edge.serve").joinpath("page.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app):
        threading.Thread(target=server.load, name="umi-serve-load", daemon=True).start()
        try:
            yield
        finally:
            await asyncio.to_thread(server.close)

    async def index(request: Request):
        return HTMLResponse(page)

    async def health(request: Request):
        body: dict[str, Any] = {"status": server.status}
        if server.status == "ready":
            body["models"] = {name: w.load() for name, w in server.workers.items()}
        if server.error:
            body["error"] = server.error
        return JSONResponse(body, status_code=200 if server.status == "ready" else 503)

    async def models(request: Request):
        workers = server.ready()
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": server.loaded_at, "owned_by": "umi-edge",
             "umi": {"roles": list(w.team.roles), "tools": list(w.team.tools.names),
                     "protocol": w.team.protocol_name}}
            for name, w in workers.items()]})

    async def chat_completions(request: Request):
        body = await read_json(request, config.max_body)
        workers = server.ready()
        req = parse_chat(body, {name: w.team for name, w in workers.items()})
        worker = workers[req.model]
        eager = req.client_tools and worker.team.constrained
        stop = None if not req.client_tools else client_calls(req.tools) if eager else client_can_run(req.tools)
        # streamed: the answer's tokens, and the caller's when its call goes out as it decodes
        tokens = (("summarizer", "caller") if eager else ("summarizer",)) if req.stream else False
        job = Job(req.query, tools=req.tools, history=req.history, choice=req.choice, tokens=tokens, stop_at=stop)
        server.submit(worker, job)
        run = ChatRun(model=req.model, client_tools=req.client_tools, eager=eager, include_usage=req.include_usage,
                      tool_names=req.tools.names if req.client_tools else ())
        if req.stream:
            return EventSourceResponse(_chat_events(job, worker, run), sep=SSE_SEP, ping=config.ping_seconds,
                                       shutdown_grace_period=STOP_GRACE)
        await _collect(request, job, worker, run)
        if run.error is not None:
            return error_response(run.error)
        return JSONResponse(run.completion())

    async def runs_create(request: Request):
        body = await read_json(request, config.max_body)
        workers = server.ready()
        if not isinstance(body, dict):
            raise bad_request("body", "must be a JSON object like {\"query\": \"...\"}")
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise bad_request("query", "required: the task, a non-empty string")
        name = body.get("set", next(iter(workers)))
        if name not in workers:
            raise bad_request("set", f"unknown set {name!r}; this server serves: {', '.join(workers)}",
                              code="model_not_found")
        worker = workers[name]
        tools = None
        if body.get("tools") is not None:
            tools = _tool_subset(body["tools"], worker.team.tools)
        tokens = body.get("stream_tokens", False)
        if not isinstance(tokens, bool):
            raise bad_request("stream_tokens", "must be true or false")
        job = Job(query, tools=tools, tokens=tokens)
        server.submit(worker, job)
        server.runs[job.id] = (job, worker)
        return EventSourceResponse(_run_events(server, job, worker), sep=SSE_SEP, ping=config.ping_seconds,
                                   shutdown_grace_period=STOP_GRACE, headers={"X-Run-Id": job.id})

    async def runs_delete(request: Request):
        run_id = request.path_params["run_id"]
        found = server.runs.get(run_id)
        if found is None:
            raise ApiError(404, f"run_id: no run {run_id!r} is queued or running", param="run_id",
                           code="run_not_found")
        job, worker = found
        worker.cancel(job)
        return JSONResponse({"id": run_id, "object": "run", "cancelled": True})

    async def on_api_error(request: Request, exc: ApiError):
        return error_response(exc)

    async def on_http_error(request: Request, exc: HTTPException):
        return error_response(ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                                       code="not_found" if exc.status_code == 404 else None,
                                       headers=dict(exc.headers or {})))

    async def on_crash(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(ApiError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error"))

    middleware = []
    if config.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                                     allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                                     allow_headers=["Authorization", "Content-Type"],
                                     expose_headers=["X-Run-Id", "Retry-After"]))
    if config.api_key:
        middleware.append(Middleware(BearerAuth, key=config.api_key))
    routes = [
        Route("/", index),
        Route("/health", health),
        Route("/v1/models", models),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/runs", runs_create, methods=["POST"]),
        Route("/v1/runs/{run_id}", runs_delete, methods=["DELETE"]),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={ApiError: on_api_error, HTTPException: on_http_error, Exception: on_crash})
    app.state.umi = server
    return app


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


class BearerAuth:
    """Pure ASGI (streams and disconnects pass through untouched): /v1/* needs `Authorization: Bearer <key>`."""

    def __init__(self, app, key: str):
        self.app, self.expected = app, f"Bearer {key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1/") and scope["method"] != "OPTIONS":
            given = Headers(scope=scope).get("authorization", "").encode()
            if not hmac.compare_digest(given, self.expected):
                response = error_response(ApiError(401, "Authorization: a valid 'Bearer <api key>' header is "
                                                        "required", param="Authorization", code="invalid_api_key",
                                                   headers={"WWW-Authenticate": "Bearer"}))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, refusing more than `limit` bytes before reading them all."""
    def too_big(n: str) -> ApiError:
        return ApiError(413, f"body: {n} bytes is more than this server accepts ({limit}; see --max-body)",
                        param="body", code="body_too_large")

    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_big(length)
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise too_big(f"over {limit}")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request("body", f"not valid JSON ({e})") from None


def _tool_subset(names: Any, tools) -> Any:
    from ..tools import ToolSet

    if not isinstance(names, list) or not names:
        raise bad_request("tools", "must be a non-empty list of tool names of the set")
    for i, n in enumerate(names):
        if not isinstance(n, str) or n not in tools:
            raise bad_request(f"tools[{i}]", f"no tool {n!r} in this set; its tools: {', '.join(tools.names)}")
    return ToolSet([tools[n] for n in dict.fromkeys(names)])


SSE_SEP = "\n"      # OpenAI's servers and clients use bare newlines


def _sse(obj: Any) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(obj, ensure_ascii=False, default=str), sep=SSE_SEP)


async def _collect(request: Request, job: Job, worker: TeamWorker, run: ChatRun) -> None:
    """Fold a non-streaming run; a client that goes away cancels it (heard as an ASGI disconnect, no polling)."""

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        worker.cancel(job)

    watcher = asyncio.create_task(watch())
    try:
        async for kind, value in job.items():
            if kind == "end":
                run.end(value, job.cancel_reason)
                return
            run.feed(kind, value)
    finally:
        watcher.cancel()


async def _chat_events(job: Job, worker: TeamWorker, run: ChatRun):
    finished = False
    try:
        for c in run.chunks_start():
            yield _sse(c)
        async for kind, value in job.items():
            if kind == "end":
                run.end(value, job.cancel_reason)
                finished = True
                break
            for c in run.feed(kind, value):
                yield _sse(c)
        if run.error is not None:
            yield _sse(run.error.body())
        else:
            for c in run.chunks_end():
                yield _sse(c)
        yield ServerSentEvent(data="[DONE]", sep=SSE_SEP)
    finally:
        if not finished:        # the client went away (or the server stops): free the team
            worker.cancel(job)


async def _run_events(server: _Server, job: Job, worker: TeamWorker):
    """The run's events as `umi-edge run --json` prints them, one per SSE data line."""
    finished, outcome = False, False
    try:
        async for kind, value in job.items():
            if kind == "end":
                finished = True
                if not outcome:     # the run never produced its own outcome: say why, in the same shape
                    failed = isinstance(value, BaseException) and not isinstance(value, Closed)
                    reason = (f"{type(value).__name__}: {value}" if failed else str(value) if value is not None
                              else "cancelled before it started")
                    yield _sse({"event": "outcome", "status": "error" if failed else "cancelled", "answer": None,
                                "steps": 0, "reason": reason})
                break
            outcome = outcome or value.kind == "outcome"
            yield _sse(value.to_dict())
    finally:
        server.runs.pop(job.id, None)
        if not finished:
            worker.cancel(job)


class UmiServer(uvicorn.Server):
    """uvicorn, stopping the app's runs first when it shuts down: uvicorn waits for open requests before the
    app hears of the shutdown, so a long run would be cut off mid-response instead of ending with an error."""

    def __init__(self, config: uvicorn.Config, stop_runs: Callable[[], None]):
        super().__init__(config)
        self._stop_runs = stop_runs

    async def shutdown(self, sockets=None) -> None:
        await asyncio.to_thread(self._stop_runs)
        await super().shutdown(sockets)


def uvicorn_server(app: Starlette, config: ServeConfig) -> UmiServer:
    """The uvicorn server for `app` (logs through `logging`, i.e. stderr; no access log)."""
    return UmiServer(uvicorn.Config(app, host=config.host, port=config.port, log_config=None, access_log=False,
                                    lifespan="on", timeout_graceful_shutdown=5), app.state.umi.stop_runs)


def serve(load: Callable[[], Mapping[str, Any]], config: ServeConfig, *,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Run the server until interrupted (uvicorn; its logs go through `logging`, i.e. stderr). `on_ready(url)`
    is called once the teams are loaded and the socket is bound. A load failure stops the server and is
    raised here."""
    failure: list[BaseException] = []
    holder: dict[str, Any] = {}

    def ready() -> None:
        srv = holder["server"]
        while not srv.started and not srv.should_exit:   # the lifespan starts before the socket binds
            time.sleep(0.02)
        if on_ready is not None and srv.started:
            host, port = srv.servers[0].sockets[0].getsockname()[:2]
            on_ready(f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}")

    def failed(e: BaseException) -> None:
        failure.append(e)
        holder["server"].should_exit = True

    app = create_app(load, config, on_ready=ready, on_error=failed)
    server = uvicorn_server(app, config)
    holder["server"] = server
    server.run()
    if failure:
        raise failure[0]


@contextmanager
def background(load: Callable[[], Mapping[str, Any]] | Mapping[str, Any], config: ServeConfig = ServeConfig(port=0),
               *, timeout: float = 600) -> Iterator[str]:
    """The server in a thread of this process (benchmarks, embedding): yields its base URL once the teams are
    loaded; stops it on exit (which closes the teams)."""
    app = create_app(load, config)
    server = uvicorn_server(app, config)
    thread = threading.Thread(target=server.run, name="umi-serve", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started or app.state.umi.status == "loading":
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        if app.state.umi.status != "ready":
            raise RuntimeError(f"the server could not load its teams: {app.state.umi.error}")
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
