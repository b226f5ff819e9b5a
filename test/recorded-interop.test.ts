// Recorded files written by other CBOR encoders (cbor-x defaults, hand-built non-shortest and
// indefinite forms, the device recorder's 0x9b header, Python) read back as the canonical file
// does, in the lenient profile; what lenient still refuses; signed files stay strict.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Decoder, Encoder, encode as cborxEncode } from 'cbor-x';
import { checkCbor, decodeCbor, LENIENT_TAGS, MAX_CBOR_DEPTH } from '../keystore/cbor.ts';
import { decodeRecorded, encodeRecorded, encodeSample, MAX_RECORDED_ITEMS, type Sample } from '../runtime/recorded.ts';
import { FormatError, SizeLimitError } from '../keystore/errors.ts';
import { bytesOf, type TensorMap } from '../runtime/tensor.ts';
import { RAW_ITEMS } from '../eval/fuzz/raw.ts';

const samples: Sample[] = [
  { inputs: { input: { dtype: 'float32', dims: [1, 3], data: new Float32Array([0.5, -1, 3.25]) } }, label: 7 },
  { inputs: { ids: { dtype: 'int64', dims: [2], data: new BigInt64Array([1n, -(2n ** 40n)]) }, mask: { dtype: 'bool', dims: [2], data: new Uint8Array([1, 0]) } } },
  { inputs: { x: { dtype: 'float64', dims: [2, 1], data: new Float64Array([0.1, -2.5]) }, n: { dtype: 'uint16', dims: [1], data: new Uint16Array([65535]) } }, label: 300 },
];
const canonical = encodeRecorded(samples);
const expected = decodeRecorded(canonical);
const lenient = (b: Uint8Array, maxItems = 1 << 20): unknown => decodeCbor(b, 'test', 1 << 26, maxItems, { lenient: true });
/** This process's CPU time in ms (user + system). */
const cpuMs = (): number => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
const u8 = (...b: number[]): Uint8Array => Uint8Array.from(b);

/** The samples as a plain tree for another encoder: data as raw bytes, or as the typed arrays themselves. */
function tree(s: readonly Sample[], opts: { typed?: boolean; nullLabel?: boolean } = {}): unknown[] {
  return s.map((x) => ({
    inputs: Object.fromEntries(Object.entries(x.inputs as TensorMap).map(([k, t]) => [k, { dtype: t.dtype, dims: t.dims, data: opts.typed ? t.data : bytesOf(t.data) }])),
    ...(x.label !== undefined ? { label: x.label } : opts.nullLabel ? { label: null } : {}),
  }));
}

/**
 * A hand encoder of the forms keylock never writes: `wide` puts every integer and length in
 * 8 bytes (0x1b); otherwise in 2 bytes (0x19) even when it fits in the header. `indefinite`
 * makes every array, map and string indefinite-length, strings in chunks of at most 5 bytes.
 */
function hand(v: unknown, wide: boolean, indefinite: boolean): number[] {
  const head = (major: number, n: number): number[] => wide
    ? [major << 5 | 27, ...new Uint8Array(new BigUint64Array([BigInt(n)]).buffer).reverse()]
    : [major << 5 | 25, n >> 8, n & 255];
  if (v === null) return [0xf6];
  if (typeof v === 'number') return v >= 0 ? head(0, v) : head(1, -1 - v);
  if (typeof v === 'string' || v instanceof Uint8Array) {
    const major = typeof v === 'string' ? 3 : 2;
    const b = typeof v === 'string' ? new TextEncoder().encode(v) : v;
    if (!indefinite) return [...head(major, b.length), ...b];
    const out = [major << 5 | 31];
    for (let i = 0; i < b.length; i += 5) out.push(...head(major, Math.min(5, b.length - i)), ...b.subarray(i, i + 5));
    return [...out, 0xff];
  }
  if (Array.isArray(v)) return [...(indefinite ? [0x9f] : head(4, v.length)), ...v.flatMap((x) => hand(x, wide, indefinite)), ...(indefinite ? [0xff] : [])];
  const e = Object.entries(v as object);
  return [...(indefinite ? [0xbf] : head(5, e.length)), ...e.flatMap(([k, x]) => [...hand(k, wide, indefinite), ...hand(x, wide, indefinite)]), ...(indefinite ? [0xff] : [])];
}

test('cbor-x encode() with its default options (16-bit map headers, tag 64, typed-array tags) reads as the canonical file', () => {
  // cbor-x's exported encode() is `new Encoder({ useRecords: false })`, every other option default.
  const bytesTagged = cborxEncode(tree(samples));
  assert.ok(bytesTagged.includes(0xb9) && Buffer.from(bytesTagged).includes(Buffer.from([0xd8, 0x40])), 'has 16-bit map headers and tag 64');
  assert.throws(() => decodeCbor(bytesTagged, 'strict', 1 << 20), /strict: a number not in its shortest form at byte 1/);
  assert.deepEqual(decodeRecorded(bytesTagged), expected);

  const typed = cborxEncode(tree(samples, { typed: true, nullLabel: true }));
  for (const tag of [0x55, 0x4f, 0x56, 0x45]) assert.ok(Buffer.from(typed).includes(Buffer.from([0xd8, tag])), `has tag ${tag}`);
  assert.deepEqual(decodeRecorded(typed), expected);

  // A typed array of another element type than the dtype says is refused, not reinterpreted.
  const wrong = cborxEncode([{ inputs: { x: { dtype: 'int32', dims: [2], data: new Float32Array(2) } } }]);
  assert.throws(() => decodeRecorded(wrong), (e: unknown) => e instanceof FormatError && /sample\[0\]\.inputs\.x\.data: expected a byte string or int32 typed array, got a Float32Array/.test(e.message));
  // Uint8ClampedArray (tag 68) is plain bytes, like tag 64.
  const clamped = cborxEncode([{ inputs: { x: { dtype: 'int16', dims: [1], data: new Uint8ClampedArray([0xfe, 0xff]) } } }]);
  assert.deepEqual(decodeRecorded(clamped)[0].inputs!.x.data, new Int16Array([-2]));

  // `new Encoder()` with no options at all writes cbor-x records (tag 0xdfff): not standard CBOR, refused with the fix.
  assert.throws(() => decodeRecorded(new Encoder().encode(tree(samples))), /CBOR tag \(57343\).*useRecords: false/);
});

test('lenient tags decode to what cbor-x 1.6.8 builds, aligned or not, views or copies', () => {
  const cx = new Decoder({ useRecords: false, mapsAsObjects: true });
  for (const [tag, C] of LENIENT_TAGS) {
    for (const shift of [0, 1, 3]) {
      // tag, a 16-byte byte string, placed `shift` bytes into an array so its data starts unaligned when shift > 0
      const bytes = u8(0x80 | (shift + 1), ...Array(shift).fill(0), 0xd8, tag, 0x50, ...Array.from({ length: 16 }, (_, i) => i * 17 + 1));
      const ours = (lenient(bytes) as unknown[])[shift] as ArrayBufferView;
      const theirs = (cx.decode(bytes) as unknown[])[shift] as ArrayBufferView;
      assert.equal(ours.constructor, C);
      assert.equal(theirs.constructor, C, `cbor-x builds ${C.name} for tag ${tag}`);
      assert.deepEqual(ours, theirs, `tag ${tag} shift ${shift}`);
      assert.equal(ours.byteOffset % C.BYTES_PER_ELEMENT, 0);
      // Aligned: a view of the input, like cbor-x (and like byte strings); unaligned: a copy.
      assert.equal(ours.buffer === bytes.buffer, (shift + 4) % C.BYTES_PER_ELEMENT === 0);
      // The same from a Buffer (readFileSync's type), whose slice() is a view, not a copy.
      for (let pad = 0; pad < 8; pad++) {
        const buf = Buffer.concat([Buffer.alloc(pad), bytes]).subarray(pad);
        assert.deepEqual((lenient(buf) as unknown[])[shift], theirs, `tag ${tag} shift ${shift} Buffer pad ${pad}`);
      }
    }
  }
});

test('hand-built non-shortest, 8-byte and indefinite-length files read as the canonical file; null label is no label', () => {
  for (const wide of [false, true]) {
    for (const indefinite of [false, true]) {
      const b = Uint8Array.from(hand(tree(samples, { nullLabel: true }), wide, indefinite));
      assert.throws(() => checkCbor(b, 'strict'), FormatError, `strict refuses wide=${wide} indefinite=${indefinite}`);
      assert.doesNotThrow(() => checkCbor(b, 'lenient', 1 << 20, { lenient: true }));
      assert.deepEqual(decodeRecorded(b), expected, `wide=${wide} indefinite=${indefinite}`);
    }
  }
  // Scalars in every width read as the same value; 8-byte integers past 2^53 stay exact as bigints.
  assert.deepEqual(lenient(u8(0x9f, 0x18, 0x05, 0x19, 0x00, 0x05, 0x1a, 0, 0, 0, 5, 0x1b, 0, 0, 0, 0, 0, 0, 0, 5, 0x39, 0, 5, 0xff)), [5, 5, 5, 5, -6]);
  assert.deepEqual(lenient(u8(0x82, 0x1b, 0, 0x20, 0, 0, 0, 0, 0, 1, 0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)), [2n ** 53n + 1n, -(2n ** 64n)]);
  assert.deepEqual(lenient(u8(0x83, 0xf6, 0xf7, 0xf9, 0x3c, 0x00)), [null, undefined, 1]);
  // Tag 64 around an indefinite byte string is one byte string.
  assert.deepEqual(lenient(u8(0xd8, 0x40, 0x5f, 0x41, 1, 0x42, 2, 3, 0xff)), u8(1, 2, 3));
});

test('a device recorder file (0x9b + 8-byte count, then canonical sample maps) reads as a recorded file', () => {
  const both: Sample[] = samples.map((s, i) => ({ ...s, outputs: { y: { dtype: 'float32', dims: [1], data: new Float32Array([i]) } } }));
  const head = new Uint8Array(9);
  head[0] = 0x9b;
  new DataView(head.buffer).setBigUint64(1, BigInt(both.length));
  const file = Buffer.concat([head, ...both.map(encodeSample)]);
  assert.deepEqual(decodeRecorded(file, 'inputs'), expected);
  assert.deepEqual(decodeRecorded(file, 'outputs').map((s) => s.outputs!.y.data[0]), [0, 1, 2]);
  // A count that does not match the samples: the reader says so.
  new DataView(file.buffer, file.byteOffset).setBigUint64(1, 2n);
  assert.throws(() => decodeRecorded(file), /trailing bytes/);
  new DataView(file.buffer, file.byteOffset).setBigUint64(1, 4n);
  assert.throws(() => decodeRecorded(file), /truncated CBOR/);
});

test('lenient still refuses big integers, other tags, bad keys, depth, trailing and truncated bytes, and too many items', () => {
  const refuses = (b: Uint8Array, re: RegExp, E: typeof FormatError | typeof SizeLimitError = FormatError, maxItems?: number) =>
    assert.throws(() => lenient(b, maxItems), (e: unknown) => e instanceof E && re.test((e as Error).message), re.source);
  refuses(u8(0xc2, 0x41, 0x01), /^test: a big-integer tag \(2\) at byte 0$/);
  refuses(u8(0x81, 0xc3, 0x41, 0x01), /big-integer tag \(3\) at byte 1/);
  refuses(u8(0xc1, 0x1a, 0x65, 0, 0, 0), /a CBOR tag \(1\); only 64 and the little-endian typed-array tags \(68, .*86\) are accepted at byte 0/);
  refuses(u8(0xd8, 0x54, 0x42, 0, 0x3c), /CBOR tag \(84\)/); // float16: see LENIENT_TAGS
  refuses(u8(0xd8, 0x41, 0x42, 0, 1), /CBOR tag \(65\)/); // big-endian uint16
  refuses(u8(0xd8, 0x55, 0x82, 0, 0), /tag 85 followed by an array \(it must wrap a byte string\) at byte 0/);
  refuses(u8(0xd8, 0x40, 0xd8, 0x40, 0x40), /tag 64 followed by a tag/);
  refuses(u8(0xd8, 0x55, 0x43, 1, 2, 3), /tag 85 \(Float32Array\) around 3 bytes, not a multiple of 4 at byte 0/);
  refuses(u8(0xa2, 0x61, 0x61, 0x01, 0x7f, 0x61, 0x61, 0xff, 0x02), /a map key that appears twice at byte 4/); // "a", then "a" in chunks
  refuses(u8(0xa1, 0x01, 0x01), /a map key that is not a text string at byte 1/);
  refuses(u8(0xbf, 0x41, 0x61, 0x01, 0xff), /a map key that is not a text string/);
  refuses(u8(0xbf, 0x61, 0x61, 0xff), /ends after a key, without its value/);
  refuses(u8(0x62, 0xc3, 0x28), /not UTF-8/);
  refuses(u8(0x7f, 0x61, 0xc3, 0x61, 0x28, 0xff), /not UTF-8/); // a code point split across chunks
  refuses(u8(0x5f, 0x61, 0x61, 0xff), /a text string inside an indefinite-length byte string/);
  refuses(u8(0x5f, 0x5f, 0xff, 0xff), /a byte string of indefinite length inside an indefinite-length byte string/);
  refuses(u8(0xff), /a break byte outside an indefinite-length item at byte 0/);
  refuses(u8(0x82, 0x01, 0xff), /break byte outside/);
  refuses(u8(0x1f), /an indefinite length on an unsigned integer/);
  refuses(u8(0xf8, 99), /a CBOR simple value \(99\)/);
  refuses(new Uint8Array(100_000).fill(0x9f), new RegExp(`nesting deeper than ${MAX_CBOR_DEPTH} levels`));
  refuses(Uint8Array.from([...Array(MAX_CBOR_DEPTH + 1).fill(0x81), 0]), /nesting deeper/);
  refuses(u8(...canonical, 0x00), /trailing bytes after the CBOR item \(1 bytes\)/);
  refuses(canonical.subarray(0, canonical.length - 3), /truncated CBOR|bytes left/);
  refuses(u8(0x9f, 0x01), /truncated CBOR at byte 2/);
  refuses(u8(0x5a, 0xff, 0xff, 0xff, 0xff, 0x00), /a byte string of 4294967295 bytes with 1 bytes left/);
  refuses(u8(0x9f, ...Array(20).fill(0), 0xff), /test \(CBOR items\)/, SizeLimitError, 10);
  assert.throws(() => decodeCbor(new Uint8Array(11), 'cap', 10, 100, { lenient: true }), SizeLimitError);

  // A recorded file of 2^24 + 1 items (an indefinite array of zeros) is over the recorded-file item limit.
  const many = new Uint8Array(MAX_RECORDED_ITEMS + 2);
  many[0] = 0x9f;
  const t0 = cpuMs();
  assert.throws(() => decodeRecorded(many), SizeLimitError);
  assert.ok(cpuMs() - t0 < 5000);

  // The fuzz suite's hostile items: typed errors (or a value), each in linear time.
  for (const [name, make] of Object.entries(RAW_ITEMS)) {
    const t1 = cpuMs();
    try {
      lenient(make());
    } catch (e) {
      assert.ok(e instanceof FormatError || e instanceof SizeLimitError, `${name}: ${e}`);
    }
    // CPU time, not wall time: a quadratic walk of these items takes seconds, a loaded machine does not.
    assert.ok(cpuMs() - t1 < 500, name);
  }
});

test('signed files stay strict: no non-shortest integer, no tag 64, no indefinite length, no null', () => {
  assert.throws(() => decodeCbor(u8(0x18, 0x01), 'klm', 1 << 10), /^FormatError$|klm: a number not in its shortest form at byte 0/);
  assert.throws(() => decodeCbor(u8(0xd8, 0x40, 0x41, 0x01), 'klg', 1 << 10), /klg: a CBOR tag \(64\); keylock files use none at byte 0/);
  assert.throws(() => checkCbor(u8(0x9f, 0xff), 'kls'), /an indefinite length \(keylock files use definite lengths only\)/);
  assert.throws(() => checkCbor(u8(0xf6), 'klr'), /null \(keylock files omit absent fields\)/);
});

// Python interop: python/keylock_recorded.py (standard library + numpy).
const PY = join(import.meta.dirname, '..', 'python');
const probe = spawnSync('python3', ['-c', 'import numpy'], { encoding: 'utf8' });
const noPython = probe.status === 0 ? false : `python3 with numpy is not available (${(probe.error?.message ?? probe.stderr).trim().split('\n').pop()})`;
const dir = mkdtempSync(join(tmpdir(), 'keylock-interop-'));
const pyEnv = { ...process.env, PYTHONDONTWRITEBYTECODE: '1' }; // no __pycache__ left in python/
const py = (args: string[]): string => {
  const r = spawnSync('python3', args, { encoding: 'utf8', cwd: PY, env: pyEnv });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
};

// The same samples, as Python builds them and as JavaScript does: every dtype, labels of 1, 2 and 3 bytes, none.
const PY_SAMPLES = `[
  {'inputs': {'f32': (np.arange(6, dtype=np.float32) * 0.5 - 1).reshape(2, 3), 'f64': np.array([0.1, -2.5, 1e300, -0.0]), 'flag': np.array([True, False, True])}, 'label': 0},
  {'inputs': {'i8': np.array([-128, 0, 127], np.int8), 'u8': np.array([0, 128, 255], np.uint8), 'i16': np.array([-32768, 32767], np.int16), 'u16': np.array([0, 65535], np.uint16)}, 'label': 300},
  {'inputs': {'i32': np.array([-2**31, 2**31 - 1], np.int32), 'u32': np.array([0, 2**32 - 1], np.uint32), 'i64': np.array([-2**63, 2**63 - 1], np.int64), 'u64': np.array([0, 2**64 - 1], np.uint64)}},
  {'inputs': {'empty': np.zeros((0, 3), np.float32), 'big_endian': np.array([1.5, 2.5], '>f4')}, 'label': 70000},
]`;
const jsSamples: Sample[] = [
  { inputs: { f32: { dtype: 'float32', dims: [2, 3], data: new Float32Array([-1, -0.5, 0, 0.5, 1, 1.5]) }, f64: { dtype: 'float64', dims: [4], data: new Float64Array([0.1, -2.5, 1e300, -0]) }, flag: { dtype: 'bool', dims: [3], data: new Uint8Array([1, 0, 1]) } }, label: 0 },
  { inputs: { i8: { dtype: 'int8', dims: [3], data: new Int8Array([-128, 0, 127]) }, u8: { dtype: 'uint8', dims: [3], data: new Uint8Array([0, 128, 255]) }, i16: { dtype: 'int16', dims: [2], data: new Int16Array([-32768, 32767]) }, u16: { dtype: 'uint16', dims: [2], data: new Uint16Array([0, 65535]) } }, label: 300 },
  { inputs: { i32: { dtype: 'int32', dims: [2], data: new Int32Array([-(2 ** 31), 2 ** 31 - 1]) }, u32: { dtype: 'uint32', dims: [2], data: new Uint32Array([0, 2 ** 32 - 1]) }, i64: { dtype: 'int64', dims: [2], data: new BigInt64Array([-(2n ** 63n), 2n ** 63n - 1n]) }, u64: { dtype: 'uint64', dims: [2], data: new BigUint64Array([0n, 2n ** 64n - 1n]) } } },
  { inputs: { empty: { dtype: 'float32', dims: [0, 3], data: new Float32Array(0) }, big_endian: { dtype: 'float32', dims: [2], data: new Float32Array([1.5, 2.5]) } }, label: 70000 },
];

test('Python writes every dtype and label; JavaScript reads the same values, and the bytes are keylock\'s own', { skip: noPython }, () => {
  const path = join(dir, 'py.cbor');
  py(['-c', `import sys, numpy as np, keylock_recorded as kr\nkr.write_recorded(sys.argv[1], ${PY_SAMPLES})`, path]);
  const bytes = new Uint8Array(readFileSync(path));
  assert.deepEqual(decodeRecorded(bytes), jsSamples);
  assert.deepEqual(bytes, encodeRecorded(jsSamples), 'byte for byte what encodeRecorded writes');
});

test('JavaScript writes (canonical, cbor-x tagged, recorder form); Python reads the same values and re-writes the canonical bytes', { skip: noPython }, () => {
  const canon = encodeRecorded(jsSamples);
  const head = u8(0x9b, 0, 0, 0, 0, 0, 0, 0, jsSamples.length);
  const files = { canon, tagged: cborxEncode(tree(jsSamples, { typed: true, nullLabel: true })), recorder: Buffer.concat([head, ...jsSamples.map(encodeSample)]) };
  const want = jsSamples.map((s) => ({
    label: s.label ?? null,
    inputs: Object.fromEntries(Object.entries(s.inputs!).map(([k, t]) => [k, { dtype: t.dtype, dims: t.dims, data: Buffer.from(bytesOf(t.data)).toString('hex') }])),
  }));
  for (const [name, b] of Object.entries(files)) {
    const path = join(dir, `${name}.cbor`);
    writeFileSync(path, b);
    assert.deepEqual(JSON.parse(py(['keylock_recorded.py', 'json', path])), want, name);
    py(['keylock_recorded.py', 'rewrite', path, `${path}.out`]);
    assert.deepEqual(new Uint8Array(readFileSync(`${path}.out`)), canon, `${name}: re-written byte for byte`);
  }
  assert.match(py(['keylock_recorded.py', 'show', join(dir, 'canon.cbor')]), /^4 sample\(s\) of inputs\nsample\[0\] label 0 f32 float32 \[2, 3\] min -1 max 1\.5 sum 1\.5\n/);
  const bad = spawnSync('python3', ['keylock_recorded.py', 'show', '/dev/null'], { encoding: 'utf8', cwd: PY, env: pyEnv });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /expected CBOR data, got an empty file/);
});
