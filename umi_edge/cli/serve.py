"""`umi-edge serve` (the OpenAI-compatible HTTP server) and `umi-edge mcp` (the team as an MCP server)."""
from __future__ import annotations

import os

import click

from . import _load_team, _team_options, cli


@cli.command("mcp")
@_team_options
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True,
              help="stdio: for a host that starts this command; http: streamable HTTP at http://HOST:PORT/mcp.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind with --transport http.")
@click.option("--port", type=click.IntRange(1, 65535), default=8931, show_default=True,
              help="Port for --transport http.")
@click.pass_context
def mcp_cmd(ctx, set_name, models_path, tools_ref, max_steps, budget_seconds, n_ctx, threads, n_gpu_layers,
            temperature, seed, transport, host, port, tool_top_k=None):
    """Serve the team as an MCP server: one tool, run_task(query) -> {answer, status, steps}, with a progress
    notification per step; a host's cancel cancels the run. The team loads before serving starts."""
    from ..tools.mcp import require_sdk

    require_sdk()   # a missing extra fails before any model loads
    from ..mcp_server import serve

    overrides = dict(n_ctx=n_ctx, threads=threads, n_gpu_layers=n_gpu_layers, temperature=temperature, seed=seed,
                     max_steps=max_steps, budget_seconds=budget_seconds, tool_top_k=tool_top_k)
    verbose = bool(ctx.parent and ctx.parent.params.get("verbose"))
    with _load_team(set_name, models_path, tools_ref, overrides, verbose=verbose) as team:
        if transport == "http":
            click.echo(f"umi-edge mcp: serving run_task at http://{host}:{port}/mcp (Ctrl-C stops)", err=True)
        try:
            serve(team, transport=transport, host=host, port=port)
        except KeyboardInterrupt:
            ctx.exit(130)




@cli.command("serve")
@_team_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; anything but loopback needs --api-key.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="TCP port (0: a free one, printed when ready).")
@click.option("--api-key", envvar="UMI_EDGE_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' on /v1/* (default: $UMI_EDGE_API_KEY).")
@click.option("--max-queue", type=click.IntRange(min=0), default=8, show_default=True,
              help="Requests that may wait per set while one runs; beyond that, 429 with Retry-After.")
@click.option("--max-body", type=click.IntRange(min=1), default=1 << 20, show_default=True,
              help="Largest request body, in bytes.")
@click.option("--cors-origin", "cors_origins", metavar="ORIGIN", multiple=True,
              help="Let browser pages from ORIGIN call the API (repeatable); no CORS headers otherwise.")
@click.pass_context
def serve_cmd(ctx, set_name, models_path, tools_ref, max_steps, budget_seconds, n_ctx, threads, n_gpu_layers,
              temperature, seed, host, port, api_key, max_queue, max_body, cors_origins, tool_top_k=None):
    """Serve teams behind an OpenAI-compatible API: /v1/chat/completions (each set is a model), /v1/models,
    /v1/runs (a run's events as `run --json` prints them), /health, and a live page at /.

    --set takes one set or several, comma-separated. --budget and --max-steps apply per request.
    Stop with Ctrl-C.
    """
    try:
        import uvicorn  # noqa: F401  (the extra's packages, checked before anything loads)

        from ..serve.app import ServeConfig, serve
    except ImportError as e:
        from ..serve import EXTRA_HINT

        raise click.ClickException(f"{EXTRA_HINT} ({e})") from None
    from ..registry import load_registry, resolve_set

    config = ServeConfig(host=host, port=port, api_key=api_key, max_queue=max_queue, max_body=max_body,
                         cors_origins=tuple(cors_origins), budget_seconds=budget_seconds, max_steps=max_steps)
    config.check()
    registry = load_registry(models_path)
    names = [n.strip() for n in (set_name or os.environ.get("UMI_EDGE_SET") or "default").split(",") if n.strip()]
    names = list(dict.fromkeys(resolve_set(n, registry=registry).name for n in names))   # unknown sets fail here
    overrides = dict(n_ctx=n_ctx, threads=threads, n_gpu_layers=n_gpu_layers, temperature=temperature, seed=seed)
    if tool_top_k is not None:
        overrides["tool_top_k"] = tool_top_k
    verbose = bool(ctx.find_root().params.get("verbose"))

    def load():
        teams = {}
        try:
            for name in names:
                teams[name] = _load_team(name, models_path, tools_ref, overrides, verbose=verbose)
        except BaseException:
            for team in teams.values():
                team.close()
            raise
        return teams

    import signal

    click.echo(f"umi-edge serve: loading {', '.join(names)}", err=True)
    # uvicorn shuts down gracefully on SIGINT / SIGTERM, then re-raises the signal: a stop asked for is exit 0
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        serve(load, config, on_ready=lambda url: click.echo(
            f"umi-edge serve: {', '.join(names)} ready; API {url}/v1, page {url}/", err=True))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    click.echo("umi-edge serve: stopped", err=True)
