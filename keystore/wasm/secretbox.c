/*
 * XSalsa20 and Poly1305 for WebAssembly (SIMD128): the hot loop of opening a
 * `sealed` model. keystore/wasm/secretbox.ts drives it in 64 KiB slices and
 * keeps NaCl's secretbox construction (Poly1305 key = first 32 bytes of the
 * XSalsa20 stream, message from stream byte 32 on). Built by
 * keystore/wasm/build.sh; the module holds no key between calls of one open
 * and is wiped by `wipe(used)` when the open ends.
 *
 * Salsa20: four blocks at once, one block per 32-bit lane (D. J. Bernstein's
 * reference rounds, transposed back with shuffles). Poly1305: the 26-bit-limb
 * "donna-32" arithmetic (A. Moon's public-domain poly1305-donna), 64-bit
 * products, constant time.
 */
#include <stdint.h>
#include <stddef.h>
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name)))

enum { BUF = 65536 };
/* The slice that JavaScript copies in and out. */
static uint8_t buf[BUF] __attribute__((aligned(16)));
/* Key, nonce and tag exchange area. */
static uint8_t io[64] __attribute__((aligned(16)));
/* XSalsa20 state: the HSalsa20 subkey and the last 8 nonce bytes. */
static uint32_t sub[8];
static uint32_t nonce2[2];

EXPORT(buffer) uint8_t *buffer(void) { return buf; }
EXPORT(io) uint8_t *io_area(void) { return io; }

static inline uint32_t ld32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline void st32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline uint32_t rotl(uint32_t v, int c) { return (v << c) | (v >> (32 - c)); }

#define QR(a, b, c, d) \
  b ^= rotl(a + d, 7); c ^= rotl(b + a, 9); d ^= rotl(c + b, 13); a ^= rotl(d + c, 18);

static void rounds(uint32_t x[16]) {
  for (int i = 0; i < 10; i++) {
    QR(x[0], x[4], x[8], x[12]) QR(x[5], x[9], x[13], x[1]) QR(x[10], x[14], x[2], x[6]) QR(x[15], x[3], x[7], x[11])
    QR(x[0], x[1], x[2], x[3]) QR(x[5], x[6], x[7], x[4]) QR(x[10], x[11], x[8], x[9]) QR(x[15], x[12], x[13], x[14])
  }
}

static const uint32_t SIGMA[4] = { 0x61707865, 0x3320646e, 0x79622d32, 0x6b206574 };

/* io[0..32) key, io[32..56) nonce: derives the HSalsa20 subkey, then wipes io. */
EXPORT(xsalsa_init) void xsalsa_init(void) {
  uint32_t x[16];
  x[0] = SIGMA[0]; x[5] = SIGMA[1]; x[10] = SIGMA[2]; x[15] = SIGMA[3];
  for (int i = 0; i < 4; i++) { x[1 + i] = ld32(io + 4 * i); x[11 + i] = ld32(io + 16 + 4 * i); }
  for (int i = 0; i < 4; i++) x[6 + i] = ld32(io + 32 + 4 * i);
  rounds(x);
  sub[0] = x[0]; sub[1] = x[5]; sub[2] = x[10]; sub[3] = x[15];
  sub[4] = x[6]; sub[5] = x[7]; sub[6] = x[8]; sub[7] = x[9];
  nonce2[0] = ld32(io + 48); nonce2[1] = ld32(io + 52);
  for (int i = 0; i < 16; i++) x[i] = 0;
  for (int i = 0; i < 64; i++) ((volatile uint8_t *)io)[i] = 0;
}

static void block_scalar(uint8_t *p, size_t n, uint64_t ctr) {
  uint32_t in[16], x[16];
  in[0] = SIGMA[0]; in[5] = SIGMA[1]; in[10] = SIGMA[2]; in[15] = SIGMA[3];
  for (int i = 0; i < 4; i++) { in[1 + i] = sub[i]; in[11 + i] = sub[4 + i]; }
  in[6] = nonce2[0]; in[7] = nonce2[1]; in[8] = (uint32_t)ctr; in[9] = (uint32_t)(ctr >> 32);
  for (int i = 0; i < 16; i++) x[i] = in[i];
  rounds(x);
  uint8_t ks[64];
  for (int i = 0; i < 16; i++) st32(ks + 4 * i, x[i] + in[i]);
  for (size_t i = 0; i < n; i++) p[i] ^= ks[i];
  for (int i = 0; i < 64; i++) ((volatile uint8_t *)ks)[i] = 0;
  for (int i = 0; i < 16; i++) { x[i] = 0; in[i] = 0; }
}

#define ROTV(v, c) wasm_v128_or(wasm_i32x4_shl(v, c), wasm_u32x4_shr(v, 32 - c))
#define QRV(a, b, c, d) \
  b = wasm_v128_xor(b, ROTV(wasm_i32x4_add(a, d), 7)); \
  c = wasm_v128_xor(c, ROTV(wasm_i32x4_add(b, a), 9)); \
  d = wasm_v128_xor(d, ROTV(wasm_i32x4_add(c, b), 13)); \
  a = wasm_v128_xor(a, ROTV(wasm_i32x4_add(d, c), 18));

/* XORs 4 blocks (256 bytes at p) with the stream at block counters ctr..ctr+3. */
static void blocks4(uint8_t *p, uint64_t ctr) {
  v128_t in[16], x[16];
  in[0] = wasm_i32x4_splat(SIGMA[0]); in[5] = wasm_i32x4_splat(SIGMA[1]);
  in[10] = wasm_i32x4_splat(SIGMA[2]); in[15] = wasm_i32x4_splat(SIGMA[3]);
  for (int i = 0; i < 4; i++) { in[1 + i] = wasm_i32x4_splat(sub[i]); in[11 + i] = wasm_i32x4_splat(sub[4 + i]); }
  in[6] = wasm_i32x4_splat(nonce2[0]); in[7] = wasm_i32x4_splat(nonce2[1]);
  uint64_t c0 = ctr, c1 = ctr + 1, c2 = ctr + 2, c3 = ctr + 3;
  in[8] = wasm_i32x4_make((int32_t)c0, (int32_t)c1, (int32_t)c2, (int32_t)c3);
  in[9] = wasm_i32x4_make((int32_t)(c0 >> 32), (int32_t)(c1 >> 32), (int32_t)(c2 >> 32), (int32_t)(c3 >> 32));
  for (int i = 0; i < 16; i++) x[i] = in[i];
  for (int i = 0; i < 10; i++) {
    QRV(x[0], x[4], x[8], x[12]) QRV(x[5], x[9], x[13], x[1]) QRV(x[10], x[14], x[2], x[6]) QRV(x[15], x[3], x[7], x[11])
    QRV(x[0], x[1], x[2], x[3]) QRV(x[5], x[6], x[7], x[4]) QRV(x[10], x[11], x[8], x[9]) QRV(x[15], x[12], x[13], x[14])
  }
  for (int i = 0; i < 16; i++) x[i] = wasm_i32x4_add(x[i], in[i]);
  /* Lane j of x[0..15] is block j; transpose each group of four words. */
  for (int g = 0; g < 16; g += 4) {
    v128_t t0 = wasm_i32x4_shuffle(x[g], x[g + 1], 0, 4, 1, 5);
    v128_t t1 = wasm_i32x4_shuffle(x[g + 2], x[g + 3], 0, 4, 1, 5);
    v128_t t2 = wasm_i32x4_shuffle(x[g], x[g + 1], 2, 6, 3, 7);
    v128_t t3 = wasm_i32x4_shuffle(x[g + 2], x[g + 3], 2, 6, 3, 7);
    v128_t b[4] = { wasm_i64x2_shuffle(t0, t1, 0, 2), wasm_i64x2_shuffle(t0, t1, 1, 3),
                    wasm_i64x2_shuffle(t2, t3, 0, 2), wasm_i64x2_shuffle(t2, t3, 1, 3) };
    for (int j = 0; j < 4; j++) {
      uint8_t *q = p + 64 * j + 4 * g;
      wasm_v128_store(q, wasm_v128_xor(wasm_v128_load(q), b[j]));
    }
  }
}

/* XORs buf[0..len) with the XSalsa20 stream from block `ctr` (len a multiple of 64 except at the end). */
EXPORT(xsalsa_xor) void xsalsa_xor(uint32_t len, uint32_t ctr_lo, uint32_t ctr_hi) {
  uint64_t ctr = ((uint64_t)ctr_hi << 32) | ctr_lo;
  size_t off = 0;
  if (len > BUF) len = BUF;
  for (; off + 256 <= len; off += 256, ctr += 4) blocks4(buf + off, ctr);
  for (; off < len; off += 64, ctr += 1) block_scalar(buf + off, len - off < 64 ? len - off : 64, ctr);
}

/* Poly1305, donna-32. */
static uint32_t pr[5], ph[5], ppad[4];

/* io[0..32) the one-time key; wipes io. */
EXPORT(poly_init) void poly_init(void) {
  pr[0] = (ld32(io + 0)) & 0x3ffffff;
  pr[1] = (ld32(io + 3) >> 2) & 0x3ffff03;
  pr[2] = (ld32(io + 6) >> 4) & 0x3ffc0ff;
  pr[3] = (ld32(io + 9) >> 6) & 0x3f03fff;
  pr[4] = (ld32(io + 12) >> 8) & 0x00fffff;
  for (int i = 0; i < 5; i++) ph[i] = 0;
  for (int i = 0; i < 4; i++) ppad[i] = ld32(io + 16 + 4 * i);
  for (int i = 0; i < 64; i++) ((volatile uint8_t *)io)[i] = 0;
}

static void poly_blocks(const uint8_t *m, size_t bytes, uint32_t hibit) {
  const uint32_t r0 = pr[0], r1 = pr[1], r2 = pr[2], r3 = pr[3], r4 = pr[4];
  const uint32_t s1 = r1 * 5, s2 = r2 * 5, s3 = r3 * 5, s4 = r4 * 5;
  uint32_t h0 = ph[0], h1 = ph[1], h2 = ph[2], h3 = ph[3], h4 = ph[4];
  while (bytes >= 16) {
    h0 += (ld32(m + 0)) & 0x3ffffff;
    h1 += (ld32(m + 3) >> 2) & 0x3ffffff;
    h2 += (ld32(m + 6) >> 4) & 0x3ffffff;
    h3 += (ld32(m + 9) >> 6) & 0x3ffffff;
    h4 += (ld32(m + 12) >> 8) | hibit;
    uint64_t d0 = (uint64_t)h0 * r0 + (uint64_t)h1 * s4 + (uint64_t)h2 * s3 + (uint64_t)h3 * s2 + (uint64_t)h4 * s1;
    uint64_t d1 = (uint64_t)h0 * r1 + (uint64_t)h1 * r0 + (uint64_t)h2 * s4 + (uint64_t)h3 * s3 + (uint64_t)h4 * s2;
    uint64_t d2 = (uint64_t)h0 * r2 + (uint64_t)h1 * r1 + (uint64_t)h2 * r0 + (uint64_t)h3 * s4 + (uint64_t)h4 * s3;
    uint64_t d3 = (uint64_t)h0 * r3 + (uint64_t)h1 * r2 + (uint64_t)h2 * r1 + (uint64_t)h3 * r0 + (uint64_t)h4 * s4;
    uint64_t d4 = (uint64_t)h0 * r4 + (uint64_t)h1 * r3 + (uint64_t)h2 * r2 + (uint64_t)h3 * r1 + (uint64_t)h4 * r0;
    uint32_t c;
    c = (uint32_t)(d0 >> 26); h0 = (uint32_t)d0 & 0x3ffffff;
    d1 += c; c = (uint32_t)(d1 >> 26); h1 = (uint32_t)d1 & 0x3ffffff;
    d2 += c; c = (uint32_t)(d2 >> 26); h2 = (uint32_t)d2 & 0x3ffffff;
    d3 += c; c = (uint32_t)(d3 >> 26); h3 = (uint32_t)d3 & 0x3ffffff;
    d4 += c; c = (uint32_t)(d4 >> 26); h4 = (uint32_t)d4 & 0x3ffffff;
    h0 += c * 5; c = h0 >> 26; h0 &= 0x3ffffff;
    h1 += c;
    m += 16;
    bytes -= 16;
  }
  ph[0] = h0; ph[1] = h1; ph[2] = h2; ph[3] = h3; ph[4] = h4;
}

/* MACs buf[0..len); len must be a multiple of 16 unless this is the last call. */
EXPORT(poly_update) void poly_update(uint32_t len) {
  if (len > BUF) len = BUF;
  size_t whole = len & ~(size_t)15;
  poly_blocks(buf, whole, 1u << 24);
  if (whole < len) {
    uint8_t last[16];
    size_t n = len - whole;
    for (size_t i = 0; i < 16; i++) last[i] = i < n ? buf[whole + i] : (i == n ? 1 : 0);
    poly_blocks(last, 16, 0);
  }
}

/* Writes the tag to io[0..16) and wipes the Poly1305 state. */
EXPORT(poly_finish) void poly_finish(void) {
  uint32_t h0 = ph[0], h1 = ph[1], h2 = ph[2], h3 = ph[3], h4 = ph[4], c;
  c = h1 >> 26; h1 &= 0x3ffffff;
  h2 += c; c = h2 >> 26; h2 &= 0x3ffffff;
  h3 += c; c = h3 >> 26; h3 &= 0x3ffffff;
  h4 += c; c = h4 >> 26; h4 &= 0x3ffffff;
  h0 += c * 5; c = h0 >> 26; h0 &= 0x3ffffff;
  h1 += c;
  uint32_t g0 = h0 + 5; c = g0 >> 26; g0 &= 0x3ffffff;
  uint32_t g1 = h1 + c; c = g1 >> 26; g1 &= 0x3ffffff;
  uint32_t g2 = h2 + c; c = g2 >> 26; g2 &= 0x3ffffff;
  uint32_t g3 = h3 + c; c = g3 >> 26; g3 &= 0x3ffffff;
  uint32_t g4 = h4 + c - (1u << 26);
  uint32_t mask = (g4 >> 31) - 1;
  g0 &= mask; g1 &= mask; g2 &= mask; g3 &= mask; g4 &= mask;
  mask = ~mask;
  h0 = (h0 & mask) | g0; h1 = (h1 & mask) | g1; h2 = (h2 & mask) | g2; h3 = (h3 & mask) | g3; h4 = (h4 & mask) | g4;
  h0 = (h0) | (h1 << 26);
  h1 = (h1 >> 6) | (h2 << 20);
  h2 = (h2 >> 12) | (h3 << 14);
  h3 = (h3 >> 18) | (h4 << 8);
  uint64_t f;
  f = (uint64_t)h0 + ppad[0]; h0 = (uint32_t)f;
  f = (uint64_t)h1 + ppad[1] + (f >> 32); h1 = (uint32_t)f;
  f = (uint64_t)h2 + ppad[2] + (f >> 32); h2 = (uint32_t)f;
  f = (uint64_t)h3 + ppad[3] + (f >> 32); h3 = (uint32_t)f;
  st32(io + 0, h0); st32(io + 4, h1); st32(io + 8, h2); st32(io + 12, h3);
  for (int i = 0; i < 5; i++) { ((volatile uint32_t *)pr)[i] = 0; ((volatile uint32_t *)ph)[i] = 0; }
  for (int i = 0; i < 4; i++) ((volatile uint32_t *)ppad)[i] = 0;
}

/* Zeroes the key, nonce and MAC state and buf[0..used): the bytes one open wrote. */
EXPORT(wipe) void wipe(uint32_t used) {
  if (used > BUF) used = BUF;
  for (size_t i = 0; i < used; i++) ((volatile uint8_t *)buf)[i] = 0;
  for (int i = 0; i < 64; i++) ((volatile uint8_t *)io)[i] = 0;
  for (int i = 0; i < 8; i++) ((volatile uint32_t *)sub)[i] = 0;
  nonce2[0] = nonce2[1] = 0;
  for (int i = 0; i < 5; i++) { ((volatile uint32_t *)pr)[i] = 0; ((volatile uint32_t *)ph)[i] = 0; }
  for (int i = 0; i < 4; i++) ((volatile uint32_t *)ppad)[i] = 0;
}
