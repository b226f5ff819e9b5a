"""XChaCha20-Poly1305 in plain Python, the reference for `sealed`'s cipher vectors.

Written from RFC 8439 (ChaCha20, Poly1305, the AEAD construction) and
draft-irtf-cfrg-xchacha-03 (HChaCha20, XChaCha20): no dependency, so the
vectors in test/vectors/derive.json do not come from the implementations
they test (node:crypto and @noble/ciphers). Slow; for vectors only.
"""

from __future__ import annotations

import struct

MASK = 0xFFFFFFFF
SIGMA = struct.unpack("<4I", b"expand 32-byte k")


def _rotl(x: int, n: int) -> int:
    return ((x << n) & MASK) | (x >> (32 - n))


def _rounds(s: list) -> list:
    x = list(s)

    def qr(a: int, b: int, c: int, d: int) -> None:
        x[a] = (x[a] + x[b]) & MASK; x[d] = _rotl(x[d] ^ x[a], 16)
        x[c] = (x[c] + x[d]) & MASK; x[b] = _rotl(x[b] ^ x[c], 12)
        x[a] = (x[a] + x[b]) & MASK; x[d] = _rotl(x[d] ^ x[a], 8)
        x[c] = (x[c] + x[d]) & MASK; x[b] = _rotl(x[b] ^ x[c], 7)

    for _ in range(10):
        qr(0, 4, 8, 12); qr(1, 5, 9, 13); qr(2, 6, 10, 14); qr(3, 7, 11, 15)
        qr(0, 5, 10, 15); qr(1, 6, 11, 12); qr(2, 7, 8, 13); qr(3, 4, 9, 14)
    return x


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    s = list(SIGMA) + list(struct.unpack("<8I", key)) + list(struct.unpack("<4I", nonce16))
    x = _rounds(s)
    return struct.pack("<8I", *(x[0:4] + x[12:16]))


def chacha20_block(key: bytes, counter: int, nonce12: bytes) -> bytes:
    s = list(SIGMA) + list(struct.unpack("<8I", key)) + [counter & MASK] + list(struct.unpack("<3I", nonce12))
    x = _rounds(s)
    return struct.pack("<16I", *((x[i] + s[i]) & MASK for i in range(16)))


def chacha20_xor(key: bytes, counter: int, nonce12: bytes, data: bytes) -> bytes:
    out = bytearray()
    for i in range(0, len(data), 64):
        block = chacha20_block(key, counter + i // 64, nonce12)
        out += bytes(a ^ b for a, b in zip(data[i:i + 64], block))
    return bytes(out)


def poly1305(key: bytes, msg: bytes) -> bytes:
    r = int.from_bytes(key[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    s = int.from_bytes(key[16:], "little")
    p = (1 << 130) - 5
    acc = 0
    for i in range(0, len(msg), 16):
        n = int.from_bytes(msg[i:i + 16] + b"\x01", "little")
        acc = ((acc + n) * r) % p
    return ((acc + s) & ((1 << 128) - 1)).to_bytes(16, "little")


def _pad16(b: bytes) -> bytes:
    return b"\x00" * (-len(b) % 16)


def xchacha20poly1305_seal(key: bytes, nonce24: bytes, plain: bytes, aad: bytes = b"") -> tuple:
    """(ciphertext, tag) of AEAD_XChaCha20_Poly1305."""
    assert len(key) == 32 and len(nonce24) == 24
    sub = hchacha20(key, nonce24[:16])
    n12 = b"\x00" * 4 + nonce24[16:]
    otk = chacha20_block(sub, 0, n12)[:32]
    ct = chacha20_xor(sub, 1, n12, plain)
    mac = aad + _pad16(aad) + ct + _pad16(ct) + struct.pack("<QQ", len(aad), len(ct))
    return ct, poly1305(otk, mac)
