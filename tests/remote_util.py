"""Test helpers for remote role engines: a tiny ASCII-vocab Llama GGUF, real inference servers started on
127.0.0.1 (llama-cpp-python's `llama_cpp.server`, llama.cpp's `llama-server`) and a stdlib HTTP server that
answers in a server's documented wire shape (for the kinds that cannot run here: vLLM, Ollama)."""
from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tiny_gguf import byte_unicode, write_llama_gguf

ASCII = [9, 10, 13] + list(range(32, 127))


def write_ascii_llama(path, *, seed: int = 0, n_embd: int = 32, out_scale: float = 1.0) -> None:
    """A random-weight Llama (F32) whose vocab is BOS, EOS and the printable ASCII bytes: whatever it generates
    is ASCII, so a server that streams text returns it unchanged, and text tokenizes one way only (byte by
    byte), so a server that re-reads generated text as a prompt gets the very ids the model produced."""
    bu = byte_unicode()
    tokens = ["<s>", "</s>"] + [bu[b] for b in ASCII]
    write_llama_gguf(path, tokens, [f"{bu[ord('A')]} {bu[ord('c')]}"], n_embd=n_embd, n_layer=2, n_head=4,
                     n_head_kv=2, n_ctx=8192, n_ff=2 * n_embd, seed=seed, scale=0.3, embd_scale=1.0,
                     out_scale=out_scale)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {timeout:g} s: {log.read_text()[-2000:]}")


class ServerProcess:
    """`with ServerProcess(argv, log) as s:` — starts a server subprocess on a free port (argv gets PORT
    substituted), waits for GET /v1/models, terminates it on exit. `s.url` is its root."""

    def __init__(self, argv: list[str], log: Path):
        self.port = free_port()
        self.argv = [a.replace("PORT", str(self.port)) for a in argv]
        self.log = log
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "ServerProcess":
        self._fh = open(self.log, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self._fh, stderr=subprocess.STDOUT)
        try:
            wait_ready(self.url, self.proc, self.log)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._fh.close()


def llama_cpp_python_server(gguf: Path, log: Path, *, n_ctx: int = 2048) -> ServerProcess:
    """llama-cpp-python's own server (the `server` extra) serving `gguf` on one thread."""
    return ServerProcess([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                          "--port", "PORT", "--n_ctx", str(n_ctx), "--n_threads", "1", "--n_threads_batch", "1",
                          "--verbose", "False"], log)


def llama_server(binary: Path, gguf: Path, log: Path, *, n_ctx: int = 2048, parallel: int = 1,
                 threads: int = 1) -> ServerProcess:
    """llama.cpp's llama-server; `n_ctx` is per slot (the total is n_ctx × parallel). Flash attention off and
    64-token micro-batches, as the local engine computes, so greedy outputs can be compared bit for bit."""
    return ServerProcess([str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", "PORT",
                          "-c", str(n_ctx * parallel), "-np", str(parallel), "-t", str(threads), "-tb", str(threads),
                          "-fa", "off", "-ub", "64", "--no-webui"], log)


class CannedServer:
    """A stdlib HTTP server on 127.0.0.1 that records each request and answers with `respond(method, path,
    body) -> (status, content_type, [chunks])`, each chunk written and flushed as it comes (a stream).
    `delay_start`: the port is reserved at once but served only after that many seconds."""

    def __init__(self, respond, *, delay_start: float = 0.0):
        self.respond = respond
        self.requests: list[tuple[str, str, dict | None]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.delay_start = delay_start
        self._server = None

    def __enter__(self) -> "CannedServer":
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _serve(self, method):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                body = json.loads(raw) if raw else None
                outer.requests.append((method, self.path, body))
                status, ctype, chunks = outer.respond(method, self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    for chunk in chunks:
                        self.wfile.write(chunk if isinstance(chunk, bytes) else chunk.encode())
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

        def start():
            if self.delay_start:
                time.sleep(self.delay_start)
            self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
            self._server.daemon_threads = True
            self._server.serve_forever(poll_interval=0.05)

        self._thread = threading.Thread(target=start, daemon=True)
        self._thread.start()
        if not self.delay_start:
            while self._server is None:
                time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        deadline = time.monotonic() + 5
        while self._server is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def sse(*objs, done: bool = True) -> list[str]:
    """Server-sent events: one `data: {json}` per object, then `data: [DONE]`."""
    return [f"data: {json.dumps(o)}\n\n" for o in objs] + (["data: [DONE]\n\n"] if done else [])


def build_llama_server(cache: Path) -> Path:
    """llama.cpp's llama-server built once into `cache` from the llama.cpp source vendored in the sdist of the
    installed llama-cpp-python (the same source its bindings were compiled from); cmake, ninja or make and a
    C++ compiler, about 10+ minutes on 2 cores. Raises RuntimeError (with the log's tail) when it cannot."""
    import shutil
    import tarfile
    from importlib import metadata

    version = metadata.version("llama_cpp_python")
    binary = cache / f"llama-server-{version}" / "bin" / "llama-server"
    if binary.is_file():
        return binary
    if shutil.which("cmake") is None:
        raise RuntimeError("cmake is not installed")
    sdists = sorted((cache / "pypi").glob(f"llama_cpp_python-{version}.tar.gz"))
    if not sdists:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
                        "-d", str(cache / "pypi"), f"llama-cpp-python=={version}"], check=True, capture_output=True)
        sdists = sorted((cache / "pypi").glob(f"llama_cpp_python-{version}.tar.gz"))
    src = cache / f"llama.cpp-src-{version}"
    if not (src / "CMakeLists.txt").is_file():
        shutil.rmtree(src, ignore_errors=True)
        with tarfile.open(sdists[0]) as tar:
            for m in tar.getmembers():
                rel = m.name.split("/vendor/llama.cpp/", 1)
                if len(rel) == 2 and (m.isfile() or m.isdir()):
                    dest = src / rel[1]
                    if m.isdir():
                        dest.mkdir(parents=True, exist_ok=True)
                    else:
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        dest.write_bytes(tar.extractfile(m).read())
    build = cache / f"llama-server-{version}"
    log = cache / f"llama-server-{version}.log"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    with open(log, "wb") as fh:
        for argv in (["cmake", "-S", str(src), "-B", str(build), *gen, "-DCMAKE_BUILD_TYPE=Release",
                      "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_TESTS=OFF",
                      "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_OPENSSL=OFF", "-DBUILD_SHARED_LIBS=OFF"],
                     ["cmake", "--build", str(build), "--target", "llama-server", "-j", "2"]):
            if subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT).returncode != 0:
                raise RuntimeError(f"building llama-server failed: {log.read_text()[-1500:]}")
    if not binary.is_file():
        raise RuntimeError(f"the build left no {binary}")
    return binary
