"""A restricted pickle machine for torch state dicts: it runs the opcodes torch.save writes and nothing else.

Python's unpickler is not used at all: it would let a file mutate the objects `find_class` hands out
(BUILD), recurse in C while hashing a deeply nested tuple key (a segfault), and grow without bound. Here
only our own markers and rebuild functions can be named, BUILD is accepted only on an OrderedDict (torch
stores a state dict's `_metadata` that way; the state is ignored), every container's nesting depth and the
total number of objects are bounded, and every malformed input is a ConvertError naming the file.
"""
from __future__ import annotations

import struct
from collections import OrderedDict

from umi_edge.errors import ConvertError

# far beyond a state dict (depth 4, ~15 objects per tensor), far below what exhausts the C stack or memory
MAX_DEPTH = 64
MAX_OBJECTS = 1 << 22
MAX_NDIM = 32
_MAX_LINE = 256
_MAX_LONG_BYTES = 16


class StorageType:
    """What `torch.FloatStorage` etc. unpickle to: the dtype of a storage, immutable."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: str) -> None:
        object.__setattr__(self, "dtype", dtype)

    def __setattr__(self, *_):
        raise AttributeError("read-only")


class Storage:
    """A reference to `<prefix>/data/<key>` in the archive."""

    __slots__ = ("dtype", "key")

    def __init__(self, dtype: str, key: str) -> None:
        self.dtype = dtype
        self.key = key


class PendingTensor:
    """A tensor as the pickle describes it; its geometry is checked against the storage later."""

    __slots__ = ("storage", "storage_offset", "size", "stride")

    def __init__(self, storage: Storage, storage_offset: int, size: tuple, stride: tuple) -> None:
        self.storage = storage
        self.storage_offset = storage_offset
        self.size = size
        self.stride = stride


class _Refused(Exception):
    """Raised inside the machine; load() adds the file name and turns it into a ConvertError."""

    def __init__(self, why: str, refused: bool = False) -> None:
        super().__init__(why)
        self.refused = refused


def _is_int(x) -> bool:
    return type(x) is int


def _rebuild_tensor(storage=None, storage_offset=None, size=None, stride=None, *_ignored):
    if not isinstance(storage, Storage):
        raise _Refused("tensor rebuilt from something that is not a storage")
    if not (_is_int(storage_offset) and type(size) is tuple and type(stride) is tuple
            and all(_is_int(x) for x in (*size, *stride))):
        raise _Refused("tensor rebuilt with non-integer geometry")
    if len(size) != len(stride) or len(size) > MAX_NDIM:
        raise _Refused(f"tensor rebuilt with {len(size)} sizes and {len(stride)} strides")
    return PendingTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data=None, *_ignored):
    if not isinstance(data, PendingTensor):
        raise _Refused("parameter rebuilt from something that is not a tensor")
    return data


def _ordered_dict(items=None):
    # protocol 2 writes OrderedDict() then SETITEMS; Python 2 era pickles pass a list of [key, value] pairs
    d = OrderedDict()
    if items is not None:
        if type(items) is not list or not all(type(p) in (list, tuple) and len(p) == 2 for p in items):
            raise _Refused("OrderedDict rebuilt from something that is not a list of pairs")
        for k, v in items:
            d[_hashable(k)] = v
    return d


_STORAGES = {
    "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16", "DoubleStorage": "F64",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL",
}
# (module, name) -> what the pickle gets instead; our own harmless functions and immutable markers
ALLOWED: dict[tuple[str, str], object] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): _ordered_dict,
    **{("torch", name): StorageType(dt) for name, dt in _STORAGES.items()},
}
_CALLABLE = (_rebuild_tensor, _rebuild_parameter, _ordered_dict)


def _hashable(key):
    # keys are strings, numbers or tuples of depth <= MAX_DEPTH (lists and dicts do not hash), so this
    # cannot recurse deeply
    try:
        hash(key)
    except TypeError:
        raise _Refused(f"unhashable dict key of type {type(key).__name__}") from None
    return key


def _printable(s: str, limit: int = 80) -> str:
    return ascii(s)[1:-1][:limit]


class _Machine:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.stack: list = []
        self.marks: list[list] = []
        self.memo: dict[int, object] = {}
        self.objects = 0
        # nesting depth of every container made here; they are all kept alive so ids stay unique
        self.depth: dict[int, int] = {}
        self.keep: list = []

    # --- reading ---------------------------------------------------------------------------------------

    def read(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise _Refused("truncated pickle")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def raw_line(self) -> bytes:
        end = bytes(self.data[self.pos:self.pos + _MAX_LINE + 1]).find(b"\n")
        if end < 0:
            raise _Refused("truncated pickle or overlong text field")
        return bytes(self.read(end + 1)[:-1])

    def line(self) -> str:
        try:
            return self.raw_line().decode("utf-8")
        except UnicodeDecodeError:
            raise _Refused("text field is not UTF-8") from None

    def count(self) -> None:
        """Every value, mark and memo entry counts against MAX_OBJECTS."""
        self.objects += 1
        if self.objects > MAX_OBJECTS:
            raise _Refused(f"more than {MAX_OBJECTS} objects; not a state dict", refused=True)

    # --- stack -----------------------------------------------------------------------------------------

    def push(self, x) -> None:
        self.count()
        self.stack.append(x)

    def pop(self):
        if not self.stack:
            raise _Refused("stack underflow")
        return self.stack.pop()

    def top(self):
        if not self.stack:
            raise _Refused("stack underflow")
        return self.stack[-1]

    def pop_mark(self) -> list:
        if not self.marks:
            raise _Refused("no MARK to pop")
        items = self.stack
        self.stack = self.marks.pop()
        return items

    def container(self, obj, items) -> object:
        d = 1 + max((self.depth.get(id(x), 0) for x in items), default=0)
        if d > MAX_DEPTH:
            raise _Refused(f"objects nested deeper than {MAX_DEPTH} levels; not a state dict", refused=True)
        self.depth[id(obj)] = max(d, self.depth.get(id(obj), 0))
        self.keep.append(obj)
        return obj

    def grow(self, target, items) -> None:
        """Record that `items` were put into the existing list or dict `target`."""
        self.container(target, items)

    # --- opcodes ---------------------------------------------------------------------------------------

    def run(self):
        ops = _OPS
        while True:
            op = self.read(1)[0]
            fn = ops.get(op)
            if fn is None:
                name = _NAMES.get(op)
                raise _Refused(f"pickle opcode {name or hex(op)} is not used by state dicts", refused=name is not None)
            if fn is _stop:
                if self.marks or len(self.stack) != 1:
                    raise _Refused("STOP with an unbalanced stack")
                return self.stack[0]
            fn(self)


def _stop(m: _Machine) -> None:  # handled in run()
    pass


def _proto(m):
    if m.read(1)[0] > 5:
        raise _Refused("unknown pickle protocol")


def _frame(m):
    m.unpack("<Q")  # frames only group the opcodes that follow; their length is advisory


def _mark(m):
    m.count()
    m.marks.append(m.stack)
    m.stack = []


def _pop(m):
    if m.stack:
        m.stack.pop()
    else:
        m.pop_mark()


def _get(m, idx):
    if idx not in m.memo:
        raise _Refused(f"memo entry {idx} is read before it is written")
    m.push(m.memo[idx])


def _put(m, idx):
    if idx < 0:
        raise _Refused("negative memo index")
    m.count()
    m.memo[idx] = m.top()


def _text_int(m) -> int:
    s = m.line()
    digits = s.rstrip("L").lstrip("-")
    if len(s) > 40 or not (digits.isascii() and digits.isdigit()):
        raise _Refused("bad integer field")
    return int(s.rstrip("L"))


def _long(m, n):
    if n > _MAX_LONG_BYTES:
        raise _Refused(f"{n}-byte integer; not a state dict")
    m.push(int.from_bytes(m.read(n), "little", signed=True))


def _text_float(m):
    try:
        m.push(float(m.line()))
    except ValueError:
        raise _Refused("bad float field") from None


def _unicode(m, n):
    try:
        m.push(str(m.read(n), "utf-8", "surrogatepass"))
    except UnicodeDecodeError:
        raise _Refused("string is not UTF-8") from None


def _binstring(m, n):
    if n < 0:
        raise _Refused("negative string length")
    try:
        m.push(str(m.read(n), "ascii"))
    except UnicodeDecodeError:
        raise _Refused("byte string is not ASCII") from None


def _raw_unicode(m):
    try:
        m.push(m.raw_line().decode("raw-unicode-escape"))
    except UnicodeDecodeError:
        raise _Refused("bad string field") from None


def _tuple(m, items):
    m.push(m.container(tuple(items), items))


def _setitems(m, items):
    if len(items) % 2:
        raise _Refused("odd number of items for SETITEMS")
    target = m.top()
    if type(target) not in (dict, OrderedDict):
        raise _Refused(f"SETITEMS on a {type(target).__name__}")
    for i in range(0, len(items), 2):
        target[_hashable(items[i])] = items[i + 1]
    m.grow(target, items)


def _appends(m, items):
    target = m.top()
    if type(target) is not list:
        raise _Refused(f"APPENDS on a {type(target).__name__}")
    target.extend(items)
    m.grow(target, items)


def _global(m, module: str, name: str):
    obj = ALLOWED.get((module, name))
    if obj is None:
        raise _Refused(f"the pickle references {_printable(module)}.{_printable(name)}, which is not a tensor "
                       "global (only plain state dicts are accepted; re-save the checkpoint as safetensors)",
                       refused=True)
    m.push(obj)


def _stack_global(m):
    name, module = m.pop(), m.pop()
    if type(module) is not str or type(name) is not str:
        raise _Refused("STACK_GLOBAL needs two strings")
    _global(m, module, name)


def _reduce(m):
    args, func = m.pop(), m.pop()
    if not any(func is f for f in _CALLABLE):
        raise _Refused(f"the pickle calls a {type(func).__name__}, which is not a tensor rebuild function",
                       refused=True)
    if type(args) is not tuple:
        raise _Refused("REDUCE arguments are not a tuple")
    try:
        res = func(*args)
    except TypeError:
        raise _Refused("wrong number of arguments to a tensor rebuild function") from None
    m.push(m.container(res, args) if type(res) is OrderedDict else res)


def _build(m):
    state, inst = m.pop(), m.top()
    # torch.save writes a state dict's `_metadata` this way; it is not needed for conversion
    if type(inst) is not OrderedDict or not (type(state) is dict or (type(state) is tuple and len(state) == 2)):
        raise _Refused(f"BUILD on a {type(inst).__name__} is not part of a state dict", refused=True)


def _persid(m):
    pid = m.pop()
    if (type(pid) is not tuple or len(pid) < 3 or pid[0] != "storage" or not isinstance(pid[1], StorageType)
            or type(pid[2]) is not str):
        raise _Refused(f"unexpected persistent id of type {type(pid).__name__}", refused=True)
    m.push(Storage(pid[1].dtype, pid[2]))


def _dict_from_mark(m):
    items = m.pop_mark()
    d: dict = {}
    m.push(d)
    _setitems(m, items)


def _list_from_mark(m):
    items = m.pop_mark()
    m.push(m.container(list(items), items))


_OPS = {
    0x80: _proto,
    0x95: _frame,
    ord("."): _stop,
    ord("("): _mark,
    ord("0"): _pop,
    ord("1"): lambda m: m.pop_mark(),
    ord("2"): lambda m: m.push(m.top()),
    ord("N"): lambda m: m.push(None),
    0x88: lambda m: m.push(True),
    0x89: lambda m: m.push(False),
    ord("J"): lambda m: m.push(m.unpack("<i")),
    ord("K"): lambda m: m.push(m.read(1)[0]),
    ord("M"): lambda m: m.push(m.unpack("<H")),
    0x8A: lambda m: _long(m, m.read(1)[0]),
    0x8B: lambda m: _long(m, m.unpack("<I")),
    ord("I"): lambda m: m.push(_text_int(m)),
    ord("L"): lambda m: m.push(_text_int(m)),
    ord("G"): lambda m: m.push(m.unpack(">d")),
    ord("F"): _text_float,
    ord("X"): lambda m: _unicode(m, m.unpack("<I")),
    0x8C: lambda m: _unicode(m, m.read(1)[0]),
    0x8D: lambda m: _unicode(m, m.unpack("<Q")),
    ord("V"): _raw_unicode,
    ord("T"): lambda m: _binstring(m, m.unpack("<i")),
    ord("U"): lambda m: _binstring(m, m.read(1)[0]),
    ord("B"): lambda m: m.push(bytes(m.read(m.unpack("<I")))),
    ord("C"): lambda m: m.push(bytes(m.read(m.read(1)[0]))),
    0x8E: lambda m: m.push(bytes(m.read(m.unpack("<Q")))),
    ord(")"): lambda m: _tuple(m, []),
    ord("t"): lambda m: _tuple(m, m.pop_mark()),
    0x85: lambda m: _tuple(m, [m.pop()]),
    0x86: lambda m: _tuple(m, list(reversed([m.pop(), m.pop()]))),
    0x87: lambda m: _tuple(m, list(reversed([m.pop(), m.pop(), m.pop()]))),
    ord("]"): lambda m: m.push(m.container([], [])),
    ord("l"): _list_from_mark,
    ord("a"): lambda m: _appends(m, [m.pop()]),
    ord("e"): lambda m: _appends(m, m.pop_mark()),
    ord("}"): lambda m: m.push(m.container({}, [])),
    ord("d"): _dict_from_mark,
    ord("s"): lambda m: _setitems(m, list(reversed([m.pop(), m.pop()]))),
    ord("u"): lambda m: _setitems(m, m.pop_mark()),
    ord("c"): lambda m: _global(m, m.line(), m.line()),
    0x93: _stack_global,
    ord("R"): _reduce,
    ord("b"): _build,
    ord("Q"): _persid,
    ord("g"): lambda m: _get(m, _text_int(m)),
    ord("h"): lambda m: _get(m, m.read(1)[0]),
    ord("j"): lambda m: _get(m, m.unpack("<I")),
    ord("p"): lambda m: _put(m, _text_int(m)),
    ord("q"): lambda m: _put(m, m.read(1)[0]),
    ord("r"): lambda m: _put(m, m.unpack("<I")),
    0x94: lambda m: _put(m, len(m.memo)),
}


def _opcode_names() -> dict[int, str]:
    import pickletools

    return {ord(op.code) if len(op.code) == 1 else op.code[0]: op.name for op in pickletools.opcodes}


_NAMES = _opcode_names()


def load(data: bytes, where: str) -> object:
    """The object a torch state-dict pickle describes, built by the restricted machine; ConvertError
    (naming `where`) for anything else. Nothing from the file is ever called or imported."""
    m = _Machine(data)
    try:
        return m.run()
    except _Refused as e:
        if e.refused:
            raise ConvertError(f"{where}: refused to load: {e}") from None
        raise ConvertError(f"{where}: unreadable pickle ({e}, at byte {m.pos}); re-save the checkpoint") from None
    except (struct.error, OverflowError, MemoryError) as e:
        raise ConvertError(f"{where}: unreadable pickle ({type(e).__name__}); re-save the checkpoint") from None


__all__ = ["ALLOWED", "MAX_DEPTH", "MAX_NDIM", "MAX_OBJECTS", "PendingTensor", "Storage", "StorageType", "load"]
