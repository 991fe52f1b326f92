"""`umi-edge serve`: a loaded team behind an OpenAI-compatible HTTP API (Starlette + uvicorn + sse-starlette).

Modules: `app` (routes, auth, limits, lifespan), `conversation` (chat requests ↔ α-UMi history), `chat`
(completions and their streamed chunks), `worker` (one task at a time per team, a bounded queue), `page.html`
(the live page at `/`). Importing this package imports nothing heavy; `app` needs the `serve` extra.
"""
from __future__ import annotations

EXTRA_HINT = 'the server needs its extra: pip install "umi-edge[serve]"'
