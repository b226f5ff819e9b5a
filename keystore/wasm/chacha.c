/*
 * ChaCha20 and XChaCha20 keystream XOR for WebAssembly (SIMD128): the per-run
 * decryption of `sealed` inline tensors. Unlike secretbox.c, this module owns
 * no buffer: it imports its memory, and keystore/wasm/chacha.ts places the
 * ciphertexts and the run buffers the backend reads in that memory, so a run
 * decrypts straight into the buffer fed to the backend, with no copy and no
 * allocation. Built by keystore/wasm/build.sh.
 *
 * ChaCha20 as RFC 8439 (32-bit block counter, 96-bit nonce); XChaCha20 as
 * draft-irtf-cfrg-xchacha-03: subkey = HChaCha20(key, nonce[0..16)), nonce
 * 00000000 || nonce[16..24). Four blocks at once, one block per 32-bit lane
 * (transposed back with shuffles), the 16- and 8-bit rotations as byte
 * shuffles. No tag: the ciphertext was authenticated when the model loaded.
 *
 * Nothing secret is kept in the module between calls: key and subkey live in
 * wasm locals (the engine's registers or native stack), except the 256-byte
 * keystream of a tail, which is written to the shadow stack and zeroed.
 */
#include <stdint.h>
#include <stddef.h>
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name)))
/* Loops left rolled: the module stays under the 4 KiB a browser's main thread may compile synchronously. */
#define ROLLED _Pragma("clang loop unroll(disable)")

static inline uint32_t ld32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline void st32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline uint32_t rotl(uint32_t v, int c) { return (v << c) | (v >> (32 - c)); }

#define C0 0x61707865u
#define C1 0x3320646eu
#define C2 0x79622d32u
#define C3 0x6b206574u

#define QR(a, b, c, d) \
  a += b; d ^= a; d = rotl(d, 16); c += d; b ^= c; b = rotl(b, 12); \
  a += b; d ^= a; d = rotl(d, 8);  c += d; b ^= c; b = rotl(b, 7);

/* HChaCha20: out[0..32) = words 0..3 and 12..15 of the rounds over (key, n[0..16)). */
EXPORT(hchacha) void hchacha(uint8_t *out, const uint8_t *key, const uint8_t *n) {
  uint32_t x0 = C0, x1 = C1, x2 = C2, x3 = C3;
  uint32_t x4 = ld32(key), x5 = ld32(key + 4), x6 = ld32(key + 8), x7 = ld32(key + 12);
  uint32_t x8 = ld32(key + 16), x9 = ld32(key + 20), x10 = ld32(key + 24), x11 = ld32(key + 28);
  uint32_t x12 = ld32(n), x13 = ld32(n + 4), x14 = ld32(n + 8), x15 = ld32(n + 12);
  ROLLED for (int i = 0; i < 10; i++) {
    QR(x0, x4, x8, x12) QR(x1, x5, x9, x13) QR(x2, x6, x10, x14) QR(x3, x7, x11, x15)
    QR(x0, x5, x10, x15) QR(x1, x6, x11, x12) QR(x2, x7, x8, x13) QR(x3, x4, x9, x14)
  }
  st32(out, x0); st32(out + 4, x1); st32(out + 8, x2); st32(out + 12, x3);
  st32(out + 16, x12); st32(out + 20, x13); st32(out + 24, x14); st32(out + 28, x15);
}

#define ROT16(v) wasm_i8x16_shuffle(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13)
#define ROT8(v) wasm_i8x16_shuffle(v, v, 3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14)
#define ROTV(v, c) wasm_v128_or(wasm_i32x4_shl(v, c), wasm_u32x4_shr(v, 32 - c))
#define QRV(a, b, c, d) \
  a = wasm_i32x4_add(a, b); d = ROT16(wasm_v128_xor(d, a)); \
  c = wasm_i32x4_add(c, d); b = ROTV(wasm_v128_xor(b, c), 12); \
  a = wasm_i32x4_add(a, b); d = ROT8(wasm_v128_xor(d, a)); \
  c = wasm_i32x4_add(c, d); b = ROTV(wasm_v128_xor(b, c), 7);

/* Lane j of w0..w3 (words g..g+3 of block j) XORed into src/dst at block j, word g. */
#define OUT4(w0, w1, w2, w3, g) do { \
    v128_t t0 = wasm_i32x4_shuffle(w0, w1, 0, 4, 1, 5), t1 = wasm_i32x4_shuffle(w2, w3, 0, 4, 1, 5); \
    v128_t t2 = wasm_i32x4_shuffle(w0, w1, 2, 6, 3, 7), t3 = wasm_i32x4_shuffle(w2, w3, 2, 6, 3, 7); \
    v128_t b0 = wasm_i64x2_shuffle(t0, t1, 0, 2), b1 = wasm_i64x2_shuffle(t0, t1, 1, 3); \
    v128_t b2 = wasm_i64x2_shuffle(t2, t3, 0, 2), b3 = wasm_i64x2_shuffle(t2, t3, 1, 3); \
    wasm_v128_store(dst + 4 * (g), wasm_v128_xor(wasm_v128_load(src + 4 * (g)), b0)); \
    wasm_v128_store(dst + 64 + 4 * (g), wasm_v128_xor(wasm_v128_load(src + 64 + 4 * (g)), b1)); \
    wasm_v128_store(dst + 128 + 4 * (g), wasm_v128_xor(wasm_v128_load(src + 128 + 4 * (g)), b2)); \
    wasm_v128_store(dst + 192 + 4 * (g), wasm_v128_xor(wasm_v128_load(src + 192 + 4 * (g)), b3)); \
  } while (0)

/*
 * dst[0..256) = src[0..256) XOR the keystream of blocks ctr..ctr+3 under
 * (k[8], n[3]). dst may equal src.
 */
__attribute__((noinline)) static void blocks4(uint8_t *dst, const uint8_t *src, const uint32_t k[8], const uint32_t n[3], uint32_t ctr) {
  /* Only the 16 state vectors stay live through the rounds (the input words are splatted again after). */
  const v128_t i12 = wasm_i32x4_make((int32_t)ctr, (int32_t)(ctr + 1), (int32_t)(ctr + 2), (int32_t)(ctr + 3));
  v128_t x0 = wasm_i32x4_splat(C0), x1 = wasm_i32x4_splat(C1), x2 = wasm_i32x4_splat(C2), x3 = wasm_i32x4_splat(C3);
  v128_t x4 = wasm_i32x4_splat(k[0]), x5 = wasm_i32x4_splat(k[1]), x6 = wasm_i32x4_splat(k[2]), x7 = wasm_i32x4_splat(k[3]);
  v128_t x8 = wasm_i32x4_splat(k[4]), x9 = wasm_i32x4_splat(k[5]), x10 = wasm_i32x4_splat(k[6]), x11 = wasm_i32x4_splat(k[7]);
  v128_t x12 = i12, x13 = wasm_i32x4_splat(n[0]), x14 = wasm_i32x4_splat(n[1]), x15 = wasm_i32x4_splat(n[2]);
  ROLLED for (int i = 0; i < 10; i++) {
    QRV(x0, x4, x8, x12) QRV(x1, x5, x9, x13) QRV(x2, x6, x10, x14) QRV(x3, x7, x11, x15)
    QRV(x0, x5, x10, x15) QRV(x1, x6, x11, x12) QRV(x2, x7, x8, x13) QRV(x3, x4, x9, x14)
  }
  x0 = wasm_i32x4_add(x0, wasm_i32x4_splat(C0)); x1 = wasm_i32x4_add(x1, wasm_i32x4_splat(C1));
  x2 = wasm_i32x4_add(x2, wasm_i32x4_splat(C2)); x3 = wasm_i32x4_add(x3, wasm_i32x4_splat(C3));
  OUT4(x0, x1, x2, x3, 0);
  x4 = wasm_i32x4_add(x4, wasm_i32x4_splat(k[0])); x5 = wasm_i32x4_add(x5, wasm_i32x4_splat(k[1]));
  x6 = wasm_i32x4_add(x6, wasm_i32x4_splat(k[2])); x7 = wasm_i32x4_add(x7, wasm_i32x4_splat(k[3]));
  OUT4(x4, x5, x6, x7, 4);
  x8 = wasm_i32x4_add(x8, wasm_i32x4_splat(k[4])); x9 = wasm_i32x4_add(x9, wasm_i32x4_splat(k[5]));
  x10 = wasm_i32x4_add(x10, wasm_i32x4_splat(k[6])); x11 = wasm_i32x4_add(x11, wasm_i32x4_splat(k[7]));
  OUT4(x8, x9, x10, x11, 8);
  x12 = wasm_i32x4_add(x12, i12); x13 = wasm_i32x4_add(x13, wasm_i32x4_splat(n[0]));
  x14 = wasm_i32x4_add(x14, wasm_i32x4_splat(n[1])); x15 = wasm_i32x4_add(x15, wasm_i32x4_splat(n[2]));
  OUT4(x12, x13, x14, x15, 12);
}

__attribute__((noinline)) static void xor_stream(uint8_t *dst, const uint8_t *src, uint32_t len, const uint32_t k[8], const uint32_t n[3], uint32_t ctr) {
  size_t off = 0;
  ROLLED for (; off + 256 <= len; off += 256, ctr += 4) blocks4(dst + off, src + off, k, n, ctr);
  if (off < len) {
    /* The tail: four blocks of keystream into a zeroed stack block, XORed byte by byte, then wiped. */
    uint8_t ks[256] __attribute__((aligned(16)));
    ROLLED for (int i = 0; i < 256; i++) ((volatile uint8_t *)ks)[i] = 0;
    blocks4(ks, ks, k, n, ctr);
    ROLLED for (size_t i = 0; off + i < len; i++) dst[off + i] = src[off + i] ^ ks[i];
    ROLLED for (int i = 0; i < 256; i++) ((volatile uint8_t *)ks)[i] = 0;
  }
}

/* RFC 8439 ChaCha20: dst[0..len) = src[0..len) XOR the stream of (key, nonce12) from block `ctr`. */
EXPORT(chacha20_xor) void chacha20_xor(uint8_t *dst, const uint8_t *src, uint32_t len, const uint8_t *key, const uint8_t *nonce, uint32_t ctr) {
  uint32_t k[8], n[3];
  ROLLED for (int i = 0; i < 8; i++) k[i] = ld32(key + 4 * i);
  ROLLED for (int i = 0; i < 3; i++) n[i] = ld32(nonce + 4 * i);
  xor_stream(dst, src, len, k, n, ctr);
  ROLLED for (int i = 0; i < 8; i++) ((volatile uint32_t *)k)[i] = 0;
}

/*
 * XChaCha20 as the AEAD's payload: dst[0..len) = src[0..len) XOR the stream of
 * (HChaCha20(key, nonce[0..16)), 0 || nonce[16..24)) from block `ctr` (1 for
 * the ciphertext of XChaCha20-Poly1305: block 0 keys Poly1305).
 */
EXPORT(xchacha20_xor) void xchacha20_xor(uint8_t *dst, const uint8_t *src, uint32_t len, const uint8_t *key, const uint8_t *nonce, uint32_t ctr) {
  uint8_t sub[32];
  uint32_t k[8], n[3];
  hchacha(sub, key, nonce);
  ROLLED for (int i = 0; i < 8; i++) k[i] = ld32(sub + 4 * i);
  n[0] = 0; n[1] = ld32(nonce + 16); n[2] = ld32(nonce + 20);
  xor_stream(dst, src, len, k, n, ctr);
  ROLLED for (int i = 0; i < 32; i++) ((volatile uint8_t *)sub)[i] = 0;
  ROLLED for (int i = 0; i < 8; i++) ((volatile uint32_t *)k)[i] = 0;
}
