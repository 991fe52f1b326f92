"""Hand-built GGUF bytes for the header-reading tests: any count, length or type, valid or not."""
from __future__ import annotations

import contextlib
import signal
import struct
from pathlib import Path

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)


def s(text: str | bytes) -> bytes:
    """A GGUF string: u64 length + bytes."""
    b = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(b)) + b


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def kv_str(key: str, value: str | bytes) -> bytes:
    return kv(key, STRING, s(value))


def kv_u32(key: str, value: int) -> bytes:
    return kv(key, U32, struct.pack("<I", value))


def kv_array(key: str, etype: int, count: int, body: bytes = b"") -> bytes:
    """An array header claiming `count` elements of `etype`, followed by `body` (which may hold fewer)."""
    return kv(key, ARRAY, struct.pack("<IQ", etype, count) + body)


def tensor_info(name: str, shape: tuple[int, ...], ggml_type: int = 0, offset: int = 0) -> bytes:
    return s(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape) \
        + struct.pack("<IQ", ggml_type, offset)


def gguf_bytes(kvs: list[bytes], tensors: list[bytes] = (), *, version: int = 3, n_kv: int | None = None,
               n_tensors: int | None = None, data: bytes = b"") -> bytes:
    """Magic, version, counts (the real ones unless given), the entries, padding to 32 and `data`."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(tensors)
    if data:
        body += b"\0" * (-len(body) % 32) + data
    return body


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def rich_gguf(path: Path) -> Path:
    """A small valid GGUF (gguf.GGUFWriter) using every value type, nested and string arrays, umi.* keys and
    a few tiny tensors: the seed the fuzz tests mutate and the parity tests compare against gguf-py."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("rich")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_context_length(256)
    w.add_uint8("x.u8", 7)
    w.add_int8("x.i8", -7)
    w.add_uint16("x.u16", 65535)
    w.add_int16("x.i16", -300)
    w.add_int32("x.i32", -70000)
    w.add_float32("x.f32", 0.5)
    w.add_bool("x.bool", True)
    w.add_uint64("x.u64", 1 << 40)
    w.add_int64("x.i64", -(1 << 40))
    w.add_float64("x.f64", 0.25)
    w.add_array("x.strs", ["a", "bc", "", "déjà"])
    w.add_array("x.ints", [1, 2, 3])
    w.add_array("x.nested", [[1, 2], [3]])
    w.add_string("umi.role", "caller")
    w.add_string("umi.source", "test")
    w.add_tensor("token_embd.weight", np.arange(32, dtype=np.float32).reshape(4, 8))
    w.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    w.add_tensor("half", np.ones((2, 16), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fails the test (instead of hanging the suite) when the body runs longer than `seconds`."""
    def on_alarm(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
