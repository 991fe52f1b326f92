"""MCP tool-source latency beside a Python tool: start + list tools, the first call, later calls, and close,
medians over N cycles, with the MCP/Python ratio per call. No model runs.

    python scripts/mcp_latency.py [--cycles 20] [--calls 20] [--json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import statistics
import sys
import time

from umi_edge.tools import ToolSet
from umi_edge.tools.sources import open_sources

TIME = f"mcp:{shlex.quote(sys.executable)} -m mcp_server_time --local-timezone Etc/UTC"
ARGS = json.dumps({"timezone": "Asia/Tokyo"})


def get_current_time(timezone: str) -> dict:
    """The same answer as mcp-server-time's tool, computed in-process."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    now = datetime.now(ZoneInfo(timezone))
    return {"timezone": timezone, "datetime": now.isoformat(timespec="seconds"), "day_of_week": now.strftime("%A"),
            "is_dst": bool(now.dst())}


def measure(cycles: int, calls: int) -> dict:
    start, first, later, close, python = [], [], [], [], []
    local = ToolSet([get_current_time])
    for _ in range(cycles):
        t0 = time.perf_counter()
        with contextlib.ExitStack() as stack:
            tools = open_sources([TIME], stack)
            t1 = time.perf_counter()
            assert tools.call("get_current_time", ARGS, timeout=30).ok
            t2 = time.perf_counter()
            for _ in range(calls):
                t = time.perf_counter()
                assert tools.call("get_current_time", ARGS, timeout=30).ok
                later.append(time.perf_counter() - t)
            t3 = time.perf_counter()
        close.append(time.perf_counter() - t3)
        start.append(t1 - t0)
        first.append(t2 - t1)
        for _ in range(calls):
            t = time.perf_counter()
            assert local.call("get_current_time", ARGS, timeout=30).ok
            python.append(time.perf_counter() - t)
    med = statistics.median
    return {"cycles": cycles, "calls_per_cycle": calls, "start_and_list_s": med(start), "first_call_s": med(first),
            "later_call_s": med(later), "close_s": med(close), "python_call_s": med(python),
            "later_call_ratio_mcp_over_python": med(later) / med(python)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    r = measure(a.cycles, a.calls)
    if a.json:
        print(json.dumps(r))
        return
    print(f"mcp-server-time over stdio, medians of {r['cycles']} cycles x {r['calls_per_cycle']} calls")
    print(f"  start + list tools  {r['start_and_list_s'] * 1000:8.1f} ms")
    print(f"  first call          {r['first_call_s'] * 1000:8.1f} ms")
    print(f"  later calls         {r['later_call_s'] * 1000:8.1f} ms   "
          f"(python tool: {r['python_call_s'] * 1000:.2f} ms, ratio {r['later_call_ratio_mcp_over_python']:.1f}x)")
    print(f"  close (ends server) {r['close_s'] * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
