"""One CUDA offload check of the umi-edge runtime on a random-weight Llama GGUF built here; writes a JSON report.

Checks (each records pass / fail / "skipped: ..." plus its numbers; one failing never stops the others):
offload (llama.cpp sees a GPU, layers offloaded, device), parity (64 greedy tokens and last-position logits,
CPU vs all layers on the GPU), shared_memory (GPU memory after 1 vs 3 roles on one model), lora (an adapter
on one GPU context changes only that context), speed (decode and prompt tokens/s, CPU vs GPU), team (the
constrained caller through Team / run_team on a GPU models.toml set). The CPU side runs in a child process
with CUDA_VISIBLE_DEVICES="" so that llama.cpp cannot hand CPU-resident work to the GPU.

    python scripts/gpu/check.py --out gpu_check.json [--require-gpu] [--n-embd 512 --n-layer 8]

Exit status 0 when nothing failed (with --require-gpu, a skipped GPU check counts as failed).
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

try:   # llama.cpp's libraries before numpy's (see umi_edge.engine._native.preload)
    import llama_cpp.llama_cpp  # noqa: F401
except ImportError:
    pass

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]    # umi_edge without installing it; tests/tiny_gguf.py

NO_GPU = "skipped: no GPU offload in this build"
WORDS = ["Action", ": ", "Action Input", "calculator", "country_info", "Next", " caller", " conclusion",
         '{"', '": "', '"}', "expression", "hello", " world", " the", " of", " and"]
PROMPT = "hello world: the Action of the calculator and country_info"
N_GREEDY = 64
N_PROMPT_EVAL = 448
REAL_STDERR = sys.stderr


class LogTee(io.TextIOBase):
    """Stands in for sys.stderr: keeps llama.cpp's log text (UMI_EDGE_LLAMA_LOGS=1 writes it there)."""

    def __init__(self, echo: bool):
        self.parts: list[str] = []
        self.echo = echo

    def write(self, s: str) -> int:
        self.parts.append(s)
        if self.echo:
            REAL_STDERR.write(s)
        return len(s)

    def text(self) -> str:
        return "".join(self.parts)


# --- model files ---------------------------------------------------------------------------------------

def write_model(path: Path, n_embd: int, n_layer: int) -> int:
    """A random-weight F32 Llama with a byte-level BPE vocab (bytes + WORDS with merges); returns n_vocab."""
    from tiny_gguf import byte_unicode, write_llama_gguf

    bu = byte_unicode()
    words = ["".join(bu[b] for b in w.encode()) for w in WORDS]
    tokens = ["<s>", "</s>"] + [bu[b] for b in range(256)]
    merges = []
    for w in words:     # left-to-right merges, every prefix a token
        for i in range(2, len(w) + 1):
            if w[:i] not in tokens:
                tokens.append(w[:i])
            merges.append(f"{w[:i - 1]} {w[i - 1]}")
    write_llama_gguf(path, tokens, list(dict.fromkeys(merges)), n_embd=n_embd, n_layer=n_layer, n_head=8,
                     n_head_kv=4, n_ff=3 * n_embd, n_ctx=4096, seed=0, scale=0.05, embd_scale=1.0, out_scale=0.5)
    return len(tokens)


def write_lora(path: Path, n_embd: int, n_layer: int, rank: int = 8) -> None:
    """A random LoRA adapter GGUF on attn_q of every layer (llama.cpp layout: lora_a (r, in), lora_b (out, r))."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(rank))
    rng = np.random.default_rng(7)
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_q.weight.lora_a", (rng.standard_normal((rank, n_embd)) * 0.2).astype(np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight.lora_b", (rng.standard_normal((n_embd, rank)) * 0.2).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# --- one side (CPU or GPU) of parity / LoRA logits / speed ------------------------------------------------

def measure(model_path: Path, lora_path: Path, n_gpu_layers: int) -> dict:
    """Greedy tokens, last-prompt logits (plain and with the adapter) and speeds through LlamaBackend roles."""
    import numpy as np

    from umi_edge.engine.llama import LlamaBackend, _default_threads

    out: dict = {"n_gpu_layers": n_gpu_layers, "threads": _default_threads()[0]}
    with LlamaBackend() as be:
        model = be.load_model(model_path, n_gpu_layers=n_gpu_layers)
        prompt = [model.bos_id] + model.tokenize(PROMPT)
        role = be.new_role(model, name="parity", n_ctx=1024)
        role.generate(prompt, max_tokens=0)
        out["logits"] = role.last_logits().tolist()
        role.reset()
        g = role.generate(prompt, max_tokens=N_GREEDY)
        out["tokens"] = list(g.tokens)
        adapter = be.load_adapter(model, lora_path)
        tuned = be.new_role(model, name="tuned", adapter=adapter, n_ctx=1024)
        tuned.generate(prompt, max_tokens=0)
        out["tuned_logits"] = tuned.last_logits().tolist()

        # prompt eval: the runtime's default 64-token micro-batch, and 512; best of 4 (the first warms up)
        rng = np.random.default_rng(1)
        long = [model.bos_id] + rng.integers(2, model.n_vocab, N_PROMPT_EVAL - 1).tolist()
        for ub in (64, 512):
            r = be.new_role(model, name=f"prompt{ub}", n_ctx=1024, n_ubatch=ub)
            best = float("inf")
            for _ in range(4):
                r.reset()
                gen = r.generate(long, max_tokens=0)
                best = min(best, gen.prompt_seconds)
            out[f"prompt_tps_ubatch{ub}"] = gen.n_evaluated / best
        # decode: greedy from a few prompts (a random model may hit EOS early; count what was decoded)
        r = be.new_role(model, name="decode", n_ctx=1024)
        r.generate(prompt, max_tokens=8)    # warm-up
        n, secs = 0, 0.0
        for k in range(3):
            r.reset()
            gen = r.generate([model.bos_id] + model.tokenize(f"{PROMPT} {k}"), max_tokens=128)
            n += gen.n_generated - 1        # the first token is sampled from the prompt's logits
            secs += gen.decode_seconds
        out["decode_tokens"] = n
        out["decode_tps"] = n / secs if secs else 0.0
    return out


def run_cpu_child(model_path: Path, lora_path: Path, out_path: Path) -> dict:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, __file__, "--cpu-child", str(model_path), str(lora_path), str(out_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"CPU child failed (rc {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(out_path.read_text())


# --- GPU memory ------------------------------------------------------------------------------------------

def gpu_used_mib() -> float | None:
    """Device memory in use (all processes), from nvidia-smi; None without it."""
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                           capture_output=True, text=True, timeout=30)
        return float(r.stdout.split()[0]) if r.returncode == 0 else None
    except (OSError, IndexError, ValueError, subprocess.TimeoutExpired):
        return None


def nvidia_smi_info() -> str | None:
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
        return r.stdout.strip() if r.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def ggml_devices() -> list[dict]:
    """ggml's backend devices (name, description, type, free/total MiB) through its C API in libggml.so."""
    import ctypes

    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml.so"))
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    for f in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(lib, f).restype = ctypes.c_char_p
        getattr(lib, f).argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                                            ctypes.POINTER(ctypes.c_size_t)]
    out = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        out.append({"name": lib.ggml_backend_dev_name(dev).decode(), "type": lib.ggml_backend_dev_type(dev),
                    "description": lib.ggml_backend_dev_description(dev).decode(),
                    "free_mib": round(free.value / 2**20, 1), "total_mib": round(total.value / 2**20, 1)})
    return out


def gpu_free_mib() -> float | None:
    """Free memory of the first GPU as CUDA reports it to ggml (this process's view); None without a GPU."""
    gpus = [d for d in ggml_devices() if d["type"] in (1, 2)]     # GGML_BACKEND_DEVICE_TYPE_GPU / IGPU
    return gpus[0]["free_mib"] if gpus else None


# --- checks ----------------------------------------------------------------------------------------------

class Checks:
    def __init__(self, args, work: Path, tee: LogTee):
        self.args, self.work, self.tee = args, work, tee
        self.results: dict[str, dict] = {}
        self.gpu = False
        self.cpu: dict | None = None
        self.gpu_side: dict | None = None

    def run(self, name: str, fn) -> None:
        t0 = time.perf_counter()
        try:
            res = fn()
        except Exception as e:  # noqa: BLE001 - a check's failure is recorded, the others still run
            res = {"status": "fail", "error": f"{type(e).__name__}: {e}",
                   "traceback": traceback.format_exc(limit=6)}
        res["seconds"] = round(time.perf_counter() - t0, 3)
        self.results[name] = res
        print(f"[{name}] {res['status']} ({res['seconds']} s)", file=REAL_STDERR, flush=True)

    def gpu_status(self, ok: bool) -> str:
        return ("pass" if ok else "fail") if self.gpu else NO_GPU

    # offload: llama.cpp's view of the device, and how many layers a -1 request put on it
    def offload(self) -> dict:
        from umi_edge.engine import _native
        from umi_edge.engine.llama import LlamaBackend

        L = _native.lib()
        self.gpu = bool(L.llama_supports_gpu_offload())
        start = len(self.tee.parts)
        with LlamaBackend() as be:
            model = be.load_model(self.model_path, n_gpu_layers=-1)
            n_layer = L.llama_model_n_layer(model.ptr)
        log = self.tee.text()
        m = re.search(r"offloaded (\d+)/(\d+) layers to GPU", "".join(self.tee.parts[start:])) or \
            re.search(r"offloaded (\d+)/(\d+) layers to GPU", log)
        devices = re.findall(r"Device \d+: ([^\n]+)", log)
        res = {
            "supports_gpu_offload": self.gpu,
            "n_layer": n_layer,
            "offloaded": f"{m.group(1)}/{m.group(2)}" if m else None,
            "devices": devices,
            "nvidia_smi": nvidia_smi_info(),
            "system_info": L.llama_print_system_info().decode("utf-8", "replace").strip(),
            "buffers": re.findall(r"(\w+) model buffer size = ([\d.]+ MiB)", log),
        }
        try:
            res["ggml_devices"] = ggml_devices()
        except Exception as e:  # noqa: BLE001 - informational
            res["ggml_devices"] = f"{type(e).__name__}: {e}"
        ok = bool(m) and int(m.group(1)) == int(m.group(2)) and int(m.group(1)) >= n_layer
        res["status"] = self.gpu_status(ok)
        return res

    # parity: the CPU child's greedy tokens and logits against all layers on the GPU
    def parity(self) -> dict:
        import numpy as np

        self.cpu = run_cpu_child(self.model_path, self.lora_path, self.work / "cpu.json")
        self.gpu_side = measure(self.model_path, self.lora_path, -1)
        a, b = np.array(self.cpu["logits"]), np.array(self.gpu_side["logits"])
        diff = float(np.abs(a - b).max())
        same = self.cpu["tokens"] == self.gpu_side["tokens"]
        first = next((i for i, (x, y) in enumerate(zip(self.cpu["tokens"], self.gpu_side["tokens"])) if x != y), None)
        rel = diff / max(float(np.abs(a).max()), 1e-9)
        res = {"tokens_identical": same, "n_tokens": len(self.cpu["tokens"]), "first_difference": first,
               "max_abs_logit_diff": diff, "max_abs_logit": float(np.abs(a).max()), "relative_diff": rel,
               "cpu_tokens": self.cpu["tokens"], "gpu_tokens": self.gpu_side["tokens"]}
        res["status"] = self.gpu_status(same and rel < 1e-2)
        return res

    def speed(self) -> dict:
        if self.cpu is None or self.gpu_side is None:
            return {"status": "fail", "error": "no measurements (the parity check failed first)"}
        res = {}
        for key in ("decode_tps", "prompt_tps_ubatch64", "prompt_tps_ubatch512"):
            c, g = self.cpu[key], self.gpu_side[key]
            res[key] = {"cpu": round(c, 1), "gpu": round(g, 1), "gpu_over_cpu": round(g / c, 2) if c else None}
        res["decode_tokens"] = {"cpu": self.cpu["decode_tokens"], "gpu": self.gpu_side["decode_tokens"]}
        res["cpu_threads"] = self.cpu["threads"]
        ok = all(v["cpu"] > 0 and v["gpu"] > 0 for k, v in res.items() if k.endswith("_tps") or "ubatch" in k)
        res["status"] = self.gpu_status(ok)
        return res

    # shared_memory: weights once on the device; each extra role adds its KV cache and compute buffers
    def shared_memory(self) -> dict:
        from umi_edge.engine.llama import LlamaBackend

        n_ctx = 2048
        # free memory as this process's CUDA sees it (ggml -> cudaMemGetInfo), and nvidia-smi's used (all processes)
        snaps: dict[str, dict] = {}

        def snap(label):
            snaps[label] = {"free_mib": gpu_free_mib(), "used_mib": gpu_used_mib()}

        snap("before")
        with LlamaBackend() as be:
            model = be.load_model(self.model_path, n_gpu_layers=-1)
            snap("model")
            prompt = [model.bos_id] + model.tokenize(PROMPT)
            for i in range(3):      # one decode each, so that compute buffers are allocated too
                be.new_role(model, name=f"r{i}", n_ctx=n_ctx).generate(prompt, max_tokens=4)
                if i == 0:
                    snap("1_role")
            snap("3_roles")
            model_mib = round(model.size_bytes / 2**20, 1)
            n_embd_kv = model._meta_int("llama.embedding_length") // 2   # n_head_kv = n_head / 2 in write_model
            n_layer = model._meta_int("llama.block_count")
        res: dict = {"n_ctx": n_ctx, "model_mib": model_mib, "snapshots": snaps,
                     "kv_mib_per_role": round(2 * n_ctx * n_layer * n_embd_kv * 2 / 2**20, 1)}   # K and V, f16
        if snaps["before"]["free_mib"] is not None:
            taken = {k: snaps["before"]["free_mib"] - v["free_mib"] for k, v in snaps.items()}
            res["source"] = "ggml free memory"
        elif snaps["before"]["used_mib"] is not None:
            taken = {k: v["used_mib"] - snaps["before"]["used_mib"] for k, v in snaps.items()}
            res["source"] = "nvidia-smi used"
        else:
            res["status"] = NO_GPU if not self.gpu else "fail"
            res["error"] = "no GPU memory reading (no CUDA device in ggml, no nvidia-smi)"
            return res
        res.update(weights_mib_on_gpu=taken["model"], one_role_mib=taken["1_role"] - taken["model"],
                   per_extra_role_mib=(taken["3_roles"] - taken["1_role"]) / 2, total_3_roles_mib=taken["3_roles"])
        # weights on the device once: loading the model put ~the file there, and later roles add no more than
        # the first one did (KV + llama.cpp's per-context CUDA buffers, ~104 MiB each on the H200 run whatever
        # the model size, so "less than a weight copy" was the wrong rule for this 97 MiB test model)
        res["context_overhead_mib"] = round(res["one_role_mib"] - res["kv_mib_per_role"], 1)
        ok = (0.8 * model_mib <= res["weights_mib_on_gpu"] <= 1.3 * model_mib
              and res["per_extra_role_mib"] <= res["one_role_mib"] + 1)
        res["status"] = self.gpu_status(ok)
        return res

    # lora: an adapter set on one GPU context; the others stay bit-identical
    def lora(self) -> dict:
        import numpy as np

        from umi_edge.engine.llama import LlamaBackend

        with LlamaBackend() as be:
            model = be.load_model(self.model_path, n_gpu_layers=-1)
            adapter = be.load_adapter(model, self.lora_path)
            roles = {"base1": be.new_role(model, name="base1", n_ctx=512),
                     "tuned": be.new_role(model, name="tuned", adapter=adapter, n_ctx=512),
                     "base2": be.new_role(model, name="base2", n_ctx=512)}
            prompt = [model.bos_id] + model.tokenize(PROMPT)
            logits = {}
            for name, r in roles.items():
                r.generate(prompt, max_tokens=0)
                logits[name] = r.last_logits()
            roles["base1"].reset()
            roles["base1"].generate(prompt, max_tokens=0)
            again = roles["base1"].last_logits()
        res = {"base_bit_identical": bool(np.array_equal(logits["base1"], logits["base2"])),
               "base_after_reset_identical": bool(np.array_equal(again, logits["base2"])),
               "tuned_vs_base_max_diff": float(np.abs(logits["tuned"] - logits["base1"]).max())}
        ok = res["base_bit_identical"] and res["base_after_reset_identical"] and res["tuned_vs_base_max_diff"] > 1e-2
        if self.cpu is not None:
            cpu_tuned = np.array(self.cpu["tuned_logits"])
            res["tuned_gpu_vs_cpu_max_diff"] = float(np.abs(logits["tuned"] - cpu_tuned).max())
            ok = ok and res["tuned_gpu_vs_cpu_max_diff"] < 1e-2 * max(float(np.abs(cpu_tuned).max()), 1e-9)
        res["status"] = self.gpu_status(ok)
        return res

    # team: three roles on one GPU model from a models.toml set; every caller output must parse
    def team(self) -> dict:
        from umi_edge.engine.fake import FakeEngine
        from umi_edge.events import Call, Error, Outcome
        from umi_edge.loop import run_team
        from umi_edge.team import Team
        from umi_edge.tools import parse_arguments

        toml = self.work / "models.toml"
        toml.write_text(f'''[models.gpu-check]
path = "{self.model_path.name}"

[sets.gpu-check]
model = "gpu-check"
n_gpu_layers = -1
n_ctx = 2048
max_tokens = 32
max_steps = 2
budget_seconds = 300
tools = "umi_edge.tools.demo:TOOLS"
sampling = {{ temperature = 1.0, seed = 1 }}
caller = {{ max_tokens = 256 }}
summarizer = {{ max_tokens = 16 }}
''')
        calls, bad, statuses, errors = 0, [], [], []

        def consume(events):
            nonlocal calls
            for e in events:
                if isinstance(e, Error):
                    errors.append(e.text)
                if isinstance(e, Call):
                    calls += 1
                    tool = team.tools[e.tool] if e.tool in team.tools.names else None
                    if tool is None or parse_arguments(e.arguments, tool.parameters)[1] is not None:
                        bad.append(e.text)
                if isinstance(e, Outcome):
                    statuses.append(e.status)

        with Team.load("gpu-check", models=toml, download=False) as team:
            res = {"models_loaded": len(team.models), "roles": list(team.roles),
                   "n_gpu_layers": sorted({r.n_gpu_layers for r in team.spec.roles.values()})}
            for k in range(2):
                consume(team.run(f"task {k}: what is 2 + 2?"))
            # a scripted planner that always routes to the caller: the real caller must produce N parseable calls
            n_forced = 3
            planner = FakeEngine(["I should call a tool.\n Next: caller."] * n_forced, name="planner")
            roles = {"planner": planner, "caller": team.roles["caller"], "summarizer": team.roles["summarizer"]}
            # planner_tokens: a scripted output cut short loses its route marker and asks the planner again
            limits = dataclasses.replace(team.limits, max_steps=n_forced, planner_tokens=64)
            before = calls
            consume(run_team("what is 2 + 2?", roles, team.tools, limits=limits))
            res["forced_calls"] = calls - before
        res.update({"calls": calls, "unparseable_calls": bad[:5], "statuses": statuses, "errors": errors[:5]})
        ok = (not bad and not errors and res["models_loaded"] == 1 and res["forced_calls"] == n_forced
              and all(s in ("answered", "gave_up", "max_steps") for s in statuses))
        # the loop itself is not GPU-specific: it passes or fails on its own; the offload check covers the device
        res["status"] = "pass" if ok else "fail"
        return res

    def build_files(self) -> dict:
        t0 = time.perf_counter()
        self.model_path = self.work / "model.gguf"
        self.lora_path = self.work / "lora.gguf"
        n_vocab = write_model(self.model_path, self.args.n_embd, self.args.n_layer)
        write_lora(self.lora_path, self.args.n_embd, self.args.n_layer)
        return {"status": "pass", "n_embd": self.args.n_embd, "n_layer": self.args.n_layer, "n_vocab": n_vocab,
                "model_mib": round(self.model_path.stat().st_size / 2**20, 1), "build_seconds": round(time.perf_counter() - t0, 2)}


def summarize(r: dict) -> dict:
    """The headline numbers of each check, one line each."""
    out = {}

    def line(name, fn):
        if name in r:
            try:
                out[name] = fn(r[name])
            except Exception as e:  # noqa: BLE001 - a summary never hides the report
                out[name] = r[name]["status"] if r[name]["status"] != "pass" else f"(no summary: {e!r})"

    line("offload", lambda o: f"offloaded {o['offloaded']} (n_layer {o['n_layer']}); "
                              f"{(o['devices'] or [o['nvidia_smi']])[0]}")
    line("parity", lambda p: f"{p['n_tokens']} greedy tokens identical: {p['tokens_identical']} (first diff "
                             f"{p['first_difference']}); max |dlogit| {p['max_abs_logit_diff']:.3g} of "
                             f"max |logit| {p['max_abs_logit']:.3g}")
    line("speed", lambda s: "; ".join(f"{k}: cpu {v['cpu']} / gpu {v['gpu']} = {v['gpu_over_cpu']}x"
                                      for k, v in s.items() if isinstance(v, dict) and "gpu_over_cpu" in v)
                            + f" (cpu threads {s['cpu_threads']})")
    line("shared_memory", lambda m: f"model file {m['model_mib']} MiB; on the GPU ({m['source']}): weights "
                                    f"{m['weights_mib_on_gpu']}, first role +{m['one_role_mib']}, each extra role "
                                    f"+{m['per_extra_role_mib']} (f16 KV {m['kv_mib_per_role']}); 3 roles in all "
                                    f"{m['total_3_roles_mib']}")
    line("lora", lambda lo: f"base contexts bit-identical {lo['base_bit_identical']}; tuned vs base "
                            f"{lo['tuned_vs_base_max_diff']:.3g}; tuned GPU vs CPU "
                            f"{lo.get('tuned_gpu_vs_cpu_max_diff', float('nan')):.3g}")
    line("team", lambda t: f"{t['calls']} calls ({t['forced_calls']} forced), unparseable "
                           f"{len(t['unparseable_calls'])}; outcomes {t['statuses']}; models loaded "
                           f"{t['models_loaded']}, n_gpu_layers {t['n_gpu_layers']}")
    for k, v in r.items():
        if v.get("status") == "fail" and "error" in v:
            out[k] = f"FAIL {v['error']}"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    ap.add_argument("--n-embd", type=int, default=512)
    ap.add_argument("--n-layer", type=int, default=8)
    ap.add_argument("--require-gpu", action="store_true", help="a GPU check skipped for lack of offload fails")
    ap.add_argument("--llama-logs", action="store_true", help="echo llama.cpp's log to stderr")
    ap.add_argument("--cpu-child", nargs=3, metavar=("MODEL", "LORA", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    os.environ["UMI_EDGE_LLAMA_LOGS"] = "1"
    tee = LogTee(args.llama_logs)
    sys.stderr = tee
    if args.cpu_child:
        model, lora, out = map(Path, args.cpu_child)
        out.write_text(json.dumps(measure(model, lora, 0)))
        return 0

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="umi-gpu-") as tmp:
        c = Checks(args, Path(tmp), tee)
        c.run("files", c.build_files)
        if c.results["files"]["status"] == "pass":
            for name in ("offload", "parity", "speed", "shared_memory", "lora", "team"):
                c.run(name, getattr(c, name))
    statuses = {k: v["status"] for k, v in c.results.items()}
    failed = [k for k, s in statuses.items() if s == "fail" or (args.require_gpu and s.startswith("skipped"))]
    report = {"ok": not failed, "summary": summarize(c.results), "failed": failed, "statuses": statuses, "gpu_offload": c.gpu,
              "seconds": round(time.perf_counter() - t0, 2), "checks": c.results,
              "llama_log_tail": tee.text()[-4000:]}
    tmp_out = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp_out.write_text(json.dumps(report, indent=1))
    os.replace(tmp_out, args.out)
    sys.stderr = REAL_STDERR
    print(json.dumps({k: report[k] for k in ("ok", "failed", "statuses", "summary", "seconds")}, indent=1))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
