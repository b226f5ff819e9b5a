/**
 * Bench section "signatures": Ed25519 and X25519 at keylock's crypto boundary
 * (keystore/nacl.ts) on its native path and its forced tweetnacl fallback,
 * beside plain node:crypto and WebCrypto with their keys already imported, in
 * one process, every implementation's batch timed in each round in a rotating
 * order; figures are medians over rounds, ratios per round against keylock's
 * native path. The goal (issue "Native speed at the crypto boundary"): the
 * manifest signature check at load in at most 0.5 ms. The first use in a fresh
 * process (the one-time detection with its known-answer checks) is timed in
 * child processes.
 *
 *   node --import tsx eval/bench/sections/signatures.ts [--quick]
 */
import { spawnSync } from 'node:child_process';
import * as nodeCrypto from 'node:crypto';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  cryptoInfo, forceCryptoFallback, openFromSender, sealToDevice, sign, signKeyPair, verify, verifyAsync, type CryptoInfo,
} from '../../../keystore/nacl.ts';
import { quantile } from '../stats.ts';

/** A manifest's size: a sealed model's manifest lists its tensors, a few KB for MNIST-sized models. */
const MANIFEST_BYTES = 2048;
/** The goal for the signature check at load, ms. */
const GOAL_MS = 0.5;

interface Impl {
  impl: string;
  /** keylock's own (its native path, or its fallback), or a reference outside keylock. */
  kind: 'keylock' | 'fallback' | 'reference';
  call: () => unknown;
}
interface Op {
  op: string;
  impls: Impl[];
}

export interface SignatureRow {
  op: string;
  impl: string;
  kind: Impl['kind'];
  /** Median ms per call over rounds, and the quartiles. */
  ms: number;
  p25: number;
  p75: number;
  /** Median over rounds of (this / keylock native) in the same round. */
  ratio: number;
  batch: number;
}

export interface SignatureResults {
  node: string;
  quick: boolean;
  rounds: number;
  manifestBytes: number;
  info: CryptoInfo;
  rows: SignatureRow[];
  /** First `verifyAsync` of a fresh process, detection included (ms, median of child runs), native and forced fallback. */
  firstUse: { native: number; fallback: number; runs: number };
  goal: { ms: number; measured: number; met: boolean };
}

const b64u = (b: Uint8Array): string => Buffer.from(b).toString('base64url');

/** Runs one implementation's call, switching keylock's fallback on around it when it is the fallback's. */
async function run(i: Impl): Promise<void> {
  if (i.kind === 'fallback') forceCryptoFallback(true);
  try {
    await i.call();
  } finally {
    if (i.kind === 'fallback') forceCryptoFallback(false);
  }
}

/** ms per call of `batch` calls. */
async function timeBatch(i: Impl, batch: number): Promise<number> {
  if (i.kind === 'fallback') forceCryptoFallback(true);
  try {
    const t = performance.now();
    for (let k = 0; k < batch; k++) await i.call();
    return (performance.now() - t) / batch;
  } finally {
    if (i.kind === 'fallback') forceCryptoFallback(false);
  }
}

async function measureOp(op: Op, rounds: number, batchMs: number): Promise<SignatureRow[]> {
  // Warm up (JIT, key caches), then size each batch to about batchMs.
  const batches: number[] = [];
  for (const i of op.impls) {
    for (let k = 0; k < 5; k++) await run(i);
    const t = await timeBatch(i, 5);
    batches.push(Math.max(1, Math.min(2000, Math.round(batchMs / Math.max(t, 1e-4)))));
  }
  const times: number[][] = op.impls.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < op.impls.length; k++) {
      const j = (k + r) % op.impls.length; // rotate the order each round
      times[j].push(await timeBatch(op.impls[j], batches[j]));
    }
  }
  const base = times[0];
  return op.impls.map((i, j) => ({
    op: op.op, impl: i.impl, kind: i.kind,
    ms: quantile(times[j], 0.5), p25: quantile(times[j], 0.25), p75: quantile(times[j], 0.75),
    ratio: quantile(times[j].map((t, r) => t / base[r]), 0.5), batch: batches[j],
  }));
}

/** The first verifyAsync in a fresh process (keystore/nacl.ts imported, nothing run yet), detection included: ms. */
function firstUse(fallback: boolean): number {
  const nacl = pathToFileURL(fileURLToPath(new URL('../../../keystore/nacl.ts', import.meta.url))).href;
  const cold = `
    const k = await import(${JSON.stringify(nacl)});
    ${fallback ? 'k.forceCryptoFallback(true);' : ''}
    const sig = Uint8Array.from(Buffer.from(${JSON.stringify(COLD.sig)}, 'hex'));
    const pub = Uint8Array.from(Buffer.from(${JSON.stringify(COLD.pub)}, 'hex'));
    const msg = new Uint8Array(${MANIFEST_BYTES}).fill(1);
    const t = performance.now();
    await k.verifyAsync(msg, sig, pub, 'x');
    process.stdout.write(String(performance.now() - t));`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', cold], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`first-use child failed: ${r.stderr}`);
  return Number(r.stdout);
}

/** A signature over MANIFEST_BYTES bytes of 0x01 by the key of seed 7s, for the cold child. */
const COLD = (() => {
  const { publicKey, secretKey } = signKeyPair(new Uint8Array(32).fill(7));
  const sig = sign(new Uint8Array(MANIFEST_BYTES).fill(1), secretKey);
  return { pub: Buffer.from(publicKey).toString('hex'), sig: Buffer.from(sig).toString('hex') };
})();

export async function measure(quick: boolean): Promise<SignatureResults> {
  const rounds = quick ? 9 : 31;
  const batchMs = quick ? 10 : 25;
  const seed = nodeCrypto.randomBytes(32);
  const { publicKey, secretKey } = signKeyPair(seed);
  const manifest = new Uint8Array(nodeCrypto.randomBytes(MANIFEST_BYTES));
  const sig = sign(manifest, secretKey);

  // Plain node:crypto and WebCrypto, keys imported once, outside the timing.
  const nodePub = nodeCrypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64u(publicKey) }, format: 'jwk' });
  const nodePriv = nodeCrypto.createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d: b64u(seed), x: b64u(publicKey) }, format: 'jwk' });
  const subtle = globalThis.crypto.subtle;
  const rawPub = publicKey.slice() as Uint8Array<ArrayBuffer>;
  const webPub = await subtle.importKey('raw', rawPub, { name: 'Ed25519' }, false, ['verify']);
  const device = nodeCrypto.generateKeyPairSync('x25519');
  const devicePub = Buffer.from(device.publicKey.export({ format: 'jwk' }).x!, 'base64url');
  const deviceSecret = new Uint8Array(Buffer.from(device.privateKey.export({ format: 'jwk' }).d!, 'base64url'));
  const modelKey = new Uint8Array(32).fill(0x11);
  const sealed = sealToDevice(modelKey, devicePub);
  const fail = (): Error => new Error('box does not open');

  const ops: Op[] = [
    {
      op: `Ed25519 verify, ${MANIFEST_BYTES} B manifest`,
      impls: [
        { impl: 'keylock verifyAsync (the load path)', kind: 'keylock', call: () => verifyAsync(manifest, sig, publicKey, 'bench') },
        { impl: 'keylock verify (sync)', kind: 'keylock', call: () => verify(manifest, sig, publicKey, 'bench') },
        { impl: 'keylock, forced fallback (tweetnacl)', kind: 'fallback', call: () => verifyAsync(manifest, sig, publicKey, 'bench') },
        { impl: 'node:crypto, key imported once', kind: 'reference', call: () => nodeCrypto.verify(null, manifest, nodePub, sig) },
        { impl: 'WebCrypto, key imported once', kind: 'reference', call: () => subtle.verify({ name: 'Ed25519' }, webPub, sig as Uint8Array<ArrayBuffer>, manifest as Uint8Array<ArrayBuffer>) },
        {
          impl: 'WebCrypto, importKey + verify', kind: 'reference',
          call: async () => subtle.verify({ name: 'Ed25519' }, await subtle.importKey('raw', rawPub, { name: 'Ed25519' }, false, ['verify']), sig as Uint8Array<ArrayBuffer>, manifest as Uint8Array<ArrayBuffer>),
        },
      ],
    },
    {
      op: `Ed25519 sign, ${MANIFEST_BYTES} B`,
      impls: [
        { impl: 'keylock sign', kind: 'keylock', call: () => sign(manifest, secretKey) },
        { impl: 'keylock, forced fallback (tweetnacl)', kind: 'fallback', call: () => sign(manifest, secretKey) },
        { impl: 'node:crypto, key imported once', kind: 'reference', call: () => nodeCrypto.sign(null, manifest, nodePriv) },
      ],
    },
    {
      op: 'X25519 box: sealToDevice (32 B model key)',
      impls: [
        { impl: 'keylock sealToDevice', kind: 'keylock', call: () => sealToDevice(modelKey, devicePub) },
        { impl: 'keylock, forced fallback (tweetnacl)', kind: 'fallback', call: () => sealToDevice(modelKey, devicePub) },
        {
          impl: 'node:crypto X25519 alone (key pair + DH, no box)', kind: 'reference',
          call: () => nodeCrypto.diffieHellman({ privateKey: nodeCrypto.generateKeyPairSync('x25519').privateKey, publicKey: device.publicKey }),
        },
      ],
    },
    {
      op: 'X25519 box: openFromSender (grant install)',
      impls: [
        { impl: 'keylock openFromSender', kind: 'keylock', call: () => openFromSender(sealed, deviceSecret, fail) },
        { impl: 'keylock, forced fallback (tweetnacl)', kind: 'fallback', call: () => openFromSender(sealed, deviceSecret, fail) },
      ],
    },
  ];
  const rows: SignatureRow[] = [];
  for (const op of ops) rows.push(...(await measureOp(op, rounds, batchMs)));

  const runs = quick ? 3 : 7;
  const native = quantile(Array.from({ length: runs }, () => firstUse(false)), 0.5);
  const fallback = quantile(Array.from({ length: runs }, () => firstUse(true)), 0.5);
  const measured = rows[0].ms;
  return {
    node: process.version, quick, rounds, manifestBytes: MANIFEST_BYTES, info: cryptoInfo(), rows,
    firstUse: { native, fallback, runs }, goal: { ms: GOAL_MS, measured, met: measured <= GOAL_MS },
  };
}

const fmt = (ms: number): string => (ms >= 1 ? ms.toFixed(2) : ms >= 0.01 ? ms.toFixed(3) : ms.toFixed(4));

/** The section's markdown: one table, the goal and the first use. */
export function render(r: SignatureResults): string[] {
  const L = [
    `Ed25519 and X25519 at the crypto boundary (keystore/nacl.ts): keylock's native path (here: ed25519 ${r.info.ed25519}, x25519 ${r.info.x25519}), its forced tweetnacl fallback (\`forceCryptoFallback(true)\`), and plain node:crypto / WebCrypto with keys imported once. Node ${r.node}; ${r.rounds} interleaved rounds, median ms per call (p25–p75); × is the per-round median ratio to the first row of each operation.`,
    '',
    '| operation | implementation | ms per call | p25–p75 | × |',
    '| --- | --- | ---: | ---: | ---: |',
  ];
  for (const x of r.rows) {
    L.push(`| ${x.op} | ${x.impl} | ${fmt(x.ms)} | ${fmt(x.p25)}–${fmt(x.p75)} | ${x.ratio.toFixed(2)} |`);
  }
  L.push('');
  L.push(`Goal: the manifest signature check at load (\`verifyAsync\`, ${r.manifestBytes} B) in at most ${r.goal.ms} ms: ${r.goal.met ? 'met' : 'NOT met'}, ${fmt(r.goal.measured)} ms (warm).`
    + ` First verifyAsync in a fresh process, detection and its known-answer checks included (median of ${r.firstUse.runs} child processes): native ${fmt(r.firstUse.native)} ms, forced fallback ${fmt(r.firstUse.fallback)} ms.`);
  return L;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const r = await measure(process.argv.includes('--quick'));
  console.log(render(r).join('\n'));
}
