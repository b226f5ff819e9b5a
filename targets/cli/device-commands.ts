/**
 * Device and licensing commands: `device init`, `grant`, `install`, `revoke`,
 * `reinstate`, `device show`. Vendor-side ones sign with the vendor key; device
 * ones change the keystore atomically, or not at all.
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { decodeCbor, Fields } from '../../keystore/cbor.ts';
import { Keystore } from '../../keystore/keystore.ts';
import { decodeDevicePub, decodeModelKey, decodeVendorPub, decodeVendorSecret, encodeDevicePub } from '../../keystore/keyfiles.ts';
import { makeGrant, MAX_GRACE_SECONDS } from '../../keystore/grant.ts';
import { makeRevocation, MAX_REVOKED_IDS } from '../../keystore/revocation.ts';
import { makeReinstate } from '../../keystore/reinstate.ts';
import { openKlm } from '../../runtime/klm.ts';
import { isKlp, openKlp } from '../../runtime/pipeline-file.ts';
import { keyId } from '../../keystore/hex.ts';
import { UsageError, CliError, type Command } from './command.ts';
import { checkIdFlag, intFlag, readInput, req, unlockFlag, writeOutput } from './io.ts';
import { equalBytes } from '../../keystore/nacl.ts';
import { createCountBar } from '../../models/train/progress.ts';
import { countLines, findGrantInTar, fleetFormat, grantFleet } from './fleet.ts';

/** Parses an ISO 8601 time (or Unix seconds) into Unix seconds. */
export function parseTime(flag: string, v: string): number {
  const hint = `--${flag} takes a UTC time such as 2027-01-31T00:00:00Z, or Unix seconds`;
  if (/^\d+$/.test(v)) {
    const n = Number(v);
    if (!Number.isSafeInteger(n)) throw new UsageError(`--${flag}: expected Unix seconds up to ${Number.MAX_SAFE_INTEGER}, got "${v}"`, hint);
    return n;
  }
  const t = Date.parse(v);
  // Grants hold unsigned seconds: a time before 1970 cannot be written.
  if (Number.isFinite(t) && t < 0) throw new UsageError(`--${flag}: expected a time from 1970 on, got "${v}"`, hint);
  if (!Number.isFinite(t)) throw new UsageError(`--${flag}: expected an ISO 8601 time like 2027-01-31T00:00:00Z, got "${v}"`, hint);
  return Math.floor(t / 1000);
}

/**
 * The ids after --grant / --model / --device. Each flag takes one or more
 * words (`--grant a b --model m`), as well as the repeated form (`--grant a --grant b`).
 */
function revokedIds(raw: readonly string[], valueFlags: ReadonlySet<string>): { grants: string[]; models: string[]; devices: string[] } {
  const r = { grants: [] as string[], models: [] as string[], devices: [] as string[] };
  const lists: Record<string, keyof typeof r> = { grant: 'grants', model: 'models', device: 'devices' };
  let cur: keyof typeof r | undefined;
  for (let i = 0; i < raw.length; i++) {
    const a = raw[i];
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = a.slice(2, eq < 0 ? undefined : eq);
      cur = lists[name];
      if (cur && eq >= 0) r[cur].push(a.slice(eq + 1));
      else if (!cur && eq < 0 && valueFlags.has(name)) i++;
      continue;
    }
    if (!cur) throw new UsageError(`unexpected argument "${a}"`, 'ids follow --grant, --model or --device');
    r[cur].push(a);
  }
  return r;
}

function list(v: unknown): string[] {
  return Array.isArray(v) ? v.map(String) : typeof v === 'string' ? [v] : [];
}

export const deviceInit: Command = {
  summary: 'create a device keystore pinned to a vendor key (and write the device public key)',
  usage: 'device init --keystore F.kls --unlock SPEC --trust VENDOR.pub [--trust VENDOR2.pub] [--backup BACKUP.pub] --pub-out DEVICE.pub [--device-id ID]',
  options: {
    keystore: { type: 'string' }, unlock: { type: 'string' }, trust: { type: 'string', multiple: true }, backup: { type: 'string', multiple: true },
    'pub-out': { type: 'string' }, 'device-id': { type: 'string' },
  },
  positionals: [0, 0],
  async run({ values }) {
    const path = req(values, 'keystore', this.usage);
    const pubOut = req(values, 'pub-out', this.usage);
    const trust = list(values.trust);
    if (!trust.length) throw new UsageError('--trust VENDOR.pub is required', `usage: keylock ${this.usage}`);
    const unlock = unlockFlag(values, this.usage);
    const deviceId = typeof values['device-id'] === 'string' ? checkIdFlag('device-id', values['device-id']) : undefined;
    const vendorKeys = trust.map((t) => decodeVendorPub(readInput(t, 'vendor public key')));
    // Backup keys sign key rotations only (keylock rotate), never models or grants.
    const backupKeys = list(values.backup).map((t) => decodeVendorPub(readInput(t, 'backup public key')));
    const both = backupKeys.find((b) => vendorKeys.some((v) => equalBytes(v, b)));
    if (both) throw new UsageError(`key ${keyId(both)} is given both to --trust and to --backup`, 'a backup key signs rotations only; give it as --backup, and the vendor key as --trust');
    const ks = await Keystore.create(path, {
      unlock, vendorKeys, backupKeys,
      deviceId,
    });
    try {
      writeOutput(pubOut, encodeDevicePub(ks.deviceId, ks.devicePub));
      process.stdout.write(`device ${ks.deviceId}: keystore ${path} (generation ${ks.generation}), trusting vendor key(s) ${vendorKeys.map(keyId).join(', ')}${backupKeys.length ? `, backup key(s) ${backupKeys.map(keyId).join(', ')} for rotations only` : ''}; wrote ${pubOut}\n`);
    } finally {
      ks.close();
    }
  },
};

export const deviceShow: Command = {
  summary: 'show a device keystore: identity, pinned keys, grants, failures (never a key)',
  usage: 'device show --keystore F.kls --unlock SPEC',
  options: { keystore: { type: 'string' }, unlock: { type: 'string' } },
  positionals: [0, 0],
  async run({ values }) {
    const path = req(values, 'keystore', this.usage);
    const ks = await Keystore.open(path, { unlock: unlockFlag(values, this.usage) });
    try {
      const iso = (t: number): string => new Date(t * 1000).toISOString();
      const lines = [
        `device      ${ks.deviceId} (generation ${ks.generation})`,
        `vendors     ${ks.vendorKeys.map(keyId).join(', ')}`,
        `backups     ${ks.backupKeys.map(keyId).join(', ') || 'none'}`,
        ...(ks.retiredKeys.length ? [`retired     ${ks.retiredKeys.map(keyId).join(', ')}`] : []),
        `revocation  list version ${ks.revocationVersion}`,
        ...ks.grants().map((g) => `grant       ${g.grantId} model ${g.modelId}, valid ${iso(g.notBefore)} .. ${iso(g.notAfter)}${g.grace ? ` (+${g.grace} s grace)` : ''}, failures ${ks.failureCount(g.modelId)}${ks.isDisabled(g.modelId) ? ', DISABLED' : ''}`),
      ];
      process.stdout.write(lines.join('\n') + '\n');
    } finally {
      ks.close();
    }
  },
};

export const grant: Command = {
  summary: 'issue a grant: the model key sealed to one device (or to each device of a list), with a licence window, vendor-signed',
  usage: 'grant M.klm --model-key M.key --vendor VENDOR.key (--device DEVICE.pub --out G.klg | --devices FLEET.csv|FLEET.jsonl (--out-dir DIR | --out FLEET.tar) [--strict]) [--not-before ISO] [--not-after ISO] [--days N] [--grace SECONDS]',
  options: {
    'model-key': { type: 'string' }, vendor: { type: 'string' }, device: { type: 'string' }, out: { type: 'string' },
    devices: { type: 'string' }, 'out-dir': { type: 'string' }, strict: { type: 'boolean' },
    'not-before': { type: 'string' }, 'not-after': { type: 'string' }, days: { type: 'string' },
    grace: { type: 'string' },
  },
  positionals: [1, 1],
  async run({ values, positionals }) {
    // Flags first, files after: a usage mistake is reported as one even when a path is wrong too.
    const modelKeyPath = req(values, 'model-key', this.usage);
    const vendorPath = req(values, 'vendor', this.usage);
    const fleet = values.devices !== undefined;
    if (fleet && values.device !== undefined) throw new UsageError('give --device (one device) or --devices (a list), not both', `usage: keylock ${this.usage}`);
    if (!fleet) {
      if (values.device === undefined) throw new UsageError('--device DEVICE.pub (one device) or --devices FLEET.csv|FLEET.jsonl (a list) is required', `usage: keylock ${this.usage}`);
      if (values['out-dir'] !== undefined || values.strict !== undefined) throw new UsageError(`--${values['out-dir'] !== undefined ? 'out-dir' : 'strict'} goes with --devices`, 'one device: --device D.pub --out D.klg; a list: --devices FLEET.csv --out-dir DIR');
    } else if (values.out !== undefined && values['out-dir'] !== undefined) {
      throw new UsageError('give --out-dir DIR (one file per device) or --out FLEET.tar (one archive), not both', 'a list of devices takes --out-dir DIR or --out FLEET.tar');
    } else if (values.out !== undefined && !String(values.out).toLowerCase().endsWith('.tar')) {
      throw new UsageError(`--out with --devices writes one tar archive: expected a name ending in .tar, got "${values.out}"`, 'a list of devices takes --out-dir DIR (one .klg per device) or --out FLEET.tar (one archive)');
    }
    const devicePath = fleet ? undefined : req(values, 'device', this.usage);
    const out = fleet ? undefined : req(values, 'out', this.usage);
    const listPath = fleet ? req(values, 'devices', this.usage) : undefined;
    const archive = fleet && values.out !== undefined ? req(values, 'out', this.usage) : undefined;
    const outDir = fleet && archive === undefined ? req(values, 'out-dir', this.usage) : undefined;
    if (listPath !== undefined && !fleetFormat(listPath)) throw new UsageError(`--devices: expected a .csv or .jsonl list, got "${listPath}"`, 'a CSV with a header (device or pub, optional id, name), or JSON lines with the same fields');
    const now = Math.floor(Date.now() / 1000);
    const notBefore = typeof values['not-before'] === 'string' ? parseTime('not-before', values['not-before']) : now - 300;
    if (values.days !== undefined && values['not-after'] !== undefined) throw new UsageError('give --days or --not-after, not both', 'the licence ends --days after --not-before, or at --not-after');
    const days = intFlag(values, 'days', 1, this.usage) ?? 365;
    const notAfter = typeof values['not-after'] === 'string' ? parseTime('not-after', values['not-after']) : notBefore + days * 86400;
    if (notAfter <= notBefore) throw new UsageError(`--not-after must be later than --not-before (${new Date(notBefore * 1000).toISOString()})`, 'the licence window needs --not-after > --not-before');
    const grace = intFlag(values, 'grace', 1, this.usage) ?? 0;
    if (grace > MAX_GRACE_SECONDS) throw new UsageError(`--grace: expected at most ${MAX_GRACE_SECONDS} seconds (30 days), got ${grace}`, 'a running model may keep running for --grace seconds after --not-after; new loads are refused from --not-after on');
    const window = `valid ${new Date(notBefore * 1000).toISOString()} .. ${new Date(notAfter * 1000).toISOString()}${grace ? ` (+${grace} s grace while running)` : ''}`;
    const file = readInput(positionals[0], 'model file');
    // A pipeline (.klp) is granted as one model, under its pipeline id.
    const manifest = isKlp(file) ? { modelId: (await openKlp(file)).manifest.pipelineId } : openKlm(file).manifest;
    const mk = decodeModelKey(readInput(modelKeyPath, 'model key file'));
    if (mk.modelId !== manifest.modelId) throw new CliError(`the model key is for model "${mk.modelId}", expected one for "${manifest.modelId}"`);
    if (listPath !== undefined) {
      const vendorSeed = decodeVendorSecret(readInput(vendorPath, 'vendor key'));
      try {
        await grantMany(manifest.modelId, mk.key, vendorSeed, listPath, { outDir, archive }, notBefore, notAfter, values.strict === true, window, grace);
      } finally {
        vendorSeed.fill(0);
        mk.key.fill(0);
      }
      return;
    }
    const dev = decodeDevicePub(readInput(devicePath!, 'device public key'));
    const vendorSeed = decodeVendorSecret(readInput(vendorPath, 'vendor key'));
    const bytes = makeGrant({ modelId: manifest.modelId, modelKey: mk.key, devicePub: dev.key, deviceId: dev.deviceId, notBefore, notAfter, vendorSeed, grace });
    vendorSeed.fill(0);
    mk.key.fill(0);
    writeOutput(out!, bytes);
    process.stdout.write(`granted model ${manifest.modelId} to device ${dev.deviceId}, ${window}; wrote ${out}\n`);
  },
};

/**
 * `grant --devices`: one grant per line of the list (targets/cli/fleet.ts), a
 * progress bar on a terminal, each refused line on stderr as it happens, and a
 * summary line. Refused lines do not stop the run (unless --strict), but make
 * the exit code 1, so a script notices.
 */
async function grantMany(modelId: string, modelKey: Uint8Array, vendorSeed: Uint8Array, list: string, to: { outDir?: string; archive?: string }, notBefore: number, notAfter: number, strict: boolean, window: string, grace = 0): Promise<void> {
  const { outDir, archive } = to;
  const bar = createCountBar(process.stderr);
  const total = process.stderr.isTTY === true ? await countLines(list).catch(() => 0) : 0;
  let r;
  try {
    r = await grantFleet({
      list, outDir, archive, modelId, modelKey, vendorSeed, notBefore, notAfter, grace, strict,
      onProgress: (g, k) => bar.update(g + k, total, `granted ${g}${k ? `, ${k} refused` : ''}`),
      onRefused: (line, reason) => bar.note(`keylock: ${list} line ${line}: ${reason}`),
    });
  } finally {
    bar.done();
  }
  const rate = r.seconds > 0 ? Math.round(r.granted / r.seconds) : 0;
  const refused = r.refusedCount ? `; ${r.refusedCount} refused: ${r.refused.map((x) => `line ${x.line} (${x.reason})`).join(', ')}${r.refusedCount > r.refused.length ? ', …' : ''}` : '';
  const where = archive ?? `${outDir}/`;
  if (r.stopped && archive !== undefined) {
    throw new CliError(`stopped at ${list} line ${r.refused[0].line} (--strict): ${r.refused[0].reason}; no archive was written`, 'fix the line and run the list again');
  }
  process.stdout.write(`granted ${r.granted} devices in ${r.seconds.toFixed(1)} s (${rate} grants/s)${refused}; model ${modelId}, ${window}; wrote ${where}\n`);
  if (r.stopped) throw new CliError(`stopped at ${list} line ${r.refused[0].line} (--strict): ${r.refused[0].reason}`, 'grants written before that line are complete; fix the line and run the rest into a new --out-dir');
  const again = archive !== undefined ? 'a new --out archive' : 'a new --out-dir';
  if (r.refusedCount) throw new CliError(`${r.refusedCount} line(s) of ${list} refused (see above); the other devices were granted`, `fix those lines and grant them into ${again}, or use --strict to stop at the first bad line`);
}

export const install: Command = {
  summary: 'install a grant (.klg), revocation list (.klr), reinstate token (.klt) or key rotation (.klv) into a keystore',
  usage: 'install FILE.klg|FLEET.tar|FILE.klr|FILE.klt|FILE.klv --keystore F.kls --unlock SPEC',
  options: { keystore: { type: 'string' }, unlock: { type: 'string' } },
  positionals: [1, 1],
  async run({ values, positionals }) {
    const path = req(values, 'keystore', this.usage);
    const unlock = unlockFlag(values, this.usage);
    if (positionals[0].toLowerCase().endsWith('.tar')) {
      // A fleet's grant archive: this device's entry only, found without holding the archive.
      const ks = await Keystore.open(path, { unlock });
      try {
        const found = findGrantInTar(positionals[0], ks.deviceId, ks.devicePub);
        if (!found.bytes) throw new CliError(`${positionals[0]}: expected a grant for device "${ks.deviceId}" (key ${keyId(ks.devicePub)}), found none among ${found.entries} grant(s)`, 'grant this device (its device.pub) and install that .klg or a new archive');
        const g = await ks.installGrant(found.bytes);
        process.stdout.write(`installed grant ${g.grantId} for model ${g.modelId} from ${positionals[0]} (generation ${ks.generation})\n`);
      } finally {
        ks.close();
      }
      return;
    }
    const bytes = readInput(positionals[0], 'file to install');
    let format: string;
    try {
      format = Fields.of('file', decodeCbor(bytes, 'file', 1 << 24)).text('format', 64);
    } catch {
      throw new CliError(`${positionals[0]} is not a keylock grant, revocation list, reinstate token or key rotation`);
    }
    const ks = await Keystore.open(path, { unlock });
    try {
      if (format === 'keylock/klg') {
        const g = await ks.installGrant(bytes);
        process.stdout.write(`installed grant ${g.grantId} for model ${g.modelId} (generation ${ks.generation})\n`);
      } else if (format === 'keylock/klr') {
        const r = await ks.installRevocation(bytes);
        process.stdout.write(`${r.changed ? 'installed' : 'already had'} revocation list version ${r.listVersion} (generation ${ks.generation})\n`);
      } else if (format === 'keylock/klt') {
        const r = await ks.installReinstate(bytes);
        process.stdout.write(`reinstate token ${r.tokenId} used for model ${r.modelId}${r.wasDisabled ? ': re-enabled; install a fresh grant to run it again' : ' (it was not disabled)'} (generation ${ks.generation})\n`);
      } else if (format === 'keylock/klv') {
        const r = await ks.installRotation(bytes);
        process.stdout.write(`rotated ${r.role} key ${keyId(r.oldKey)} to ${keyId(r.newKey)}; files signed only by ${keyId(r.oldKey)} are refused from now on (generation ${ks.generation})\n`);
      } else {
        throw new CliError(`cannot install a "${format}" file`, 'install takes .klg grants, .klr revocation lists, .klt reinstate tokens and .klv key rotations');
      }
    } finally {
      ks.close();
    }
  },
};

export const revoke: Command = {
  summary: 'issue a vendor-signed revocation list (a higher --version replaces older lists)',
  usage: 'revoke --vendor VENDOR.key --version N [--grant ID...] [--grants-file FILE] [--model ID...] [--device ID...] --out R.klr',
  options: {
    vendor: { type: 'string' }, version: { type: 'string' }, out: { type: 'string' }, 'grants-file': { type: 'string' },
    grant: { type: 'string', multiple: true }, model: { type: 'string', multiple: true }, device: { type: 'string', multiple: true },
  },
  // `--grant a b c` and `--grant a --grant b` both work (see revokedIds).
  positionals: [0, 100_000],
  async run({ values, raw }) {
    const listVersion = intFlag(values, 'version', 1, this.usage);
    if (listVersion === undefined) throw new UsageError('--version N is required', `usage: keylock ${this.usage}`);
    const out = req(values, 'out', this.usage);
    const vendorPath = req(values, 'vendor', this.usage);
    const grantsFile = values['grants-file'] === undefined ? undefined : req(values, 'grants-file', this.usage);
    const r = revokedIds(raw, new Set(['vendor', 'version', 'out', 'grants-file']));
    for (const [flag, ids] of [['grant', r.grants], ['model', r.models], ['device', r.devices]] as const) for (const id of ids) checkIdFlag(flag, id);
    if (grantsFile !== undefined) r.grants.push(...(await idsFromFile(grantsFile)));
    if (r.grants.length > MAX_REVOKED_IDS) throw new CliError(`${r.grants.length} grant ids, a revocation list holds at most ${MAX_REVOKED_IDS}`, 'revoke whole models (--model) or devices (--device) instead of each of their grants');
    const vendorSeed = decodeVendorSecret(readInput(vendorPath, 'vendor key'));
    writeOutput(out, makeRevocation({ listVersion, ...r, vendorSeed }));
    vendorSeed.fill(0);
    process.stdout.write(`revocation list version ${listVersion}: ${r.grants.length} grant(s), ${r.models.length} model(s), ${r.devices.length} device(s); wrote ${out}\n`);
  },
};

/** Grant ids from a file, one a line (blank lines and `#` comments skipped); a bad id names its line. */
async function idsFromFile(path: string): Promise<string[]> {
  const input = createReadStream(path);
  await new Promise<void>((resolve, reject) => {
    input.once('open', () => resolve());
    input.once('error', (e: NodeJS.ErrnoException) => reject(e.code === 'ENOENT' ? new CliError(`grants file not found: ${path}`) : e));
  });
  const ids: string[] = [];
  let n = 0;
  for await (const line of createInterface({ input, crlfDelay: Infinity })) {
    n++;
    const id = line.trim();
    if (!id || id.startsWith('#')) continue;
    if (id.length > 256) throw new CliError(`${path} line ${n}: expected a grant id of 1 to 256 characters, got ${id.length} characters`, 'one grant id a line, as `keylock device show` prints them');
    if (ids.length >= MAX_REVOKED_IDS) throw new CliError(`${path}: more than ${MAX_REVOKED_IDS} grant ids (line ${n})`, 'revoke whole models (--model) or devices (--device) instead of each of their grants');
    ids.push(id);
  }
  return ids;
}

export const reinstate: Command = {
  summary: 'issue a one-time token that lifts a disabled model on one device',
  usage: 'reinstate --vendor VENDOR.key --device DEVICE.pub --model ID --out T.klt',
  options: { vendor: { type: 'string' }, device: { type: 'string' }, model: { type: 'string' }, out: { type: 'string' } },
  positionals: [0, 0],
  async run({ values }) {
    const devicePath = req(values, 'device', this.usage);
    const modelId = checkIdFlag('model', req(values, 'model', this.usage));
    const out = req(values, 'out', this.usage);
    const vendorPath = req(values, 'vendor', this.usage);
    const dev = decodeDevicePub(readInput(devicePath, 'device public key'));
    const vendorSeed = decodeVendorSecret(readInput(vendorPath, 'vendor key'));
    writeOutput(out, makeReinstate({ modelId, deviceId: dev.deviceId, devicePub: dev.key, vendorSeed }));
    vendorSeed.fill(0);
    process.stdout.write(`reinstate token for model ${modelId} on device ${dev.deviceId}; wrote ${out}\n`);
  },
};
