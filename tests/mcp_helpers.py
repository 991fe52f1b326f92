"""Shared by the MCP tests: a fault-injection MCP server written with the SDK, child-process counting from
/proc, a free port, and waiting for an HTTP server to listen."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

FAULT_SERVER = '''
import os, sys, time
from typing import TypedDict

from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, TextContent

app = MCPServer("faults")


class Point(TypedDict):
    x: int
    y: int


@app.tool()
def echo(text: str, times: int = 1) -> str:
    """Repeat a text."""
    return text * times


@app.tool()
def whoami() -> str:
    """This server's process id."""
    return str(os.getpid())


@app.tool()
def env(name: str) -> str:
    """An environment variable of the server."""
    return os.environ.get(name, "")


@app.tool()
def point(x: int, y: int) -> Point:
    """A structured result."""
    return {"y": y, "x": x}


@app.tool(structured_output=False)
def blocks() -> list[TextContent]:
    """Two text blocks."""
    return [TextContent(text="first"), TextContent(text="second")]


@app.tool()
def boom(reason: str) -> str:
    """Raises."""
    raise ValueError(reason)


@app.tool()
def refuse() -> CallToolResult:
    """Returns an error result."""
    return CallToolResult(content=[TextContent(text="not allowed here")], is_error=True)


@app.tool()
async def freeze(seconds: float) -> str:
    """Blocks the server's event loop: the whole server hangs."""
    time.sleep(seconds)
    return "thawed"


@app.tool()
def die() -> str:
    """The server exits mid-call."""
    print("dying now", file=sys.stderr, flush=True)
    os._exit(3)


if __name__ == "__main__":
    marker = os.environ.get("FAULT_SERVER_REFUSE_IF")
    if marker and os.path.exists(marker):
        sys.exit("fault server refuses to start: " + marker + " exists")
    print("fault server up", file=sys.stderr, flush=True)
    if len(sys.argv) > 2 and sys.argv[1] == "--http":
        app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        app.run()
'''


def write_fault_server(folder: Path) -> Path:
    path = Path(folder) / "fault_server.py"
    path.write_text(FAULT_SERVER)
    return path


def descendants(pid: int | None = None) -> set[int]:
    """Every live process below `pid` (default: this one), read from /proc (no psutil)."""
    pid = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def settle_descendants(expected: set[int], timeout: float = 10.0) -> set[int]:
    """The descendants once they match `expected` (a closing process can take a moment to be reaped)."""
    deadline = time.monotonic() + timeout
    while True:
        now = descendants()
        if now <= expected or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")
