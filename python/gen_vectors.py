#!/usr/bin/env python3
"""Writes test/vectors/derive.json from the Python reference (keylock_keys.py).

The TypeScript runtime is tested against this file, so the expected values must
come from here, never from the TypeScript code. Deterministic: running it twice
gives the same file.

    python3 python/gen_vectors.py            # writes test/vectors/derive.json
    python3 python/gen_vectors.py --check    # exits 1 if the file is stale
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keylock_keys as kk  # noqa: E402
import keylock_aead as aead  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "vectors", "derive.json")

K0 = bytes(range(32))
K1 = bytes(range(0x80, 0xA0))
K2 = bytes(32)
KEYS = {"K0": K0, "K1": K1, "K2": K2}


def det_floats(tag: str, count: int, lo: float, hi: float) -> list:
    """Deterministic float32 values in [lo, hi) from SHAKE256(tag)."""
    raw = hashlib.shake_256(tag.encode()).digest(4 * count)
    out = []
    for i in range(count):
        u = struct.unpack(">I", raw[4 * i:4 * i + 4])[0] / 2 ** 32
        out.append(kk.f32(lo + (hi - lo) * u))
    return out


def f32le(values) -> str:
    return struct.pack("<%df" % len(values), *values).hex()


def main() -> int:
    v: dict = {
        "format": "keylock-derive-vectors",
        "version": 1,
        "spec": "docs/SPEC.md, section Key derivation",
        "conventions": [
            "Byte strings are lowercase hex.",
            "model_key names one of the keys in `keys`.",
            "label = UTF-8('keylock/v1/' + scheme + '/' + purpose); label_hex is given for derive_bytes.",
            "*_f32le fields are IEEE-754 binary32 values, little-endian, concatenated.",
            "deeplock words are 8 hex digits in AES byte order (byte 0 first).",
            "bits are arrays of 0/1; permutations are arrays of integers.",
            "error cases give the expected outcome `range-error` (misuse of the API).",
        ],
        "keys": {name: key.hex() for name, key in KEYS.items()},
    }

    # --- derive_bytes -------------------------------------------------------
    cases = [
        ("K0", "test", "bytes", 0),
        ("K0", "test", "bytes", 1),
        ("K0", "test", "bytes", 32),
        ("K0", "test", "bytes", 300),  # more than two SHAKE256 blocks (rate 136)
        ("K1", "shuffle", "perm/m=4/c=3", 64),
        ("K0", "test", "unicode/\u00fcn\u00efc\u00f6d\u00e9/\u540d\u524d", 48),
        ("K2", "check", "kcv", 16),
    ]
    v["derive_bytes"] = [
        {
            "model_key": k, "scheme": s, "purpose": p, "n": n,
            "label_hex": kk.label(s, p).hex(),
            "expected": kk.derive_bytes(KEYS[k], s, p, n).hex(),
        }
        for k, s, p, n in cases
    ]
    # Prefix property of the XOF, recorded so other implementations check it too.
    assert kk.derive_bytes(K0, "test", "bytes", 300).startswith(kk.derive_bytes(K0, "test", "bytes", 32))

    # --- uniform --------------------------------------------------------------
    ns = [1, 2, 3, 10, 49, 1000, 2 ** 31 + 1, 3 * 2 ** 30, 2 ** 32 - 1, 2 ** 32]
    v["uniform"] = []
    for n in ns:
        values, used = kk.derive_uniforms(K0, "test", "uniform/n=%d" % n, n, 24)
        v["uniform"].append({"model_key": "K0", "scheme": "test", "purpose": "uniform/n=%d" % n,
                             "n": n, "count": 24, "expected": values, "bytes_consumed": used})
    forced = [u for u in v["uniform"] if u["n"] in (2 ** 31 + 1, 3 * 2 ** 30)]
    assert all(u["bytes_consumed"] > 4 * u["count"] for u in forced), "rejection vectors must reject"

    # --- permutation ----------------------------------------------------------
    v["permutation"] = [
        {"model_key": k, "scheme": "test", "purpose": "perm/%d" % size, "size": size,
         "expected": kk.derive_permutation(KEYS[k], "test", "perm/%d" % size, size)}
        for k, size in [("K0", 1), ("K0", 2), ("K0", 3), ("K0", 10), ("K1", 100), ("K2", 1000)]
    ]

    # --- bits -------------------------------------------------------------------
    v["bits"] = [
        {"model_key": "K0", "scheme": "test", "purpose": "bits/%d" % c, "count": c,
         "expected": kk.derive_bits(K0, "test", "bits/%d" % c, c)}
        for c in [0, 1, 7, 8, 9, 100]
    ]

    # --- shuffle -------------------------------------------------------------------
    v["shuffle"] = []
    shuffle_cases = [
        ("K0", 7, 1, False, (2, 14, 7), (0.0, 1.0)),
        ("K0", 2, 3, True, (1, 4, 6), (0.0, 1.0)),
        ("K1", 4, 3, True, (1, 8, 8), (-0.5, 1.5)),  # values outside [0, 1] and rounding of 1 - x
        ("K1", 8, 3, False, (1, 8, 16), (0.0, 1.0)),
    ]
    for k, m, c, negpos, (n, h, w), (lo, hi) in shuffle_cases:
        key = kk.shuffle_block_key(KEYS[k], m, c, negpos)
        img = det_floats("keylock shuffle image m=%d c=%d" % (m, c), n * c * h * w, lo, hi)
        locked = kk.shuffle_image_nchw(img, n, c, h, w, key)
        v["shuffle"].append({
            "model_key": k, "m": m, "c": c, "negpos": negpos,
            "perm_purpose": kk.shuffle_perm_purpose(m, c),
            "negpos_purpose": kk.shuffle_negpos_purpose(m, c) if negpos else None,
            "perm": key["perm"], "inverse": key["inverse"], "flip": key["flip"],
            "image": {"n": n, "c": c, "h": h, "w": w, "input_f32le": f32le(img), "locked_f32le": f32le(locked)},
        })

    # --- signflip ---------------------------------------------------------------------
    v["signflip_layer"] = [
        {"model_key": k, "tensor_name": t, "out_channels": oc, "purpose": "layer/" + t,
         "expected": kk.signflip_layer_bits(KEYS[k], t, oc)}
        for k, t, oc in [("K0", "conv1.weight", 16), ("K0", "/features/0/Conv_output_0/weight", 64),
                         ("K1", "fc.weight", 10), ("K0", "\u00fcn\u00ef/\u540d", 5)]
    ]
    v["signflip_units"] = []
    for k, units, oc in [("K0", 8, 20), ("K1", 1, 3), ("K0", 64, 100)]:
        ub = kk.signflip_unit_bits(KEYS[k], units)
        v["signflip_units"].append({"model_key": k, "units": units, "purpose": "units/%d" % units,
                                    "unit_bits": ub, "out_channels": oc,
                                    "channel_bits": kk.signflip_channel_bits(ub, oc)})

    # --- AES pieces ----------------------------------------------------------------------
    fips_key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")  # FIPS-197 Appendix A.1
    words = kk.aes_schedule_words(fips_key)
    v["aes"] = {
        "sbox": bytes(kk.SBOX).hex(),
        "inv_sbox": bytes(kk.INV_SBOX).hex(),
        "rcon_1_to_60": [kk.rcon(j) for j in range(1, 61)],
        "fips197_a1": {"key": fips_key.hex(), "words_0_to_43": [next(words).hex() for _ in range(44)]},
    }
    assert v["aes"]["fips197_a1"]["words_0_to_43"][43] == "b6630ca6"

    # --- deeplock ---------------------------------------------------------------------------
    v["deeplock"] = []
    for k in ["K0", "K1"]:
        sched = kk.deeplock_schedule(KEYS[k], 10008)
        v["deeplock"].append({
            "model_key": k,
            "master_key": kk.deeplock_master_key(KEYS[k]).hex(),
            "word_ranges": [
                {"start": 0, "words": [w.hex() for w in sched[0:48]]},
                {"start": 808, "words": [w.hex() for w in sched[808:824]]},
                {"start": 9992, "words": [w.hex() for w in sched[9992:10008]]},
            ],
        })
        assert sched[816:864] != sched[0:48]
    values = [0.0, -0.0, 1.0, -1.5, 3.1415927, 1e-3, 65504.0, -2.5e-8]
    sched = kk.deeplock_schedule(K0, 830)
    v["deeplock_lock"] = []
    for start in [0, 812]:
        plain = bytes.fromhex(f32le(values))
        locked = kk.deeplock_lock(plain, start, sched)
        assert kk.deeplock_unlock(locked, start, sched) == plain
        v["deeplock_lock"].append({"model_key": "K0", "start_param": start,
                                   "plain_f32le": plain.hex(), "locked": locked.hex()})
    # float16 (width 2): parameter i uses bytes 0 and 1 of word i; across word 816 as above.
    v["deeplock_lock_f16"] = []
    for start in [0, 812]:
        plain = struct.pack("<8e", *values)
        locked = kk.deeplock_lock(plain, start, sched, 2)
        assert kk.deeplock_unlock(locked, start, sched, 2) == plain
        v["deeplock_lock_f16"].append({"model_key": "K0", "start_param": start, "width": 2,
                                       "plain_f16le": plain.hex(), "locked": locked.hex()})

    # --- sealed, advparams, kcv ---------------------------------------------------------------
    v["sealed_key"] = [{"model_key": k, "secretbox_key": kk.sealed_secretbox_key(KEYS[k]).hex()} for k in ["K0", "K1"]]
    v["sealed_nonce"] = [
        {"model_id": mid, "tensor_name": t, "nonce": kk.sealed_nonce(mid, t).hex()}
        for mid, t in [("mnist-cnn-v1", "conv1.weight"), ("mnist-cnn-v1", "conv2.weight"),
                       ("urn:uuid:6f1c7a52-5f0e-4d8e-9a53-2b1d0b7c9e11", "fc/weight:0"),
                       ("", ""), ("m\u00f6del", "\u540d\u524d")]
    ]
    # sealed with XChaCha20-Poly1305 (entry `cipher: "xchacha20-poly1305"`): labels of its own.
    v["sealed_xchacha_key"] = [{"model_key": k, "key": kk.sealed_xchacha_key(KEYS[k]).hex()} for k in ["K0", "K1"]]
    v["sealed_xchacha_nonce"] = [
        {"model_id": mid, "tensor_name": t, "nonce": kk.sealed_xchacha_nonce(mid, t).hex()}
        for mid, t in [("mnist-cnn-v1", "conv1.weight"), ("mnist-cnn-v1", "conv2.weight"),
                       ("urn:uuid:6f1c7a52-5f0e-4d8e-9a53-2b1d0b7c9e11", "fc/weight:0"),
                       ("", ""), ("m\u00f6del", "\u540d\u524d")]
    ]
    # The cipher itself on sealed tensors: key and nonce derived as above, no AAD, the tag kept apart
    # (docs/SPEC.md, sealed). keylock_aead.py is checked first against the draft's own known answer.
    kat_ct, kat_tag = aead.xchacha20poly1305_seal(
        bytes(range(0x80, 0xA0)), bytes(range(0x40, 0x58)),
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
        bytes.fromhex("50515253c0c1c2c3c4c5c6c7"))
    assert kat_tag.hex() == "c0875924c1c7987947deafd8780acf49" and kat_ct[:8].hex() == "bd6d179d3e83d43b", "keylock_aead.py fails draft-irtf-cfrg-xchacha-03 A.3.1"
    sealed_cipher = []
    for k, mid, t, n in [("K0", "mnist-cnn-v1", "conv1.weight", 1), ("K0", "mnist-cnn-v1", "conv2.weight", 64),
                         ("K1", "urn:uuid:6f1c7a52-5f0e-4d8e-9a53-2b1d0b7c9e11", "fc/weight:0", 65),
                         ("K1", "m\u00f6del", "\u540d\u524d", 1000)]:
        plain = hashlib.shake_256(f"sealed-cipher/{mid}/{t}".encode()).digest(n)
        ct, tag = aead.xchacha20poly1305_seal(kk.sealed_xchacha_key(KEYS[k]), kk.sealed_xchacha_nonce(mid, t), plain)
        sealed_cipher.append({"model_key": k, "model_id": mid, "tensor_name": t, "plain": plain.hex(), "cipher": ct.hex(), "tag": tag.hex()})
    v["sealed_xchacha_cipher"] = sealed_cipher
    # Entries written since the per-lock salt exists: hex(salt) is a third nonce field (docs/SPEC.md §6.4).
    v["sealed_xchacha_nonce_salted"] = [
        {"model_id": mid, "tensor_name": t, "salt": salt.hex(), "nonce": kk.sealed_xchacha_nonce(mid, t, salt).hex()}
        for mid, t, salt in [("mnist-cnn-v1", "conv1.weight", bytes(range(16))),
                             ("mnist-cnn-v1", "conv1.weight", bytes(range(1, 17))),
                             ("m\u00f6del", "\u540d\u524d", hashlib.shake_256(b"salt").digest(16))]
    ]
    # sealed with AES-256-GCM (entry `cipher: "aes-256-gcm"`, salt required): keylock_aead.py is checked
    # first against FIPS 197 C.3 (AES-256) and the GCM specification's test case 16 (AES-256-GCM with AAD).
    assert aead.aes256_encrypt_block(aead.aes256_expand(bytes(range(32))), bytes.fromhex("00112233445566778899aabbccddeeff")).hex() \
        == "8ea2b7ca516745bfeafc49904b496089", "keylock_aead.py fails FIPS 197 C.3"
    g_ct, g_tag = aead.aes256gcm_seal(
        bytes.fromhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"), bytes.fromhex("cafebabefacedbaddecaf888"),
        bytes.fromhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"),
        bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2"))
    assert g_tag.hex() == "76fc6ece0f4e1768cddf8853bb2d551b" and g_ct[:8].hex() == "522dc1f099567d07", "keylock_aead.py fails GCM test case 16"
    v["sealed_aesgcm_key"] = [{"model_key": k, "key": kk.sealed_aesgcm_key(KEYS[k]).hex()} for k in ["K0", "K1"]]
    aes_cases = []
    for k, mid, t, n in [("K0", "mnist-cnn-v1", "conv1.weight", 1), ("K0", "mnist-cnn-v1", "conv2.weight", 64),
                         ("K1", "urn:uuid:6f1c7a52-5f0e-4d8e-9a53-2b1d0b7c9e11", "fc/weight:0", 65),
                         ("K1", "m\u00f6del", "\u540d\u524d", 1000)]:
        plain = hashlib.shake_256(f"sealed-cipher/{mid}/{t}".encode()).digest(n)
        salt = hashlib.shake_256(f"sealed-salt/{mid}".encode()).digest(16)
        nonce = kk.sealed_aesgcm_nonce(mid, t, salt)
        ct, tag = aead.aes256gcm_seal(kk.sealed_aesgcm_key(KEYS[k]), nonce, plain)
        aes_cases.append({"model_key": k, "model_id": mid, "tensor_name": t, "salt": salt.hex(), "nonce": nonce.hex(),
                          "plain": plain.hex(), "cipher": ct.hex(), "tag": tag.hex()})
    v["sealed_aesgcm_cipher"] = aes_cases
    v["advparams_key"] = [{"model_key": k, "secretbox_key": kk.advparams_secretbox_key(KEYS[k]).hex()} for k in ["K0", "K1"]]
    v["advparams_nonce"] = [{"model_id": mid, "nonce": kk.advparams_nonce(mid).hex()}
                            for mid in ["mnist-cnn-v1", "urn:uuid:6f1c7a52-5f0e-4d8e-9a53-2b1d0b7c9e11", ""]]
    v["kcv"] = [{"model_key": k, "kcv": kk.key_check_value(KEYS[k]).hex()} for k in ["K0", "K1", "K2"]]

    # --- misuse: each MUST be refused ----------------------------------------------------------
    errors = [
        {"case": "model key of 0 bytes", "op": "derive_bytes", "key_hex": "", "scheme": "test", "purpose": "x", "n": 1},
        {"case": "model key of 31 bytes", "op": "derive_bytes", "key_hex": K0[:31].hex(), "scheme": "test", "purpose": "x", "n": 1},
        {"case": "model key of 33 bytes", "op": "derive_bytes", "key_hex": (K0 + b"\x00").hex(), "scheme": "test", "purpose": "x", "n": 1},
        {"case": "scheme with a slash", "op": "derive_bytes", "key_hex": K0.hex(), "scheme": "a/b", "purpose": "x", "n": 1},
        {"case": "empty purpose", "op": "derive_bytes", "key_hex": K0.hex(), "scheme": "test", "purpose": "", "n": 1},
        {"case": "uniform bound 0", "op": "uniform", "key_hex": K0.hex(), "scheme": "test", "purpose": "x", "n": 0},
        {"case": "uniform bound 2^32 + 1", "op": "uniform", "key_hex": K0.hex(), "scheme": "test", "purpose": "x", "n": 2 ** 32 + 1},
        {"case": "permutation of size 0", "op": "permutation", "key_hex": K0.hex(), "scheme": "test", "purpose": "x", "size": 0},
        {"case": "NUL in tensor name", "op": "sealed_nonce", "model_id": "m", "tensor_name": "a\u0000b"},
        {"case": "NUL in model id", "op": "advparams_nonce", "model_id": "a\u0000b"},
        {"case": "image height not divisible by m", "op": "shuffle_image", "key_hex": K0.hex(), "m": 4, "c": 1, "negpos": False,
         "n": 1, "h": 6, "w": 8},
        {"case": "image channels differ from the key's", "op": "shuffle_image", "key_hex": K0.hex(), "m": 2, "c": 3, "negpos": False,
         "n": 1, "h": 4, "w": 4, "image_c": 1},
        {"case": "NUL in tensor name (sealed, XChaCha20)", "op": "sealed_xchacha_nonce", "model_id": "m", "tensor_name": "a\u0000b"},
    ]
    for e in errors:
        e["expect"] = "range-error"
        try:
            _python_error_case(e)
        except ValueError:
            pass
        else:
            raise AssertionError("Python reference accepted: " + e["case"])
    v["errors"] = errors

    text = json.dumps(v, indent=1, ensure_ascii=True) + "\n"
    if sys.argv[1:] == ["--check"]:
        with open(OUT) as f:
            if f.read() != text:
                sys.stderr.write("test/vectors/derive.json is stale: run python3 python/gen_vectors.py\n")
                return 1
        return 0
    with open(OUT, "w") as f:
        f.write(text)
    return 0


def _python_error_case(e: dict) -> None:
    op = e["op"]
    key = bytes.fromhex(e["key_hex"]) if "key_hex" in e else b""
    if op == "derive_bytes":
        kk.derive_bytes(key, e["scheme"], e["purpose"], e["n"])
    elif op == "uniform":
        kk.KeyStream(key, e["scheme"], e["purpose"]).uniform(e["n"])
    elif op == "permutation":
        kk.derive_permutation(key, e["scheme"], e["purpose"], e["size"])
    elif op == "sealed_nonce":
        kk.sealed_nonce(e["model_id"], e["tensor_name"])
    elif op == "sealed_xchacha_nonce":
        kk.sealed_xchacha_nonce(e["model_id"], e["tensor_name"])
    elif op == "advparams_nonce":
        kk.advparams_nonce(e["model_id"])
    elif op == "shuffle_image":
        key_ = kk.shuffle_block_key(key, e["m"], e["c"], e["negpos"])
        c = e.get("image_c", e["c"])
        kk.shuffle_image_nchw([0.0] * (e["n"] * c * e["h"] * e["w"]), e["n"], c, e["h"], e["w"], key_)
    else:
        raise AssertionError(op)


if __name__ == "__main__":
    sys.exit(main())
