"""`umi-edge bench remote`: what running roles on an inference server costs and buys, on one machine.

- overhead: the same greedy planner steps (prompts of a growing α-UMi history, each reusing the last one's
  prefix) decoded by a local role and by a remote role on a server on 127.0.0.1 serving the same GGUF with the
  same thread count; per-step seconds side by side (A B A B, medians after a warm-up), their ratio, and whether
  the outputs matched.
- throughput: `umi-edge eval tasks SUITE --jobs N` with every role on one server (N slots), for each N; tasks
  per second and the ratio to --jobs 1.

The server is llama.cpp's llama-server when a binary is given (`--llama-server`), else llama-cpp-python's own
(which runs one request at a time, so --jobs cannot help it). Nothing is asserted: figures are for people.
"""
from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..errors import EngineError


@dataclass(frozen=True)
class RemoteBenchConfig:
    model: str | None = None            # a GGUF; None: the default set's model (fetched like `umi-edge run`)
    llama_server: str | None = None     # llama.cpp's llama-server binary; None: llama-cpp-python's server
    threads: int = 1                    # the server's and the local role's, so both sides compute alike
    n_ctx: int = 2048                   # per role, and per server slot
    steps: int = 6                      # planner steps in the overhead replay
    max_tokens: int = 32                # greedy tokens per step
    repeats: int = 3                    # A B pairs after one warm-up pair
    jobs: tuple[int, ...] = (1, 2, 4)   # eval tasks --jobs values, against a server with max(jobs) slots
    tasks: str = "demo"                 # the eval suite
    limit: int = 8                      # its first tasks
    max_steps: int = 2                  # planner turns per task
    sections: tuple[str, ...] = ("overhead", "throughput")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """An inference server subprocess on 127.0.0.1 serving one GGUF; `kind` and `url` say what and where."""

    def __init__(self, gguf: Path, *, llama_server: str | None, n_ctx: int, slots: int, threads: int, log: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if llama_server:
            self.kind = "llama.cpp"
            self.argv = [llama_server, "-m", str(gguf), "--host", "127.0.0.1", "--port", str(self.port),
                         "-c", str(n_ctx * slots), "-np", str(slots), "-t", str(threads), "-tb", str(threads),
                         "-fa", "off", "-ub", "64", "--no-webui"]   # as the local engine computes
        else:
            self.kind = "llama-cpp-python"
            self.argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                         "--port", str(self.port), "--n_ctx", str(n_ctx), "--n_threads", str(threads),
                         "--n_threads_batch", str(threads), "--verbose", "False"]
        self.log = log

    def __enter__(self) -> "LocalServer":
        self._fh = open(self.log, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self._fh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.__exit__()
                raise EngineError(f"the server exited ({self.proc.returncode}); see {self.log}")
            try:
                with urllib.request.urlopen(self.url + "/v1/models", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise EngineError(f"the server did not come up in 180 s; see {self.log}")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._fh.close()


def _step_prompts(steps: int) -> list:
    """Planner prompts of one demo task over a growing history: each step's prompt extends the previous one."""
    from ..protocol import Turn, get_protocol
    from ..tools.demo import TOOLS

    proto = get_protocol()
    docs = TOOLS.docs(proto.doc_chars)
    history = [Turn("user", "What is the total population of Denmark, Norway and Ireland?")]
    prompts = []
    for k in range(steps):
        prompts.append(proto.planner_prompt(docs, history))
        country = ("Denmark", "Norway", "Ireland", "France", "Spain", "Italy", "Japan", "Chile")[k % 8]
        history += [Turn("assistant", f"Step {k + 1}: Next I look up {country} with country_info.\n Next: caller."),
                    Turn("caller", f'Action: country_info\nAction Input: {{"country": "{country}"}}'),
                    Turn("observation", json.dumps({"name": country, "population": 5_000_000 + 100_000 * k}))]
    return prompts


def overhead(config: RemoteBenchConfig, gguf: Path, workdir: Path, progress: Callable[[str], None]) -> dict:
    import contextlib

    from ..engine.base import Sampling
    from ..engine.llama import LlamaBackend
    from ..engine.remote import RemoteRole, RemoteSpec
    from ..engine.vocab import Vocab
    from ..protocol import get_protocol

    proto = get_protocol()
    prompts = _step_prompts(config.steps)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(LocalServer(gguf, llama_server=config.llama_server, n_ctx=config.n_ctx, slots=1,
                                                 threads=config.threads, log=workdir / "overhead-server.log"))
        backend = stack.enter_context(LlamaBackend())
        model = backend.load_model(gguf)
        local = backend.new_role(model, name="planner", n_ctx=config.n_ctx, n_threads=config.threads,
                                 sampling=Sampling())
        remote = RemoteRole("planner", RemoteSpec(base_url=server.url, server=server.kind), Vocab.of_model(model),
                            n_ctx=config.n_ctx).open()
        ids = [proto.encode(p, model.tokenize, model.bos_id, model.eos_id) for p in prompts]
        times: dict[str, list[float]] = {"local": [], "remote": []}
        wire: list[float] = []      # remote wall time − the server's own compute time, where it reports it
        texts: dict[str, list[str]] = {"local": [], "remote": []}
        reused: dict[str, list[int]] = {"local": [], "remote": []}
        for rep in range(config.repeats + 1):       # the first pair warms caches and pages; not counted
            for side, engine in (("local", local), ("remote", remote)):
                progress(f"overhead: {side} pass {rep + 1}/{config.repeats + 1}")
                for p in ids:
                    t0 = time.perf_counter()
                    g = engine.generate(p, max_tokens=config.max_tokens)
                    dt = time.perf_counter() - t0
                    if rep:
                        times[side].append(dt)
                        if side == "remote" and remote.last_server_seconds is not None:
                            wire.append(dt - remote.last_server_seconds)
                        texts[side].append(g.text)
                        reused[side].append(g.n_reused)
        med = {side: statistics.median(v) for side, v in times.items()}
        return {
            "server": server.kind, "steps": config.steps, "max_tokens": config.max_tokens,
            "prompt_tokens": [len(p) for p in ids], "repeats": config.repeats,
            "local_s_per_step": round(med["local"], 4), "remote_s_per_step": round(med["remote"], 4),
            "remote_over_local": round(med["remote"] / med["local"], 3),
            "overhead_ms_per_step": round(1000 * (med["remote"] - med["local"]), 1),
            # HTTP, JSON and the client's work per step: wall − the server's reported compute (llama-server only)
            "wire_ms_per_step": round(1000 * statistics.median(wire), 1) if wire else None,
            "same_outputs": sum(a == b for a, b in zip(texts["local"], texts["remote"])), "of": len(texts["local"]),
            "mean_reused": {side: round(statistics.mean(v), 1) for side, v in reused.items()},
        }


def throughput(config: RemoteBenchConfig, gguf: Path, workdir: Path, progress: Callable[[str], None]) -> dict:
    slots = max(config.jobs)
    with LocalServer(gguf, llama_server=config.llama_server, n_ctx=config.n_ctx, slots=slots, threads=config.threads,
                     log=workdir / "throughput-server.log") as server:
        toml = workdir / "models.toml"
        roles = "".join(f'[sets.bench-remote.{r}]\nengine = "openai-completions"\nserver = "{server.kind}"\n'
                        f'base_url = "{server.url}"\n' for r in ("planner", "caller", "summarizer"))
        toml.write_text(f'[models.bench]\npath = "{gguf}"\n\n[sets.bench-remote]\nmodel = "bench"\n'
                        f'n_ctx = {config.n_ctx}\nmax_tokens = {config.max_tokens}\n{roles}')
        runs = []
        for jobs in config.jobs:
            progress(f"throughput: eval tasks {config.tasks} --limit {config.limit} --jobs {jobs}")
            argv = [sys.executable, "-c", "import sys; from umi_edge.cli import cli; sys.exit(cli())",
                    "eval", "tasks", config.tasks, "--models", str(toml),
                    "--set", "bench-remote", "--limit", str(config.limit), "--max-steps", str(config.max_steps),
                    "--jobs", str(jobs), "--json"]
            t0 = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            seconds = time.perf_counter() - t0
            if done.returncode != 0:
                raise EngineError(f"eval tasks --jobs {jobs} failed: {done.stderr[-2000:]}")
            report = json.loads(done.stdout.strip().splitlines()[-1])
            runs.append({"jobs": jobs, "seconds": round(seconds, 2), "tasks": report["n_tasks"],
                         "tasks_per_s": round(report["n_tasks"] / seconds, 4), "success_rate": report["success_rate"],
                         "mean_steps": report["mean_steps"]})
        base = runs[0]["tasks_per_s"]
        for r in runs:
            r["vs_jobs_1"] = round(r["tasks_per_s"] / base, 3)
        return {"server": server.kind, "slots": slots, "suite": config.tasks, "runs": runs}


def run_remote_bench(config: RemoteBenchConfig = RemoteBenchConfig(), *,
                     progress: Callable[[str], None] = lambda s: None) -> dict:
    """Both sections; one JSON-ready dict {"config", "machine", "overhead", "throughput", "seconds"}."""
    from ..errors import ConfigError
    from .machine import machine_info

    unknown = [s for s in config.sections if s not in ("overhead", "throughput")]
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)}; valid: overhead, throughput")
    if config.llama_server and not Path(config.llama_server).is_file():
        raise ConfigError(f"--llama-server {config.llama_server} does not exist; build it (docs/remote-engines.md) "
                          f"or leave it out to use llama-cpp-python's server")
    gguf = (Path(config.model) if config.model else _default_model()).resolve()
    if not gguf.is_file():
        raise ConfigError(f"model {gguf} does not exist")
    t0 = time.perf_counter()
    report: dict = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
                    "machine": machine_info(config.threads), "model": str(gguf)}
    with tempfile.TemporaryDirectory(prefix="umi-bench-remote-") as tmp:
        if "overhead" in config.sections:
            report["overhead"] = overhead(config, gguf, Path(tmp), progress)
        if "throughput" in config.sections:
            report["throughput"] = throughput(config, gguf, Path(tmp), progress)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def _default_model() -> Path:
    from .. import fetch
    from ..registry import load_registry, resolve_set

    registry = load_registry()
    spec = resolve_set("default", registry=registry)
    return fetch.model_path(registry.model(spec.roles["planner"].model), progress=True)


def remote_table(report: dict) -> str:
    m = report["machine"]
    lines = [f"model: {report['model']}; threads {report['config']['threads']}; {m.get('cpu', '')}, {m.get('cores')} "
             f"cores, load average {m.get('load_average')}"]
    o = report.get("overhead")
    if o:
        lines += [f"overhead on loopback ({o['server']} server vs a local role, {o['steps']} planner steps of "
                  f"{min(o['prompt_tokens'])}-{max(o['prompt_tokens'])} prompt tokens, {o['max_tokens']} greedy "
                  f"tokens, medians of {o['repeats']} passes):",
                  f"  local {o['local_s_per_step']:.3f} s/step   remote {o['remote_s_per_step']:.3f} s/step   "
                  f"remote ÷ local {o['remote_over_local']:.2f}   ({o['overhead_ms_per_step']:+.1f} ms/step)",
                  *([f"  remote wall − the server's own compute time: {o['wire_ms_per_step']:.1f} ms/step (HTTP, "
                     f"JSON, streaming, the client's tokenizing)"] if o.get("wire_ms_per_step") is not None else []),
                  f"  same outputs: {o['same_outputs']} of {o['of']}; mean prompt tokens reused: local "
                  f"{o['mean_reused']['local']}, remote {o['mean_reused']['remote']}"]
    t = report.get("throughput")
    if t:
        lines.append(f"eval tasks {t['suite']} with every role on one {t['server']} server ({t['slots']} slots):")
        for r in t["runs"]:
            lines.append(f"  --jobs {r['jobs']}: {r['tasks']} tasks in {r['seconds']:.1f} s = {r['tasks_per_s']:.3f} "
                         f"tasks/s (× {r['vs_jobs_1']:.2f} vs --jobs 1); success {100 * r['success_rate']:.0f}%, "
                         f"{r['mean_steps']:.2f} steps")
    return "\n".join(lines)
