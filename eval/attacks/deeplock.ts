/**
 * Key recovery against `deeplock` (Deep-Lock, Alam et al. 2020): the locked
 * file alone gives the AES-128 master key, and with it every parameter.
 *
 * Parameter i is stored as b'_j = S(b_j xor k_i[j]) (j = 0..3 in file order,
 * k_i[j] byte j of schedule word i in AES order), so S^-1(b'_j) = b_j xor k_i[j]:
 * a known parameter byte is a known key byte.
 *
 * Known plaintext: four consecutive known parameters give four consecutive
 * words; the AES-128 schedule runs backwards from any four consecutive words
 * (w[i-4] = w[i] xor f_i(w[i-1])), down to the master key.
 *
 * Ciphertext only: every float32 weight with 2^-15 <= |w| < 2 has a top byte
 * s0111xxx (sign, then the biased exponent's bits 7..4 = 0111), so bits 6..3 of
 * k_i[3] are known for almost every parameter. The schedule's last words
 * d_t = w[4t+3] obey d_t = d_(t-4) xor T_t(d_(t-1)) (T = RotWord, SubWord, Rcon,
 * checked by the tests for t >= 4), and byte-wise this splits into four
 * independent 32-bit systems ("phases"): byte L of d_t depends only on byte L
 * of d_(t-4) and byte L+1 of d_(t-1), so the bytes with (t + L) mod 4 fixed form
 * the sequence z_t = z_(t-4) xor S(z_(t-1)) (xor Rcon_t where L = 0). Each phase
 * meets a lane-3 byte (4 known bits) every fourth round. Guessing a phase's
 * state costs 2^24 candidates once the 4 known bits of two lane-3 bytes are
 * used; each further lane-3 byte keeps 1/16 of them. Four phases give the
 * whole of d_t, hence four consecutive words, hence the master key.
 */
import { INV_SBOX, rcon, SBOX } from '../../runtime/keys/aes.ts';
import type { DeeplockLock } from '../../runtime/klm.ts';

/** The locked parameters in key-schedule order: 4 bytes each, file (little-endian) order. */
export interface DeeplockCiphertext {
  bytes: Uint8Array;
  /** Parameters (bytes.length / 4). */
  count: number;
}

/** Concatenates the locked float32 ranges of a deeplock manifest entry (the attacker reads the public manifest). */
export function deeplockCiphertext(model: Uint8Array, lock: DeeplockLock): DeeplockCiphertext {
  // The attack reads each parameter's float32 exponent byte (b_3, word byte 3); 2-byte float16 ranges
  // put theirs in b_1 and use word bytes 0-1 only, which this attack does not model.
  const half = lock.tensors.find((t) => t.width === 2);
  if (half) throw new RangeError(`deeplock attack: range "${half.name}" holds 2-byte (float16/bfloat16) parameters; the attack models float32 parameters only`);
  const total = lock.tensors.reduce((a, t) => a + t.length, 0);
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const t of lock.tensors) {
    bytes.set(model.subarray(t.offset, t.offset + t.length), at);
    at += t.length;
  }
  return { bytes, count: total / 4 };
}

/** T_t(x) = SubWord(RotWord(x)) xor (Rcon(t), 0, 0, 0): the non-linear step at word 4t. */
export function scheduleT(t: number, x: number): number {
  return (((SBOX[(x >>> 16) & 0xff] ^ rcon(t)) << 24) | (SBOX[(x >>> 8) & 0xff] << 16) | (SBOX[x & 0xff] << 8) | SBOX[x >>> 24]) >>> 0;
}

/**
 * The AES-128 master key from four consecutive schedule words w[index..index+3],
 * by running the expansion backwards. @throws RangeError on a bad index.
 */
export function masterFromWords(words: ArrayLike<number>, index: number): Uint8Array {
  if (!Number.isSafeInteger(index) || index < 0 || words.length !== 4) throw new RangeError(`expected 4 words at an index >= 0, got ${words.length} at ${index}`);
  const w = new Uint32Array(index + 4);
  for (let k = 0; k < 4; k++) w[index + k] = words[k] >>> 0;
  for (let j = index + 3; j >= 4; j--) {
    const prev = w[j - 1];
    w[j - 4] = (w[j] ^ (j % 4 === 0 ? scheduleT(j / 4, prev) : prev)) >>> 0;
  }
  const key = new Uint8Array(16);
  for (let k = 0; k < 4; k++) {
    key[4 * k] = w[k] >>> 24; key[4 * k + 1] = (w[k] >>> 16) & 0xff; key[4 * k + 2] = (w[k] >>> 8) & 0xff; key[4 * k + 3] = w[k] & 0xff;
  }
  return key;
}

/** Key word i from a known plaintext parameter: k_i[j] = S^-1(b'_j) xor b_j. */
export function wordFromKnown(c: DeeplockCiphertext, i: number, plain: number): number {
  const b = new Uint8Array(new Float32Array([plain]).buffer);
  const o = 4 * i;
  const k = (j: number): number => INV_SBOX[c.bytes[o + j]] ^ b[j];
  return ((k(0) << 24) | (k(1) << 16) | (k(2) << 8) | k(3)) >>> 0;
}

/**
 * Known-plaintext recovery: the master key from four consecutive known
 * parameter values starting at parameter `index` (any alignment).
 */
export function knownPlaintextAttack(c: DeeplockCiphertext, index: number, plain: ArrayLike<number>): Uint8Array {
  if (plain.length !== 4 || index + 4 > c.count) throw new RangeError(`expected 4 known values inside ${c.count} parameters, got ${plain.length} at ${index}`);
  return masterFromWords([0, 1, 2, 3].map((k) => wordFromKnown(c, index + k, plain[k])), index);
}

/** The plain parameter bytes under a master key (the attacker's decryption; same layout as the ciphertext). */
export function decryptWithMaster(c: DeeplockCiphertext, master: Uint8Array): Uint8Array {
  const out = new Uint8Array(c.bytes.length);
  const w = new Uint32Array(4);
  for (let k = 0; k < 4; k++) w[k] = ((master[4 * k] << 24) | (master[4 * k + 1] << 16) | (master[4 * k + 2] << 8) | master[4 * k + 3]) >>> 0;
  for (let i = 0; i < c.count; i++) {
    let word: number;
    if (i < 4) word = w[i];
    else {
      const prev = w[(i - 1) & 3];
      word = (w[i & 3] ^ (i % 4 === 0 ? scheduleT(i / 4, prev) : prev)) >>> 0;
      w[i & 3] = word;
    }
    const o = 4 * i;
    out[o] = INV_SBOX[c.bytes[o]] ^ (word >>> 24);
    out[o + 1] = INV_SBOX[c.bytes[o + 1]] ^ ((word >>> 16) & 0xff);
    out[o + 2] = INV_SBOX[c.bytes[o + 2]] ^ ((word >>> 8) & 0xff);
    out[o + 3] = INV_SBOX[c.bytes[o + 3]] ^ (word & 0xff);
  }
  return out;
}

/** Top byte pattern of 2^-15 <= |w| < 2: bits 6..3 are 0111 (the exponent's high bits). */
const TOP_BITS = 0x38;
const TOP_MASK = 0x78;

/**
 * Bits 6..3 of k_(4t+3)[3] for every round t (the parameter's top byte assumed
 * in range), -1 past the end of the model.
 */
function laneThreeObservations(c: DeeplockCiphertext): Int16Array {
  const rounds = Math.floor(c.count / 4);
  const obs = new Int16Array(rounds).fill(-1);
  for (let t = 0; t < rounds; t++) {
    const i = 4 * t + 3;
    obs[t] = (INV_SBOX[c.bytes[4 * i + 3]] ^ TOP_BITS) & TOP_MASK;
  }
  return obs;
}

/** What one phase search found. */
export interface PhaseResult {
  phase: number;
  /** Round t0 the search started from (its lane-3 byte), and how many starts were tried. */
  start: number;
  starts: number;
  /** Candidate states enumerated (2^24 per start) and how many survived the checks. */
  candidates: number;
  survivors: number;
  /** Share of this phase's lane-3 observations the recovered sequence agrees with. */
  agreement: number;
  /** z_t for every round t (the phase's byte of d_t), or null when not found. */
  z: Uint8Array | null;
}

/** The outcome of the ciphertext-only attack. */
export interface CiphertextOnlyResult {
  master: Uint8Array | null;
  phases: PhaseResult[];
  /** Ciphertext top bytes the searches read before confirming (generator + checks, over all phases and starts). */
  bytesUsed: number;
  seconds: number;
}

/** Options of the ciphertext-only search. */
export interface CiphertextOnlyOptions {
  /** Lane-3 checks after the generating pair (default 10). */
  checks?: number;
  /** Checks a candidate may fail (weights out of range; default 1). */
  misses?: number;
  /** Starts tried per phase before giving up (default 8). */
  maxStarts?: number;
  /** Agreement over the whole phase needed to accept (default 0.6; a wrong sequence agrees on about 1/16). */
  accept?: number;
}

/** Lane of phase `phase` at round t. */
const laneOf = (phase: number, t: number): number => (((phase - t) % 4) + 4) % 4;

/** The whole phase sequence from its state at rounds t0-3..t0, run forwards and backwards. */
function phaseSequence(phase: number, t0: number, state: readonly number[], rounds: number, rc: Uint8Array): Uint8Array {
  const z = new Uint8Array(rounds);
  for (let k = 0; k < 4; k++) z[t0 - 3 + k] = state[k];
  for (let t = t0 + 1; t < rounds; t++) z[t] = z[t - 4] ^ SBOX[z[t - 1]] ^ (laneOf(phase, t) === 0 ? rc[t] : 0);
  // Backwards: z[t-4] from z[t] and z[t-1]; walking t down from t0, z[t-1] is always known by then.
  for (let t = t0; t >= 4; t--) z[t - 4] = z[t] ^ SBOX[z[t - 1]] ^ (laneOf(phase, t) === 0 ? rc[t] : 0);
  return z;
}

function phaseAgreement(phase: number, z: Uint8Array, obs: Int16Array): number {
  let n = 0;
  let ok = 0;
  for (let t = 4; t < obs.length; t++) {
    if (laneOf(phase, t) !== 3 || obs[t] < 0) continue;
    n++;
    if ((z[t] & TOP_MASK) === obs[t]) ok++;
  }
  return n ? ok / n : 0;
}

/**
 * Enumerates the states of one phase consistent with the lane-3 bytes at t0
 * and t0+4, and keeps those that also fit `checks` later lane-3 bytes (with at
 * most `misses` failures). Returns the surviving states z[t0-3..t0].
 */
function searchPhase(phase: number, t0: number, obs: Int16Array, rc: Uint8Array, checks: number, misses: number): { states: number[][]; candidates: number } {
  // For each 4-bit target v, the 16 bytes x with (S(x) & 0x78) = v << 3.
  const pre: number[][] = Array.from({ length: 16 }, () => []);
  for (let x = 0; x < 256; x++) pre[(SBOX[x] & TOP_MASK) >> 3].push(x);
  const steps = 4 * (checks + 1);
  const z = new Uint8Array(8 + steps + 1);
  const want = new Int16Array(checks);
  for (let k = 0; k < checks; k++) want[k] = obs[t0 + 8 + 4 * k];
  const rcOf = new Uint8Array(steps + 8);
  for (let s = 0; s < rcOf.length; s++) {
    const t = t0 - 3 + s;
    rcOf[s] = t >= 0 && t < rc.length && laneOf(phase, t) === 0 ? rc[t] : 0;
  }
  const states: number[][] = [];
  let candidates = 0;
  // Index s of z is round t0 - 3 + s: z[0..3] is the state, z[3] is the lane-3 byte at t0.
  const hi = [0x00, 0x80];
  const lows = [0, 1, 2, 3, 4, 5, 6, 7];
  for (const h of hi) {
    for (const lo of lows) {
      const e0 = h | obs[t0] | lo;
      z[3] = e0;
      const s0 = SBOX[e0];
      for (let e3 = 0; e3 < 256; e3++) {
        z[0] = e3;
        z[4] = e3 ^ s0 ^ rcOf[4];
        const s1 = SBOX[z[4]];
        for (let e2 = 0; e2 < 256; e2++) {
          z[1] = e2;
          z[5] = e2 ^ s1 ^ rcOf[5];
          const s2 = SBOX[z[5]];
          const target = ((obs[t0 + 4] ^ e0) & TOP_MASK) >> 3;
          for (const z6 of pre[target]) {
            candidates++;
            z[6] = z6;
            z[2] = z6 ^ s2 ^ rcOf[6];
            z[7] = e0 ^ SBOX[z6] ^ rcOf[7];
            let missed = 0;
            let s = 8;
            for (let k = 0; k < checks && missed <= misses; k++) {
              for (let r = 0; r < 4; r++, s++) z[s] = z[s - 4] ^ SBOX[z[s - 1]] ^ rcOf[s];
              if (want[k] >= 0 && (z[s - 1] & TOP_MASK) !== want[k]) missed++;
            }
            if (missed <= misses) states.push([z[0], z[1], z[2], z[3]]);
          }
        }
      }
    }
  }
  return { states, candidates };
}

/**
 * Ciphertext-only recovery of the Deep-Lock master key. Needs a model with at
 * least ~200 rounds (800 parameters) mostly in 2^-15 <= |w| < 2.
 */
export function ciphertextOnlyAttack(c: DeeplockCiphertext, opts: CiphertextOnlyOptions = {}): CiphertextOnlyResult {
  const t0clock = performance.now();
  const checks = opts.checks ?? 10;
  const misses = opts.misses ?? 1;
  const maxStarts = opts.maxStarts ?? 8;
  const accept = opts.accept ?? 0.6;
  const obs = laneThreeObservations(c);
  const rounds = obs.length;
  const rc = new Uint8Array(rounds);
  for (let t = 1; t < rounds; t++) rc[t] = rcon(t);
  const phases: PhaseResult[] = [];
  let bytesUsed = 0;
  for (let phase = 0; phase < 4; phase++) {
    // First start: the first round >= 7 whose lane in this phase is 3.
    let t0 = 7;
    while (laneOf(phase, t0) !== 3) t0++;
    const res: PhaseResult = { phase, start: t0, starts: 0, candidates: 0, survivors: 0, agreement: 0, z: null };
    for (let k = 0; k < maxStarts; k++, t0 += 4) {
      if (t0 + 8 + 4 * checks >= rounds) break;
      res.starts++;
      bytesUsed += 2 + checks;
      const { states, candidates } = searchPhase(phase, t0, obs, rc, checks, misses);
      res.candidates += candidates;
      res.survivors += states.length;
      let best: { z: Uint8Array; agreement: number } | undefined;
      for (const s of states) {
        const z = phaseSequence(phase, t0, s, rounds, rc);
        const agreement = phaseAgreement(phase, z, obs);
        if (!best || agreement > best.agreement) best = { z, agreement };
      }
      if (best && best.agreement >= accept) {
        res.start = t0;
        res.z = best.z;
        res.agreement = best.agreement;
        break;
      }
    }
    phases.push(res);
  }
  let master: Uint8Array | null = null;
  if (phases.every((p) => p.z)) {
    // d_t from the four phases at rounds T-3..T (T >= 7), then four consecutive words at 4T.
    const T = 8;
    const d = (t: number): number => {
      let w = 0;
      for (let lane = 0; lane < 4; lane++) w |= phases[(((t + lane) % 4) + 4) % 4].z![t] << (8 * (3 - lane));
      return w >>> 0;
    };
    const words = [
      (d(T) ^ d(T - 1) ^ d(T - 2) ^ d(T - 3)) >>> 0,
      (d(T) ^ d(T - 2)) >>> 0,
      (d(T) ^ d(T - 1)) >>> 0,
      d(T),
    ];
    master = masterFromWords(words, 4 * T);
  }
  return { master, phases, bytesUsed, seconds: (performance.now() - t0clock) / 1000 };
}

/** One position where a guessed run of four plaintext values (e.g. zeros) produced a key that decrypts plausibly. */
export interface GuessHit {
  index: number;
  master: Uint8Array;
}

/**
 * Known plaintext by guessing: assumes parameters index..index+3 equal
 * `guess` at every position in turn (e.g. four zeros: pruned weights, padding,
 * unused biases), derives the schedule there and keeps the first position whose
 * next `probe` parameters decrypt to plausible weights. Returns the hit and the
 * positions tried. The backward run to the master key is done only for the hit.
 */
export function guessedPlaintextAttack(c: DeeplockCiphertext, guess: ArrayLike<number> = [0, 0, 0, 0], probe = 64, from = 0): { hit: GuessHit | null; tried: number } {
  const plausible = (v: number): boolean => { const a = Math.abs(v); return a === 0 || (a < 1024 && a >= 2 ** -40); };
  const buf = new Uint8Array(4);
  const f = new Float32Array(buf.buffer);
  let tried = 0;
  for (let i = from; i + 4 + probe <= c.count; i++) {
    tried++;
    const w = [0, 1, 2, 3].map((k) => wordFromKnown(c, i + k, guess[k]));
    // Run forward from words i..i+3 and decrypt the next `probe` parameters.
    const ring = Uint32Array.from(w);
    let bad = 0;
    for (let j = i + 4; j < i + 4 + probe && bad <= probe / 8; j++) {
      const prev = ring[(j - 1) & 3];
      const word = (ring[j & 3] ^ (j % 4 === 0 ? scheduleT(j / 4, prev) : prev)) >>> 0;
      ring[j & 3] = word;
      const o = 4 * j;
      buf[0] = INV_SBOX[c.bytes[o]] ^ (word >>> 24);
      buf[1] = INV_SBOX[c.bytes[o + 1]] ^ ((word >>> 16) & 0xff);
      buf[2] = INV_SBOX[c.bytes[o + 2]] ^ ((word >>> 8) & 0xff);
      buf[3] = INV_SBOX[c.bytes[o + 3]] ^ (word & 0xff);
      if (!plausible(f[0])) bad++;
    }
    if (bad <= probe / 8) return { hit: { index: i, master: masterFromWords(w, i) }, tried };
  }
  return { hit: null, tried };
}
