"""XChaCha20-Poly1305 and AES-256-GCM in plain Python, the reference for `sealed`'s cipher vectors.

Written from RFC 8439 (ChaCha20, Poly1305, the AEAD construction),
draft-irtf-cfrg-xchacha-03 (HChaCha20, XChaCha20), FIPS 197 (AES) and NIST
SP 800-38D (GCM): no dependency, so the vectors in test/vectors/derive.json do
not come from the implementations they test (node:crypto, WebCrypto and
@noble/ciphers). Slow; for vectors only.
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


# --- AES-256 (FIPS 197) and GCM (NIST SP 800-38D) ------------------------------------------


def _xtime(a: int) -> int:
    a <<= 1
    return (a ^ 0x11B) if a & 0x100 else a


def _gmul(a: int, b: int) -> int:
    r = 0
    while b:
        if b & 1:
            r ^= a
        a = _xtime(a)
        b >>= 1
    return r


def _sbox() -> list:
    box = []
    for x in range(256):
        inv = 0 if x == 0 else next(y for y in range(1, 256) if _gmul(x, y) == 1)
        b = inv
        for k in range(1, 5):
            b ^= ((inv << k) | (inv >> (8 - k))) & 0xFF
        box.append(b ^ 0x63)
    return box


AES_SBOX = _sbox()


def aes256_expand(key: bytes) -> list:
    """The 15 round keys (16 bytes each) of AES-256."""
    assert len(key) == 32
    w = [list(key[4 * i:4 * i + 4]) for i in range(8)]
    rcon = 1
    for i in range(8, 60):
        t = list(w[i - 1])
        if i % 8 == 0:
            t = [AES_SBOX[b] for b in t[1:] + t[:1]]
            t[0] ^= rcon
            rcon = _xtime(rcon)
        elif i % 8 == 4:
            t = [AES_SBOX[b] for b in t]
        w.append([a ^ b for a, b in zip(w[i - 8], t)])
    return [bytes(sum(w[4 * r:4 * r + 4], [])) for r in range(15)]


def aes256_encrypt_block(round_keys: list, block: bytes) -> bytes:
    s = [b ^ k for b, k in zip(block, round_keys[0])]
    for r in range(1, 15):
        s = [AES_SBOX[b] for b in s]
        # ShiftRows: byte (row i, column c) sits at 4c + i and comes from column c + i.
        s = [s[4 * ((c + i) % 4) + i] for c in range(4) for i in range(4)]
        if r != 14:
            m = []
            for c in range(4):
                a = s[4 * c:4 * c + 4]
                m += [_gmul(a[0], 2) ^ _gmul(a[1], 3) ^ a[2] ^ a[3],
                      a[0] ^ _gmul(a[1], 2) ^ _gmul(a[2], 3) ^ a[3],
                      a[0] ^ a[1] ^ _gmul(a[2], 2) ^ _gmul(a[3], 3),
                      _gmul(a[0], 3) ^ a[1] ^ a[2] ^ _gmul(a[3], 2)]
            s = m
        s = [b ^ k for b, k in zip(s, round_keys[r])]
    return bytes(s)


_R = 0xE1 << 120


def _gf128_mul(x: int, y: int) -> int:
    """Multiplication in GCM's GF(2^128), bit-reflected (SP 800-38D §6.3, Algorithm 1)."""
    z, v = 0, y
    for i in range(127, -1, -1):
        if (x >> i) & 1:
            z ^= v
        v = (v >> 1) ^ _R if v & 1 else v >> 1
    return z


def _ghash(h: int, data: bytes) -> int:
    y = 0
    for i in range(0, len(data), 16):
        y = _gf128_mul(y ^ int.from_bytes(data[i:i + 16], "big"), h)
    return y


def aes256gcm_seal(key: bytes, nonce12: bytes, plain: bytes, aad: bytes = b"") -> tuple:
    """(ciphertext, tag) of AES-256-GCM with a 96-bit nonce and a 128-bit tag."""
    assert len(key) == 32 and len(nonce12) == 12
    rk = aes256_expand(key)
    h = int.from_bytes(aes256_encrypt_block(rk, b"\x00" * 16), "big")
    j0 = nonce12 + b"\x00\x00\x00\x01"
    ct = bytearray()
    for i in range(0, len(plain), 16):
        ks = aes256_encrypt_block(rk, nonce12 + struct.pack(">I", (2 + i // 16) & MASK))
        ct += bytes(a ^ b for a, b in zip(plain[i:i + 16], ks))
    ct = bytes(ct)
    s = _ghash(h, aad + _pad16(aad) + ct + _pad16(ct) + struct.pack(">QQ", 8 * len(aad), 8 * len(ct)))
    tag = (s ^ int.from_bytes(aes256_encrypt_block(rk, j0), "big")).to_bytes(16, "big")
    return ct, tag
