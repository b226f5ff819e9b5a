/**
 * Fleet scale on the vendor side: grants for a device list, and a 100,000-id
 * revocation list on the device.
 *
 *   node --import tsx eval/bench/sections/fleet.ts [--devices N] [--quick] [--archive-only]
 *
 * `--archive-only` skips the one-file-per-device runs (a million files on the
 * disk) and the per-grant loops: the command of the 1M-device figure.
 *
 * Grants go through the CLI's own code path (targets/cli/fleet.ts `grantFleet`,
 * what `keylock grant --devices` runs): a generated JSONL of N device keys,
 * streamed, one `.klg` per device written atomically into a temp folder, and
 * (alternating with it, round by round) into one tar archive. The
 * device keys are random 32-byte X25519 public keys in `device.pub` files (any
 * 32 bytes is a valid X25519 key; generating real key pairs would cost as much
 * as the grants). Revocation: makeRevocation, the encoded size, installing it
 * into a keystore (in memory with side files, so the disk is not measured; and
 * once more on a keystore file, where it is) and the per-load
 * check (`modelKeyFor`, which runs `checkRevoked`). Medians of a few rounds.
 */
import { createWriteStream, mkdtempSync, rmSync, readdirSync, statSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { grantFleet } from '../../../targets/cli/fleet.ts';
import { grantIssuer, makeGrant } from '../../../keystore/grant.ts';
import { makeRevocation, openRevocation } from '../../../keystore/revocation.ts';
import { Keystore } from '../../../keystore/keystore.ts';
import { memoryStorage } from '../../../keystore/storage.ts';
import { encodeDevicePub } from '../../../keystore/keyfiles.ts';
import { randomBytes, signKeyPair } from '../../../keystore/nacl.ts';
import { hex } from '../../../keystore/hex.ts';

/** Goals of the issue ("Native speed at the crypto boundary", item 3). */
export const FLEET_GOALS = { grantsPerSecond: 5000, revocationInstallAndCheckMs: 50 } as const;

export interface FleetResults {
  devices: number;
  rounds: number;
  grants: {
    /** End to end: read the list, sign, box, write and sync every file. */
    perSecond: number;
    seconds: number;
    /** End to end into one tar archive (`--out FLEET.tar`): one file, one fsync. */
    archivePerSecond: number;
    archiveSeconds: number;
    archiveBytes: number;
    /** Per round, archive rate over folder rate (the two alternate within each round). */
    archiveOverFolder: number;
    archiveRssGrowthMB: number;
    /** The signing and boxing part of that run alone. */
    signPerSecond: number;
    /** One issuer (key pair derived once), in a loop without files. */
    issuerPerSecond: number;
    /** `makeGrant` per grant (derives the vendor key pair every time). */
    makeGrantPerSecond: number;
    /** RSS growth over the run (peak minus start), and at 10 % of the list vs at the end. */
    rssGrowthMB: number;
    rssAt10pctMB: number;
    rssAtEndMB: number;
    files: number;
  };
  revocation: {
    ids: number;
    makeMs: number;
    bytes: number;
    /** openRevocation alone: signature check over the whole list + CBOR decode. */
    openMs: number;
    /** Keystore.installRevocation (open + apply + re-seal the keystore). */
    installMs: number;
    /** The first key lookup after the install (builds the lookup index), and each one after. */
    firstCheckMs: number;
    checkUs: number;
    installPlusCheckMs: number;
    /** install + first check on a keystore file (the side file written and synced, then the body). */
    diskInstallPlusCheckMs: number;
    revokedCaught: boolean;
  };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const mb = (b: number): number => Math.round((b / (1 << 20)) * 10) / 10;

/** Writes a JSONL of `n` device public keys (streamed, with back-pressure). */
async function writeFleet(path: string, n: number): Promise<void> {
  const out = createWriteStream(path);
  for (let i = 0; i < n; i++) {
    const line = JSON.stringify({ device: Buffer.from(encodeDevicePub(`dev-${i}`, randomBytes(32))).toString('base64') }) + '\n';
    if (!out.write(line)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
}

async function measureGrants(devices: number, rounds: number, archiveOnly = false): Promise<FleetResults['grants']> {
  const dir = mkdtempSync(join(tmpdir(), 'keylock-fleet-bench-'));
  try {
    const list = join(dir, 'fleet.jsonl');
    await writeFleet(list, devices);
    const vendorSeed = randomBytes(32);
    const modelKey = randomBytes(32);
    const runs: { seconds: number; sign: number; growth: number; at10: number; atEnd: number; files: number }[] = [];
    const tars: { seconds: number; bytes: number; growth: number }[] = [];
    const ratios: number[] = [];
    const archiveRun = async (r: number): Promise<void> => {
      const archive = join(dir, `fleet-${r}.tar`);
      globalThis.gc?.();
      const rss0 = process.memoryUsage().rss;
      let peak = rss0;
      let seen = 0;
      const res = await grantFleet({
        list, archive, modelId: 'bench-model', modelKey, vendorSeed, notBefore: 1, notAfter: 4_000_000_000,
        onProgress: () => {
          if (++seen % 100 === 0) {
            const rss = process.memoryUsage().rss;
            if (rss > peak) peak = rss;
          }
        },
      });
      if (res.granted !== devices) throw new Error(`archive: granted ${res.granted} of ${devices}`);
      tars.push({ seconds: res.seconds, bytes: statSync(archive).size, growth: peak - rss0 });
      rmSync(archive, { force: true });
    };
    if (archiveOnly) {
      for (let r = 0; r < rounds; r++) await archiveRun(r);
      const t = median(tars.map((x) => x.seconds));
      return {
        perSecond: 0, seconds: 0, archivePerSecond: Math.round(devices / t), archiveSeconds: Math.round(t * 100) / 100, archiveBytes: tars[0].bytes,
        archiveOverFolder: 0, archiveRssGrowthMB: mb(median(tars.map((x) => x.growth))), signPerSecond: 0, issuerPerSecond: 0, makeGrantPerSecond: 0,
        rssGrowthMB: 0, rssAt10pctMB: 0, rssAtEndMB: 0, files: 0,
      };
    }
    for (let r = 0; r < rounds; r++) {
      // Archive and folder alternate, the order flipping every round.
      if (r % 2 === 0) await archiveRun(r);
      const outDir = join(dir, `out-${r}`);
      globalThis.gc?.();
      const rss0 = process.memoryUsage().rss;
      let peak = rss0;
      let at10 = 0;
      let seen = 0;
      const res = await grantFleet({
        list, outDir, modelId: 'bench-model', modelKey, vendorSeed, notBefore: 1, notAfter: 4_000_000_000,
        onProgress: (g, k) => {
          if (++seen % 100 === 0 || g + k === devices) {
            const rss = process.memoryUsage().rss;
            if (rss > peak) peak = rss;
            if (!at10 && g + k >= devices / 10) at10 = rss;
          }
        },
      });
      if (res.granted !== devices) throw new Error(`granted ${res.granted} of ${devices}`);
      const files = readdirSync(outDir).length;
      runs.push({ seconds: res.seconds, sign: res.signSeconds, growth: peak - rss0, at10, atEnd: process.memoryUsage().rss, files });
      rmSync(outDir, { recursive: true, force: true });
      if (r % 2 === 1) await archiveRun(r);
      ratios.push(res.seconds / tars[r].seconds);
    }
    // The CPU part alone, in a loop: one issuer, and makeGrant (which derives the vendor key pair per grant).
    const n = Math.min(devices, 1000);
    const keys = Array.from({ length: n }, () => randomBytes(32));
    const req = (i: number) => ({ modelId: 'bench-model', modelKey, devicePub: keys[i], deviceId: `dev-${i}`, notBefore: 1, notAfter: 4_000_000_000 });
    const issuer = grantIssuer(vendorSeed);
    let t0 = performance.now();
    for (let i = 0; i < n; i++) issuer.issue(req(i));
    const issuerS = (performance.now() - t0) / 1000;
    issuer.close();
    const m = Math.min(n, 300);
    t0 = performance.now();
    for (let i = 0; i < m; i++) makeGrant({ ...req(i), vendorSeed });
    const makeS = (performance.now() - t0) / 1000;
    const seconds = median(runs.map((x) => x.seconds));
    return {
      perSecond: Math.round(devices / seconds), seconds: Math.round(seconds * 100) / 100,
      archivePerSecond: Math.round(devices / median(tars.map((x) => x.seconds))), archiveSeconds: Math.round(median(tars.map((x) => x.seconds)) * 100) / 100,
      archiveBytes: tars[0].bytes, archiveOverFolder: Math.round(median(ratios) * 100) / 100, archiveRssGrowthMB: mb(median(tars.map((x) => x.growth))),
      signPerSecond: Math.round(devices / median(runs.map((x) => x.sign))),
      issuerPerSecond: Math.round(n / issuerS), makeGrantPerSecond: Math.round(m / makeS),
      rssGrowthMB: mb(median(runs.map((x) => x.growth))), rssAt10pctMB: mb(median(runs.map((x) => x.at10))), rssAtEndMB: mb(median(runs.map((x) => x.atEnd))),
      files: runs[0].files,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function measureRevocation(ids: number, rounds: number): Promise<FleetResults['revocation']> {
  const vendorSeed = randomBytes(32);
  const vendorPub = signKeyPair(vendorSeed).publicKey;
  const modelKey = randomBytes(32);
  const rows: Omit<FleetResults['revocation'], 'ids' | 'revokedCaught'>[] = [];
  let revokedCaught = true;
  for (let r = 0; r < rounds; r++) {
    const storageKey = randomBytes(32);
    // In memory with side files: the list goes beside the keystore as on a device's file store, without the disk.
    const ks = await Keystore.create(memoryStorage(undefined, { sideFiles: true }), { vendorKeys: [vendorPub], unlock: { kind: 'hook', getKey: async () => storageKey.slice() } });
    try {
      const g = makeGrant({ modelId: 'm', modelKey, devicePub: ks.devicePub, deviceId: ks.deviceId, notBefore: 1, notAfter: 4_000_000_000, vendorSeed });
      const { grantId } = await ks.installGrant(g);
      const grants = Array.from({ length: ids }, () => hex(randomBytes(16)));
      let t0 = performance.now();
      const klr = makeRevocation({ listVersion: 1, grants, vendorSeed });
      const makeMs = performance.now() - t0;
      t0 = performance.now();
      openRevocation(klr, [vendorPub]);
      const openMs = performance.now() - t0;
      t0 = performance.now();
      await ks.installRevocation(klr);
      const installMs = performance.now() - t0;
      t0 = performance.now();
      ks.modelKeyFor('m').fill(0);
      const firstCheckMs = performance.now() - t0;
      const k = 10_000;
      t0 = performance.now();
      for (let i = 0; i < k; i++) ks.modelKeyFor('m').fill(0);
      const checkUs = ((performance.now() - t0) / k) * 1000;
      // The same on a keystore file (file store: the list written beside it, synced, then the small body).
      const dir = mkdtempSync(join(tmpdir(), 'keylock-revoke-bench-'));
      let diskMs = 0;
      try {
        const disk = await Keystore.create(join(dir, 'dev.kls'), { vendorKeys: [vendorPub], unlock: { kind: 'hook', getKey: async () => storageKey.slice() } });
        await disk.installGrant(makeGrant({ modelId: 'm', modelKey, devicePub: disk.devicePub, deviceId: disk.deviceId, notBefore: 1, notAfter: 4_000_000_000, vendorSeed }));
        t0 = performance.now();
        await disk.installRevocation(klr);
        disk.modelKeyFor('m').fill(0);
        diskMs = performance.now() - t0;
        disk.close();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
      rows.push({ makeMs, bytes: klr.byteLength, openMs, installMs, firstCheckMs, checkUs, installPlusCheckMs: installMs + firstCheckMs, diskInstallPlusCheckMs: diskMs });
      // The same list plus this device's grant: the next lookup must be refused.
      const klr2 = makeRevocation({ listVersion: 2, grants: [...grants, grantId], vendorSeed });
      await ks.installRevocation(klr2);
      try {
        ks.modelKeyFor('m');
        revokedCaught = false;
      } catch (e) {
        if ((e as { code?: string }).code !== 'revoked') revokedCaught = false;
      }
    } finally {
      ks.close();
    }
  }
  const med = (k: keyof (typeof rows)[number]): number => median(rows.map((x) => x[k]));
  const r2 = (x: number): number => Math.round(x * 100) / 100;
  return {
    ids, makeMs: r2(med('makeMs')), bytes: med('bytes'), openMs: r2(med('openMs')), installMs: r2(med('installMs')),
    firstCheckMs: r2(med('firstCheckMs')), checkUs: r2(med('checkUs')), installPlusCheckMs: r2(med('installPlusCheckMs')), diskInstallPlusCheckMs: r2(med('diskInstallPlusCheckMs')), revokedCaught,
  };
}

/** Measures the fleet section; `quick`: 1,000 devices and one round. */
export async function measure(quick: boolean, devices = quick ? 1000 : 10_000, archiveOnly = false): Promise<FleetResults> {
  const rounds = quick ? 1 : 3;
  return { devices, rounds, grants: await measureGrants(devices, rounds, archiveOnly), revocation: await measureRevocation(100_000, rounds) };
}

/** The section as a markdown table. */
export function render(r: FleetResults): string[] {
  const g = r.grants;
  const v = r.revocation;
  const n = r.devices.toLocaleString('en-US');
  const ok = (b: boolean): string => (b ? 'met' : 'not met');
  return [
    `### Fleet: grants for ${n} devices, a ${v.ids.toLocaleString('en-US')}-id revocation list (medians of ${r.rounds} round(s), one core)`,
    '',
    '| what | figure | goal |',
    '| --- | ---: | --- |',
    `| grants/s end to end, one file per device (\`grant --devices … --out-dir DIR\`: write + fsync ${n} files) | ${g.perSecond.toLocaleString('en-US')} (${g.seconds} s) | ≥ ${FLEET_GOALS.grantsPerSecond.toLocaleString('en-US')}: ${ok(g.perSecond >= FLEET_GOALS.grantsPerSecond)} |`,
    ...(g.archivePerSecond === undefined ? [] : [`| grants/s end to end into one archive (\`grant --devices … --out FLEET.tar\`: read JSONL, sign, box, append to one tar, one fsync) | ${g.archivePerSecond.toLocaleString('en-US')} (${g.archiveSeconds} s, ${(g.archiveBytes / (1 << 20)).toFixed(1)} MiB) | ≥ ${FLEET_GOALS.grantsPerSecond.toLocaleString('en-US')}: ${ok(g.archivePerSecond >= FLEET_GOALS.grantsPerSecond)} |`,
    `| archive / folder, grants/s (per-round ratio, the two interleaved) | ${g.archiveOverFolder.toFixed(2)}× | |`]),
    `| grants/s, signing + boxing part of that run | ${g.signPerSecond.toLocaleString('en-US')} | |`,
    `| grants/s, one issuer in a loop (vendor key pair derived once) | ${g.issuerPerSecond.toLocaleString('en-US')} | |`,
    `| grants/s, \`makeGrant\` per grant (derives the key pair each time) | ${g.makeGrantPerSecond.toLocaleString('en-US')} | |`,
    g.files ? `| RSS growth over the run (peak − start); RSS at 10 % / at the end | folder ${g.rssGrowthMB} MB (${g.rssAt10pctMB} / ${g.rssAtEndMB} MB); archive ${g.archiveRssGrowthMB} MB | flat |`
      : `| RSS growth over the run (peak − start), archive | ${g.archiveRssGrowthMB} MB | flat |`,
    `| revocation: makeRevocation, ${v.ids.toLocaleString('en-US')} grant ids | ${v.makeMs} ms, ${(v.bytes / (1 << 20)).toFixed(2)} MiB | |`,
    `| revocation: openRevocation (signature over the list + decode) | ${v.openMs} ms | |`,
    `| revocation: Keystore.installRevocation (open + the list written beside the keystore + the small body re-sealed; in memory) | ${v.installMs} ms | |`,
    `| revocation: first key lookup after install / each lookup after | ${v.firstCheckMs} ms / ${v.checkUs} µs | |`,
    `| revocation: install + first check | ${v.installPlusCheckMs} ms | ≤ ${FLEET_GOALS.revocationInstallAndCheckMs} ms: ${ok(v.installPlusCheckMs <= FLEET_GOALS.revocationInstallAndCheckMs)} |`,
    `| revocation: install + first check on a keystore file (list file + body written and fsynced) | ${v.diskInstallPlusCheckMs} ms | |`,
    `| revocation: a grant added to the list is refused at the next lookup | ${v.revokedCaught ? 'yes' : 'NO'} | yes |`,
  ];
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = process.argv.slice(2);
  const quick = args.includes('--quick');
  const i = args.indexOf('--devices');
  const devices = i >= 0 ? Number(args[i + 1]) : undefined;
  if (devices !== undefined && !(Number.isSafeInteger(devices) && devices > 0)) {
    process.stderr.write('usage: node --import tsx eval/bench/sections/fleet.ts [--devices N] [--quick]\n');
    process.exit(2);
  }
  const archiveOnly = args.includes('--archive-only');
  const r = await measure(quick, devices, archiveOnly);
  const lines = render(r);
  // Only the rows measured: the archive row, memory, and the revocation rows.
  process.stdout.write((archiveOnly ? lines.filter((l) => !/one file per device|archive \/ folder|signing \+ boxing|issuer in a loop|makeGrant/.test(l)) : lines).join('\n') + '\n');
}
