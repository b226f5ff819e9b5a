#!/usr/bin/env python3
"""keylock key derivation: the Python reference (standard library only).

This module is the language-neutral reference for docs/SPEC.md, section
"Key derivation". It reproduces every scheme key that keylock derives from a
32-byte model key, so that a trainer (PyTorch, JAX, NumPy...) can train with the
same key the device will apply, without any keylock code or package:

    import keylock_keys as kk
    model_key = bytes.fromhex(open("model.key.hex").read().strip())

    # shuffle lock, block size m = 4, RGB, negative/positive variant on
    key = kk.shuffle_block_key(model_key, m=4, channels=3, negpos=True)
    # key["perm"][k]: the block position that output position k takes its value from
    # key["flip"][k] == 1: output position k is replaced by 1 - value
    # (positions k are in block order row, column, channel: k = (p1*m + p2)*C + c)

    # In a PyTorch training loop (x: float tensor N,C,H,W with values in [0, 1]):
    #   perm = torch.tensor(key["perm"]); flip = torch.tensor(key["flip"], dtype=torch.bool)
    #   n, c, h, w = x.shape; m = 4
    #   b = x.reshape(n, c, h // m, m, w // m, m).permute(0, 2, 4, 3, 5, 1)   # n, bh, bw, p1, p2, c
    #   b = b.reshape(n, h // m, w // m, m * m * c)[..., perm]
    #   b = torch.where(flip, 1 - b, b)
    #   x = b.reshape(n, h // m, w // m, m, m, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, h, w)
    # shuffle_image_nchw() below does the same on a flat list and is the
    # reference those lines must agree with (see docs/SPEC.md for vectors).

    # signflip lock: one bit per output channel of a weight tensor
    bits = kk.signflip_layer_bits(model_key, "conv1.weight", out_channels=64)
    # train with the pre-activation of channel j multiplied by (-1 if bits[j] else 1)

Command line:
    python3 keylock_keys.py --json < request.json
reads {"ops": [...]} (see _run_op) and prints {"results": [...]}: the
differential test of the TypeScript runtime uses it.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from typing import Iterator, List, Optional, Sequence

MODEL_KEY_BYTES = 32
LABEL_PREFIX = "keylock/v1/"
NONCE_BYTES = 24
SECRETBOX_KEY_BYTES = 32
KCV_BYTES = 16


# ---------------------------------------------------------------------------
# Generic derivation
# ---------------------------------------------------------------------------

def _check_key(model_key: bytes) -> bytes:
    if not isinstance(model_key, (bytes, bytearray)):
        raise TypeError("model key: expected bytes, got %s" % type(model_key).__name__)
    if len(model_key) != MODEL_KEY_BYTES:
        raise ValueError("model key: expected 32 bytes, got %d" % len(model_key))
    return bytes(model_key)


def _check_scheme(scheme: str) -> None:
    ok = len(scheme) > 0 and all(ch in "abcdefghijklmnopqrstuvwxyz0123456789-" for ch in scheme)
    if not ok or scheme[0] == "-":
        raise ValueError("scheme: expected [a-z0-9][a-z0-9-]*, got %r" % scheme)


def label(scheme: str, purpose: str) -> bytes:
    """UTF-8 of "keylock/v1/<scheme>/<purpose>"."""
    _check_scheme(scheme)
    if len(purpose) == 0:
        raise ValueError("purpose: expected a non-empty string")
    return (LABEL_PREFIX + scheme + "/" + purpose).encode("utf-8")  # strict: lone surrogates raise


def derive_bytes(model_key: bytes, scheme: str, purpose: str, n: int) -> bytes:
    """First n bytes of SHAKE256(model_key || label(scheme, purpose))."""
    if n < 0:
        raise ValueError("n must be >= 0")
    return hashlib.shake_256(_check_key(model_key) + label(scheme, purpose)).digest(n)


class KeyStream:
    """The SHAKE256 output of one label, read in order.

    hashlib cannot squeeze incrementally, so the stream re-squeezes a longer
    prefix when it runs out; SHAKE256's n-byte output is a prefix of any longer one.
    """

    def __init__(self, model_key: bytes, scheme: str, purpose: str) -> None:
        self._msg = _check_key(model_key) + label(scheme, purpose)
        self._buf = b""
        self.position = 0  # bytes consumed so far

    def read(self, n: int) -> bytes:
        end = self.position + n
        if end > len(self._buf):
            self._buf = hashlib.shake_256(self._msg).digest(max(end, 2 * len(self._buf), 1088))
        out = self._buf[self.position:end]
        self.position = end
        return out

    def u32(self) -> int:
        return struct.unpack(">I", self.read(4))[0]

    def uniform(self, n: int) -> int:
        """Unbiased integer in [0, n), 1 <= n <= 2**32, by rejection sampling."""
        if not (1 <= n <= 2 ** 32):
            raise ValueError("uniform: expected 1 <= n <= 2^32, got %d" % n)
        limit = 2 ** 32 - (2 ** 32 % n)
        while True:
            x = self.u32()
            if x < limit:
                return x % n


def derive_uniforms(model_key: bytes, scheme: str, purpose: str, n: int, count: int):
    """count draws of uniform(n) from one stream; returns (values, bytes consumed)."""
    ks = KeyStream(model_key, scheme, purpose)
    values = [ks.uniform(n) for _ in range(count)]
    return values, ks.position


def derive_permutation(model_key: bytes, scheme: str, purpose: str, size: int) -> List[int]:
    """Fisher-Yates (Durstenfeld) shuffle of [0, size) driven by the key stream."""
    if not (1 <= size <= 2 ** 32):
        raise ValueError("permutation size: expected 1..2^32, got %d" % size)
    ks = KeyStream(model_key, scheme, purpose)
    p = list(range(size))
    for i in range(size - 1, 0, -1):
        j = ks.uniform(i + 1)
        p[i], p[j] = p[j], p[i]
    return p


def derive_bits(model_key: bytes, scheme: str, purpose: str, count: int) -> List[int]:
    """count bits, least significant bit of each byte first."""
    if count < 0:
        raise ValueError("count must be >= 0")
    data = derive_bytes(model_key, scheme, purpose, (count + 7) // 8)
    return [(data[k >> 3] >> (k & 7)) & 1 for k in range(count)]


def invert_permutation(p: Sequence[int]) -> List[int]:
    inv = [0] * len(p)
    for k, v in enumerate(p):
        inv[v] = k
    return inv


# ---------------------------------------------------------------------------
# shuffle (Pyone, Maung & Kiya): block-wise pixel shuffling + negative/positive
# ---------------------------------------------------------------------------

def shuffle_perm_purpose(m: int, channels: int) -> str:
    return "perm/m=%d/c=%d" % (m, channels)


def shuffle_negpos_purpose(m: int, channels: int) -> str:
    return "negpos/m=%d/c=%d" % (m, channels)


def shuffle_block_key(model_key: bytes, m: int, channels: int, negpos: bool) -> dict:
    """The block permutation (and negative/positive bits) of the shuffle lock.

    Returns {"m", "channels", "perm", "inverse", "flip"}; flip is None when negpos
    is False. Within a block of m*m pixels and C channels, position
    k = (p1*m + p2)*C + c (row, column, channel). The locked block is
    y[k] = x[perm[k]], then y[k] = 1 - y[k] where flip[k] == 1.
    """
    if m < 1 or channels < 1:
        raise ValueError("m and channels must be >= 1")
    size = m * m * channels
    perm = derive_permutation(model_key, "shuffle", shuffle_perm_purpose(m, channels), size)
    flip = derive_bits(model_key, "shuffle", shuffle_negpos_purpose(m, channels), size) if negpos else None
    return {"m": m, "channels": channels, "perm": perm, "inverse": invert_permutation(perm), "flip": flip}


def f32(x: float) -> float:
    """Round a Python float (binary64) to the nearest binary32 value."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def _blocks(n: int, c: int, h: int, w: int, m: int) -> Iterator[List[int]]:
    """Flat NCHW indices of each block, in block order (p1, p2, c)."""
    for img in range(n):
        for by in range(h // m):
            for bx in range(w // m):
                idx = []
                for p1 in range(m):
                    for p2 in range(m):
                        for ch in range(c):
                            idx.append(((img * c + ch) * h + by * m + p1) * w + bx * m + p2)
                yield idx


def _check_image(image: Sequence[float], n: int, c: int, h: int, w: int, key: dict) -> None:
    m = key["m"]
    if c != key["channels"]:
        raise ValueError("channels: expected %d, got %d" % (key["channels"], c))
    if h % m or w % m:
        raise ValueError("image %dx%d is not divisible by block size %d" % (h, w, m))
    if len(image) != n * c * h * w:
        raise ValueError("image length: expected %d, got %d" % (n * c * h * w, len(image)))


def shuffle_image_nchw(image: Sequence[float], n: int, c: int, h: int, w: int, key: dict) -> List[float]:
    """Lock a flat NCHW float image (what a trainer feeds the model)."""
    _check_image(image, n, c, h, w, key)
    out = [0.0] * len(image)
    perm, flip = key["perm"], key["flip"]
    for idx in _blocks(n, c, h, w, key["m"]):
        for k, dst in enumerate(idx):
            v = image[idx[perm[k]]]
            if flip is not None and flip[k]:
                v = f32(1.0 - v)
            out[dst] = v
    return out


def unshuffle_image_nchw(image: Sequence[float], n: int, c: int, h: int, w: int, key: dict) -> List[float]:
    """Inverse of shuffle_image_nchw."""
    _check_image(image, n, c, h, w, key)
    out = [0.0] * len(image)
    perm, flip = key["perm"], key["flip"]
    for idx in _blocks(n, c, h, w, key["m"]):
        for k, src in enumerate(idx):
            v = image[src]
            if flip is not None and flip[k]:
                v = f32(1.0 - v)
            out[idx[perm[k]]] = v
    return out


# ---------------------------------------------------------------------------
# signflip (HPNN): one bit per output channel, or per MAC unit
# ---------------------------------------------------------------------------

def signflip_layer_bits(model_key: bytes, tensor_name: str, out_channels: int) -> List[int]:
    """Bit j == 1: output channel j of the layer with weight `tensor_name` is negated."""
    return derive_bits(model_key, "signflip", "layer/" + tensor_name, out_channels)


def signflip_unit_bits(model_key: bytes, units: int) -> List[int]:
    """MAC-unit mode: one bit per unit, shared by every layer."""
    if units < 1:
        raise ValueError("units must be >= 1")
    return derive_bits(model_key, "signflip", "units/%d" % units, units)


def signflip_channel_bits(unit_bits: Sequence[int], out_channels: int) -> List[int]:
    """Channel j of any layer uses unit bit j mod U."""
    return [unit_bits[j % len(unit_bits)] for j in range(out_channels)]


# ---------------------------------------------------------------------------
# deeplock (Deep-Lock): AES S-box + AES-128 key schedule continued past 44 words
# ---------------------------------------------------------------------------

def _gf_mul(a: int, b: int) -> int:
    r = 0
    while b:
        if b & 1:
            r ^= a
        a = xtime(a)
        b >>= 1
    return r


def xtime(b: int) -> int:
    """Multiplication by x in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1."""
    b <<= 1
    return (b ^ 0x11B) if b & 0x100 else b


def _make_sbox() -> List[int]:
    # Computed (multiplicative inverse by search, then the affine map), not copied.
    inv = [0] * 256
    for a in range(1, 256):
        for b in range(1, 256):
            if _gf_mul(a, b) == 1:
                inv[a] = b
                break
    box = []
    for a in range(256):
        b = inv[a]
        s = b
        for r in range(1, 5):
            s ^= ((b << r) | (b >> (8 - r))) & 0xFF
        box.append(s ^ 0x63)
    return box


SBOX = _make_sbox()
INV_SBOX = [0] * 256
for _i, _s in enumerate(SBOX):
    INV_SBOX[_s] = _i


def rcon(j: int) -> int:
    """Rcon(j) = x^(j-1) in GF(2^8), for every j >= 1 (not a 10-entry table)."""
    r = 1
    for _ in range(j - 1):
        r = xtime(r)
    return r


def aes_schedule_words(key16: bytes) -> Iterator[bytes]:
    """AES-128 key expansion words w[0], w[1], ... without end (4 bytes each)."""
    if len(key16) != 16:
        raise ValueError("AES-128 key: expected 16 bytes, got %d" % len(key16))
    w = [key16[0:4], key16[4:8], key16[8:12], key16[12:16]]
    for word in w:
        yield word
    i = 4
    rc = 1  # Rcon(1)
    while True:
        t = w[-1]
        if i % 4 == 0:
            t = bytes([SBOX[t[1]] ^ rc, SBOX[t[2]], SBOX[t[3]], SBOX[t[0]]])
            rc = xtime(rc)
        word = bytes(a ^ b for a, b in zip(w[-4], t))
        yield word
        w = w[1:] + [word]
        i += 1


def deeplock_master_key(model_key: bytes) -> bytes:
    return derive_bytes(model_key, "deeplock", "aes128", 16)


def deeplock_schedule(model_key: bytes, count: int) -> List[bytes]:
    """Round-key words w[0..count-1]; parameter i uses w[i]."""
    out = []
    for word in aes_schedule_words(deeplock_master_key(model_key)):
        if len(out) == count:
            break
        out.append(word)
    return out


def deeplock_lock(data: bytes, start_param: int, schedule: Sequence[bytes], width: int = 4) -> bytes:
    """Lock little-endian float bytes: b' = S(b xor w_i[j]).

    width 4: float32 (the published construction); width 2: float16/bfloat16,
    parameter i uses bytes 0 and 1 of word w_i (keylock's extension).
    """
    if width not in (2, 4):
        raise ValueError("width must be 2 or 4")
    if len(data) % width:
        raise ValueError(f"data length must be a multiple of {width}")
    out = bytearray(len(data))
    for p in range(len(data) // width):
        word = schedule[start_param + p]
        for j in range(width):
            out[width * p + j] = SBOX[data[width * p + j] ^ word[j]]
    return bytes(out)


def deeplock_unlock(data: bytes, start_param: int, schedule: Sequence[bytes], width: int = 4) -> bytes:
    """Unlock: b = InvS(b') xor w_i[j]."""
    if width not in (2, 4):
        raise ValueError("width must be 2 or 4")
    if len(data) % width:
        raise ValueError(f"data length must be a multiple of {width}")
    out = bytearray(len(data))
    for p in range(len(data) // width):
        word = schedule[start_param + p]
        for j in range(width):
            out[width * p + j] = INV_SBOX[data[width * p + j]] ^ word[j]
    return bytes(out)


# ---------------------------------------------------------------------------
# sealed, advparams, key check value
# ---------------------------------------------------------------------------

def _no_nul(what: str, s: str) -> bytes:
    if "\x00" in s:
        raise ValueError("%s must not contain U+0000" % what)
    return s.encode("utf-8")


def sealed_secretbox_key(model_key: bytes) -> bytes:
    return derive_bytes(model_key, "sealed", "secretbox", 32)


def sealed_nonce(model_id: str, tensor_name: str) -> bytes:
    msg = b"keylock/v1/sealed/nonce\x00" + _no_nul("model id", model_id) + b"\x00" + _no_nul("tensor name", tensor_name)
    return hashlib.shake_256(msg).digest(NONCE_BYTES)


def sealed_xchacha_key(model_key: bytes) -> bytes:
    """XChaCha20-Poly1305 key of `sealed` (entry `cipher: "xchacha20-poly1305"`)."""
    return derive_bytes(model_key, "sealed", "xchacha20-poly1305", 32)


def _salt_field(salt) -> bytes:
    if salt is None:
        return b""
    if len(salt) != 16:
        raise ValueError("sealed salt: expected 16 bytes, got %d" % len(salt))
    return b"\x00" + salt.hex().encode()


def sealed_xchacha_nonce(model_id: str, tensor_name: str, salt: bytes = None) -> bytes:
    """24-byte nonce; entries written since the salt exists mix in hex(salt) as a third field."""
    msg = (b"keylock/v1/sealed/xchacha20-poly1305/nonce\x00" + _no_nul("model id", model_id)
           + b"\x00" + _no_nul("tensor name", tensor_name) + _salt_field(salt))
    return hashlib.shake_256(msg).digest(NONCE_BYTES)


def sealed_aesgcm_key(model_key: bytes) -> bytes:
    """AES-256-GCM key of `sealed` (entry `cipher: "aes-256-gcm"`)."""
    return derive_bytes(model_key, "sealed", "aes-256-gcm", 32)


def sealed_aesgcm_nonce(model_id: str, tensor_name: str, salt: bytes) -> bytes:
    """96-bit nonce: SHAKE256(label || 0 || id || 0 || name || 0 || hex(salt))[0..12); the salt is mandatory."""
    if salt is None:
        raise ValueError("sealed salt: expected 16 bytes, got none")
    msg = (b"keylock/v1/sealed/aes-256-gcm/nonce\x00" + _no_nul("model id", model_id)
           + b"\x00" + _no_nul("tensor name", tensor_name) + _salt_field(salt))
    return hashlib.shake_256(msg).digest(12)


def advparams_secretbox_key(model_key: bytes) -> bytes:
    return derive_bytes(model_key, "advparams", "secretbox", 32)


def advparams_nonce(model_id: str) -> bytes:
    msg = b"keylock/v1/advparams/nonce\x00" + _no_nul("model id", model_id)
    return hashlib.shake_256(msg).digest(NONCE_BYTES)


def key_check_value(model_key: bytes) -> bytes:
    return derive_bytes(model_key, "check", "kcv", KCV_BYTES)


# ---------------------------------------------------------------------------
# JSON command line (differential tests)
# ---------------------------------------------------------------------------

def _f32le_hex(values: Sequence[float]) -> str:
    return struct.pack("<%df" % len(values), *values).hex()


def _from_f32le_hex(h: str) -> List[float]:
    data = bytes.fromhex(h)
    return list(struct.unpack("<%df" % (len(data) // 4), data))


def _run_op(op: dict):
    kind = op["op"]
    key = bytes.fromhex(op["key"]) if "key" in op else None
    if kind == "bytes":
        return derive_bytes(key, op["scheme"], op["purpose"], op["n"]).hex()
    if kind == "uniform":
        values, used = derive_uniforms(key, op["scheme"], op["purpose"], op["n"], op["count"])
        return {"values": values, "bytes_consumed": used}
    if kind == "permutation":
        return derive_permutation(key, op["scheme"], op["purpose"], op["size"])
    if kind == "bits":
        return derive_bits(key, op["scheme"], op["purpose"], op["count"])
    if kind == "shuffle_key":
        k = shuffle_block_key(key, op["m"], op["c"], op["negpos"])
        return {"perm": k["perm"], "flip": k["flip"]}
    if kind == "shuffle_image":
        k = shuffle_block_key(key, op["m"], op["c"], op["negpos"])
        img = _from_f32le_hex(op["image"])
        fn = unshuffle_image_nchw if op.get("inverse") else shuffle_image_nchw
        return _f32le_hex(fn(img, op["n"], op["c"], op["h"], op["w"], k))
    if kind == "signflip_layer":
        return signflip_layer_bits(key, op["tensor"], op["out_channels"])
    if kind == "signflip_units":
        return signflip_unit_bits(key, op["units"])
    if kind == "deeplock_words":
        sched = deeplock_schedule(key, op["start"] + op["count"])
        return [w.hex() for w in sched[op["start"]:]]
    if kind == "deeplock_lock":
        width = op.get("width", 4)
        sched = deeplock_schedule(key, op["start"] + len(op["data"]) // (2 * width))
        fn = deeplock_unlock if op.get("inverse") else deeplock_lock
        return fn(bytes.fromhex(op["data"]), op["start"], sched, width).hex()
    if kind == "kcv":
        return key_check_value(key).hex()
    if kind == "sealed":
        return {"key": sealed_secretbox_key(key).hex(), "nonce": sealed_nonce(op["model_id"], op["tensor"]).hex()}
    if kind == "sealed_xchacha":
        return {"key": sealed_xchacha_key(key).hex(), "nonce": sealed_xchacha_nonce(op["model_id"], op["tensor"]).hex()}
    if kind == "advparams":
        return {"key": advparams_secretbox_key(key).hex(), "nonce": advparams_nonce(op["model_id"]).hex()}
    raise ValueError("unknown op %r" % kind)


def main(argv: Sequence[str]) -> int:
    if list(argv) != ["--json"]:
        sys.stderr.write("usage: keylock_keys.py --json < request.json\n")
        return 2
    request = json.load(sys.stdin)
    json.dump({"results": [_run_op(op) for op in request["ops"]]}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
