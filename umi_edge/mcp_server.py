"""The team as an MCP server (`umi-edge mcp`): one tool, `run_task(query) -> {answer, status, steps}`, whose
description lists the team's tools; a progress notification per loop event; a host's cancel cancels the run.

The team is synchronous and runs one task at a time, so each call runs it on a worker thread, one call after
another, while the handler relays its events as progress. Needs the `mcp` extra (SDK 2.x).
"""
# no `from __future__ import annotations`: the SDK reads run_task's annotations (Context, TaskResult) at runtime
import queue
import threading
from typing import Any, Optional, TypedDict

from .tools.mcp import require_sdk

TOOL_NAME = "run_task"
DEFAULT_PORT = 8931
POLL = 0.05            # seconds between looks at the run's event queue (and at a finished run)
PROGRESS_KINDS = ("plan", "call", "observation", "answer", "give_up", "notice", "error")


class TaskResult(TypedDict):
    """What run_task returns: the team's answer (None unless answered), the outcome status, planner steps."""

    answer: Optional[str]
    status: str      # answered | gave_up | max_steps | cancelled | error
    steps: int


def describe(team: Any, max_chars: int = 160) -> str:
    """run_task's description: what the team is and, one line each, the tools it can call."""
    name = team.spec.name if team.spec else "custom"
    roles = " / ".join(team.roles)
    lines = [f"Delegate a task to an on-device alpha-UMi tool-agent team (umi-edge set {name!r}, roles {roles}). "
             "Give the whole task in plain words; the team plans, calls its own tools and answers in text. "
             f"Its tools ({len(team.tools)}):"]
    for t in team.tools:
        text = " ".join((t.description or "").split())
        lines.append(f"- {t.name}: {text[:max_chars - 3] + '...' if len(text) > max_chars else text}".rstrip(": "))
    lines.append("Returns {answer, status, steps}; status is answered, gave_up, max_steps, cancelled or error "
                 "(answer is null unless answered). Small models err: check answers that matter.")
    return "\n".join(lines)


def progress_message(event: Any, max_chars: int = 200) -> str:
    """One line per loop event: `[step] kind (tool): text`."""
    tool = getattr(event, "tool", None)
    text = " ".join(event.text.split())
    head = f"[{event.step}] {event.kind}" + (f" ({tool})" if tool else "")
    return f"{head}: {text[:max_chars]}" if text else head


def build_server(team: Any, *, name: str = "umi-edge") -> Any:
    """An MCPServer exposing `team` as run_task; the caller keeps owning (and closes) the team."""
    require_sdk()
    import anyio
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.server.mcpserver.exceptions import ToolError as McpToolError

    from . import __version__
    from .errors import UmiError

    app = MCPServer(name, version=__version__, log_level="WARNING",
                    instructions=f"Call {TOOL_NAME} to hand a task to an on-device small-model tool-agent team.")
    turn: dict[str, Any] = {}   # the anyio lock, made on the server's own event loop

    async def run_task(query: str, ctx: Context) -> TaskResult:
        lock = turn.setdefault("lock", anyio.Lock())
        async with lock:   # a Team runs one task at a time: later calls wait their turn
            events: queue.SimpleQueue = queue.SimpleQueue()
            cancel = threading.Event()
            failure: list[BaseException] = []

            def work() -> None:
                try:
                    for event in team.run(query, cancel=cancel):
                        events.put(event)
                except BaseException as e:  # noqa: BLE001 - handed to the handler, which reports it
                    failure.append(e)

            worker = threading.Thread(target=work, name="umi-edge-mcp-task", daemon=True)
            worker.start()
            outcome, sent = None, 0
            try:
                while True:
                    running = worker.is_alive()
                    while not events.empty():
                        event = events.get()
                        if event.kind == "outcome":
                            outcome = event
                        elif event.kind in PROGRESS_KINDS:
                            sent += 1
                            await ctx.report_progress(sent, None, progress_message(event))
                    if not running:
                        break
                    await anyio.sleep(POLL)
            except anyio.get_cancelled_exc_class():
                cancel.set()   # the loop ends at its next check; the Team is free again once it has
                with anyio.CancelScope(shield=True):
                    while worker.is_alive():
                        await anyio.sleep(POLL)
                raise
        if failure:
            e = failure[0]
            if isinstance(e, UmiError):
                raise McpToolError(str(e))
            raise e
        if outcome is None:
            raise McpToolError("the run ended without an outcome")
        return TaskResult(answer=outcome.answer, status=outcome.status, steps=outcome.steps)

    app.add_tool(run_task, name=TOOL_NAME, title="Run a task with the umi-edge team", description=describe(team),
                 structured_output=True)
    return app


def serve(team: Any, *, transport: str = "stdio", host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Serve `team` until the host disconnects (stdio) or the process is interrupted (http, at /mcp)."""
    app = build_server(team)
    if transport == "stdio":
        app.run("stdio")
    elif transport == "http":
        app.run("streamable-http", host=host, port=port)
    else:
        raise ValueError(f"transport must be stdio or http, not {transport!r}")
