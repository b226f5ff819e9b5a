#!/usr/bin/env python3
"""keylock recorded-input files in Python (standard library and numpy only).

A recorded file (docs/SPEC.md, "Recorded inputs") holds the samples that
offline tests, canaries and `keylock run` use:

    [ { inputs: { name: { dtype, dims, data: bstr } }, ? label: uint }, ... ]

(`outputs` in place of `inputs` for output files). This module writes it in the
same canonical CBOR that keylock's own encoder writes (byte for byte, for labels
below 2^32), and reads it in the lenient profile keylock reads: integers and
lengths in any width, indefinite lengths, null for "no label", and `data` as tag
64 or a little-endian typed-array tag of the dtype's element type.
It carries its own small CBOR codec, so nothing but numpy is needed:

    import numpy as np
    import keylock_recorded as kr

    kr.write_recorded("digits.cbor", [
        {"inputs": {"input": images[i].astype(np.float32)}, "label": int(labels[i])}
        for i in range(len(images))
    ])
    for s in kr.read_recorded("out.cbor", kind="outputs"):
        print(s["outputs"]["logits"].argmax(), s.get("label"))

Command line:
    python3 keylock_recorded.py show FILE [--kind outputs]       one line per tensor
    python3 keylock_recorded.py json FILE [--kind outputs]       every sample as JSON (data as hex)
    python3 keylock_recorded.py rewrite IN OUT [--kind outputs]  read, then write canonically
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from typing import Any, BinaryIO, Dict, List, Sequence, Union

import numpy as np

MAX_RECORDED_BYTES = 1 << 30
MAX_RECORDED_ITEMS = 1 << 24
MAX_SAMPLES = 1 << 24
MAX_DEPTH = 64
MAX_RANK = 16

# keylock's dtype names (runtime/tensor.ts) and their little-endian numpy types.
# There is no float16: keylock has no such dtype.
DTYPES: Dict[str, np.dtype] = {
    "float32": np.dtype("<f4"), "float64": np.dtype("<f8"),
    "int8": np.dtype("i1"), "uint8": np.dtype("u1"),
    "int16": np.dtype("<i2"), "uint16": np.dtype("<u2"),
    "int32": np.dtype("<i4"), "uint32": np.dtype("<u4"),
    "int64": np.dtype("<i8"), "uint64": np.dtype("<u8"),
    "bool": np.dtype("?"),
}
_BY_KIND = {(d.kind, d.itemsize): name for name, d in DTYPES.items()}

# Tags accepted around `data` (as keylock reads them): 64 and 68 are plain bytes;
# the others are RFC 8746 little-endian typed arrays of one dtype.
_TAG_DTYPE = {64: None, 68: None, 69: "uint16", 70: "uint32", 71: "uint64", 72: "int8",
              77: "int16", 78: "int32", 79: "int64", 85: "float32", 86: "float64"}

PathOrFile = Union[str, "os.PathLike[str]", BinaryIO]


class FormatError(ValueError):
    """A file that is not a well-formed recorded file; the message says what was expected and found."""


# ---------------------------------------------------------------------------
# CBOR
# ---------------------------------------------------------------------------

def _head(major: int, n: int) -> bytes:
    """A header in its shortest form, as keylock writes it."""
    if n < 24:
        return bytes([major << 5 | n])
    if n < 1 << 8:
        return bytes([major << 5 | 24, n])
    if n < 1 << 16:
        return bytes([major << 5 | 25]) + struct.pack(">H", n)
    if n < 1 << 32:
        return bytes([major << 5 | 26]) + struct.pack(">I", n)
    if n < 1 << 64:
        return bytes([major << 5 | 27]) + struct.pack(">Q", n)
    raise ValueError("integer out of CBOR range: %d" % n)


def encode_cbor(value: Any, out: List[bytes]) -> None:
    """Appends the canonical CBOR of ints, str, bytes, lists and str-keyed dicts (insertion order) to `out`."""
    if isinstance(value, bool):
        out.append(b"\xf5" if value else b"\xf4")
    elif isinstance(value, int):
        out.append(_head(0, value) if value >= 0 else _head(1, -1 - value))
    elif isinstance(value, str):
        b = value.encode("utf-8")  # strict: lone surrogates raise
        out.append(_head(3, len(b)))
        out.append(b)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
        out.append(_head(2, len(b)))
        out.append(b)
    elif isinstance(value, (list, tuple)):
        out.append(_head(4, len(value)))
        for v in value:
            encode_cbor(v, out)
    elif isinstance(value, dict):
        out.append(_head(5, len(value)))
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError("map keys must be str, got %s" % type(k).__name__)
            encode_cbor(k, out)
            encode_cbor(v, out)
    else:
        raise TypeError("cannot encode %s as CBOR" % type(value).__name__)


class _Typed:
    """A tagged byte string (tag 64 or a typed-array tag)."""

    def __init__(self, tag: int, data: bytes) -> None:
        self.tag = tag
        self.data = data


_MAJOR = ["an unsigned integer", "a negative integer", "a byte string", "a text string",
          "an array", "a map", "a tag", "a simple value or float"]
_BREAK = object()


class _Reader:
    """A decoder of one CBOR item in keylock's lenient profile (docs/SPEC.md, "Recorded inputs")."""

    def __init__(self, data: bytes, what: str) -> None:
        self.b = data
        self.pos = 0
        self.items = 0
        self.what = what

    def fail(self, at: int, why: str) -> None:
        raise FormatError("%s: %s at byte %d" % (self.what, why, at))

    def take(self, n: int, at: int) -> bytes:
        if n > len(self.b) - self.pos:
            self.fail(at, "truncated CBOR (%d bytes declared, %d left)" % (n, len(self.b) - self.pos))
        v = self.b[self.pos:self.pos + n]
        self.pos += n
        return v

    def head(self):
        at = self.pos
        self.items += 1
        if self.items > MAX_RECORDED_ITEMS:
            raise FormatError("%s: more than %d CBOR items" % (self.what, MAX_RECORDED_ITEMS))
        ib = self.take(1, at)[0]
        major, ai = ib >> 5, ib & 31
        if ai < 24:
            arg = ai
        elif ai <= 27:
            arg = int.from_bytes(self.take(1 << (ai - 24), at), "big")
        elif ai == 31 and major in (2, 3, 4, 5, 7):
            arg = None  # indefinite length, or a break
        else:
            self.fail(at, "a malformed CBOR header byte 0x%02x" % ib)
        return at, major, ai, arg

    def item(self, depth: int) -> Any:
        at, major, ai, arg = self.head()
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major in (2, 3):
            if arg is None:
                parts = []
                while True:
                    cat, cmajor, _, carg = self.head()
                    if cmajor == 7 and carg is None:
                        break
                    if cmajor != major or carg is None:
                        self.fail(cat, "%s inside an indefinite-length %s" % (_MAJOR[cmajor], _MAJOR[major][2:]))
                    parts.append(self.string(major, carg, cat))
                return b"".join(parts) if major == 2 else "".join(parts)
            return self.string(major, arg, at)
        if major in (4, 5):
            if depth >= MAX_DEPTH:
                self.fail(at, "nesting deeper than %d levels" % MAX_DEPTH)
            if arg is not None and arg * (2 if major == 5 else 1) > len(self.b) - self.pos:
                self.fail(at, "%s of %d entries with %d bytes left" % (_MAJOR[major], arg, len(self.b) - self.pos))
            if major == 4:
                out = []
                while arg is None or len(out) < arg:
                    v = self.item(depth + 1)
                    if v is _BREAK:
                        if arg is None:
                            break
                        self.fail(self.pos - 1, "a break byte inside a definite-length array")
                    out.append(v)
                return out
            obj: Dict[str, Any] = {}
            n = 0
            while arg is None or n < arg:
                kat = self.pos
                k = self.item(depth + 1)
                if k is _BREAK and arg is None:
                    break
                if not isinstance(k, str):
                    self.fail(kat, "a map key that is not a text string")
                if k in obj:
                    self.fail(kat, "a map key that appears twice (%r)" % k)
                v = self.item(depth + 1)
                if v is _BREAK:
                    self.fail(self.pos - 1, "a map that ends after a key, without its value")
                obj[k] = v
                n += 1
            return obj
        if major == 6:
            if arg not in _TAG_DTYPE:
                self.fail(at, "a CBOR tag (%d); only 64 and the little-endian typed-array tags are accepted" % arg)
            v = self.item(depth + 1)
            if not isinstance(v, bytes):
                self.fail(at, "tag %d followed by something other than a byte string" % arg)
            return _Typed(arg, v)
        if ai == 20 or ai == 21:
            return ai == 21
        if ai == 22 or ai == 23:
            return None
        if ai in (25, 26, 27):
            return struct.unpack({25: ">e", 26: ">f", 27: ">d"}[ai], arg.to_bytes(1 << (ai - 24), "big"))[0]
        if ai == 31:
            return _BREAK
        self.fail(at, "a CBOR simple value (%d)" % arg)

    def string(self, major: int, n: int, at: int) -> Any:
        b = self.take(n, at)
        if major == 2:
            return b
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(at, "a text string that is not UTF-8")


def decode_cbor(data: bytes, what: str = "CBOR") -> Any:
    """Decodes exactly one CBOR item that fills `data` (lenient profile); FormatError otherwise."""
    r = _Reader(bytes(data), what)
    if not r.b:
        raise FormatError("%s: expected CBOR data, got an empty file" % what)
    v = r.item(0)
    if v is _BREAK:
        r.fail(0, "a break byte outside an indefinite-length item")
    if r.pos != len(r.b):
        r.fail(r.pos, "trailing bytes after the CBOR item (%d bytes)" % (len(r.b) - r.pos))
    return v


# ---------------------------------------------------------------------------
# Recorded files
# ---------------------------------------------------------------------------

def dtype_name(a: np.ndarray) -> str:
    """keylock's name for the dtype of `a` (byte order aside); ValueError for any other dtype."""
    name = _BY_KIND.get((a.dtype.kind, a.dtype.itemsize))
    if name is None:
        raise ValueError("expected an array of one of %s, got %s" % (" ".join(DTYPES), a.dtype))
    return name


def _tensor(what: str, x: Any) -> Dict[str, Any]:
    a = np.asarray(x)
    name = _BY_KIND.get((a.dtype.kind, a.dtype.itemsize))
    if name is None:
        raise ValueError("%s: expected an array of one of %s, got %s" % (what, " ".join(DTYPES), a.dtype))
    data = np.ascontiguousarray(a, dtype=DTYPES[name]).tobytes()  # little-endian, row-major
    return {"dtype": name, "dims": [int(d) for d in a.shape], "data": data}


def _check_kind(kind: str) -> None:
    if kind not in ("inputs", "outputs"):
        raise ValueError("kind: expected 'inputs' or 'outputs', got %r" % (kind,))


def encode_recorded(samples: Sequence[Dict[str, Any]], kind: str = "inputs") -> bytes:
    """The canonical bytes of a recorded file, as keylock's encodeRecorded writes them."""
    _check_kind(kind)
    tree = []
    for i, s in enumerate(samples):
        m = s.get(kind) if isinstance(s, dict) else None
        if not isinstance(m, dict):
            raise ValueError("sample[%d]: expected a dict with a %r dict of arrays" % (i, kind))
        o: Dict[str, Any] = {kind: {str(k): _tensor("sample[%d].%s.%s" % (i, kind, k), v) for k, v in m.items()}}
        label = s.get("label")
        if label is not None:
            if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)) or label < 0:
                raise ValueError("sample[%d].label: expected a non-negative int, got %r" % (i, label))
            o["label"] = int(label)
        tree.append(o)
    out: List[bytes] = []
    encode_cbor(tree, out)
    return b"".join(out)


def write_recorded(path_or_file: PathOrFile, samples: Sequence[Dict[str, Any]], kind: str = "inputs") -> None:
    """Writes samples ({kind: {name: ndarray}, 'label': int (optional)}) to a path or binary file."""
    data = encode_recorded(samples, kind)
    if hasattr(path_or_file, "write"):
        path_or_file.write(data)  # type: ignore[union-attr]
    else:
        with open(path_or_file, "wb") as f:  # type: ignore[arg-type]
            f.write(data)


def _read_tensor(what: str, t: Any) -> np.ndarray:
    if not isinstance(t, dict):
        raise FormatError("%s: expected a map, got %s" % (what, type(t).__name__))
    dtype = t.get("dtype")
    if dtype not in DTYPES:
        raise FormatError("%s.dtype: expected a dtype name (%s), got %r" % (what, ", ".join(DTYPES), dtype))
    dims = t.get("dims")
    if not isinstance(dims, list) or len(dims) > MAX_RANK:
        raise FormatError("%s.dims: expected an array of at most %d dims, got %r" % (what, MAX_RANK, dims))
    for i, d in enumerate(dims):
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise FormatError("%s.dims[%d]: expected a non-negative integer, got %r" % (what, i, d))
    data = t.get("data")
    if isinstance(data, _Typed):
        want = _TAG_DTYPE[data.tag]
        if want is not None and want != dtype:
            raise FormatError("%s.data: expected a byte string or %s typed array, got a %s array (tag %d)" % (what, dtype, want, data.tag))
        data = data.data
    if not isinstance(data, bytes):
        raise FormatError("%s.data: expected a byte string, got %s" % (what, type(data).__name__))
    n = 1
    for d in dims:
        n *= d
    need = n * DTYPES[dtype].itemsize
    if len(data) != need:
        raise FormatError("%s.data: dims [%s] of %s need %d bytes, got %d" % (what, ",".join(map(str, dims)), dtype, need, len(data)))
    return np.frombuffer(data, dtype=DTYPES[dtype]).reshape(dims).copy()


def read_recorded(path_or_bytes: Union[PathOrFile, bytes, bytearray, memoryview], kind: str = "inputs") -> List[Dict[str, Any]]:
    """Reads a recorded file (a path, a binary file or its bytes): [{kind: {name: ndarray}, 'label': int}, ...]."""
    _check_kind(kind)
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
    elif hasattr(path_or_bytes, "read"):
        data = path_or_bytes.read(MAX_RECORDED_BYTES + 1)  # type: ignore[union-attr]
    else:
        with open(path_or_bytes, "rb") as f:  # type: ignore[arg-type]
            data = f.read(MAX_RECORDED_BYTES + 1)
    if len(data) > MAX_RECORDED_BYTES:
        raise FormatError("recorded file: over the limit of %d bytes" % MAX_RECORDED_BYTES)
    v = decode_cbor(data, "recorded file")
    if not isinstance(v, list):
        raise FormatError("recorded file: expected an array of samples, got %s" % type(v).__name__)
    if len(v) > MAX_SAMPLES:
        raise FormatError("recorded file: %d samples is over the limit of %d" % (len(v), MAX_SAMPLES))
    out = []
    for i, s in enumerate(v):
        if not isinstance(s, dict):
            raise FormatError("sample[%d]: expected a map, got %s" % (i, type(s).__name__))
        m = s.get(kind)
        if not isinstance(m, dict):
            raise FormatError("sample[%d].%s: expected a map, got %s" % (i, kind, type(m).__name__))
        r: Dict[str, Any] = {kind: {k: _read_tensor("sample[%d].%s.%s" % (i, kind, k), t) for k, t in m.items()}}
        label = s.get("label")
        if label is not None:
            if isinstance(label, bool) or not isinstance(label, int) or label < 0:
                raise FormatError("sample[%d].label: expected a non-negative integer, got %r" % (i, label))
            r["label"] = label
        out.append(r)
    return out


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def _as_json(samples: List[Dict[str, Any]], kind: str) -> List[Dict[str, Any]]:
    return [{
        "label": s.get("label"),
        kind: {k: {"dtype": dtype_name(a), "dims": list(a.shape), "data": a.astype(a.dtype.newbyteorder("<")).tobytes().hex()}
               for k, a in s[kind].items()},
    } for s in samples]


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="keylock_recorded.py", description="Read and write keylock recorded files.")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, help_ in (("show", "one line per tensor"), ("json", "every sample as JSON, data as little-endian hex")):
        c = sub.add_parser(name, help=help_)
        c.add_argument("file")
        c.add_argument("--kind", default="inputs", choices=["inputs", "outputs"])
    c = sub.add_parser("rewrite", help="read a recorded file and write it again in canonical form")
    c.add_argument("file")
    c.add_argument("out")
    c.add_argument("--kind", default="inputs", choices=["inputs", "outputs"])
    a = p.parse_args(argv)
    try:
        samples = read_recorded(a.file, a.kind)
    except (OSError, FormatError) as e:
        sys.stderr.write("keylock_recorded: %s\n" % e)
        return 1
    if a.cmd == "json":
        json.dump(_as_json(samples, a.kind), sys.stdout)
        sys.stdout.write("\n")
    elif a.cmd == "rewrite":
        write_recorded(a.out, samples, a.kind)
    else:
        print("%d sample(s) of %s" % (len(samples), a.kind))
        for i, s in enumerate(samples):
            for k, t in s[a.kind].items():
                stats = "" if t.size == 0 else " min %g max %g sum %g" % (t.min(), t.max(), t.astype(np.float64).sum())
                print("sample[%d]%s %s %s %s%s" % (i, "" if "label" not in s else " label %d" % s["label"], k, dtype_name(t), list(t.shape), stats))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
