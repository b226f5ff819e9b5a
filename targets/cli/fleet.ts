/**
 * Grants for a fleet (`keylock grant --devices FLEET.csv|FLEET.jsonl --out-dir DIR`):
 * one `.klg` per device of a list, streamed.
 *
 * The list is read line by line (node:readline): one line in memory at a time,
 * and at most `concurrency` grants waiting for the disk. Grants are signed on
 * this thread (the CPU part), and written on libuv's pool: each one whole to a
 * temp file, synced, then hard-linked to `<name>.klg`, which never overwrites.
 * So a grant file is complete or absent, never half-written, and the output
 * folder itself is the set of names issued so far: a second line for the same
 * name is refused as a duplicate without a table that grows with the fleet.
 * That needs a folder that starts empty (or is created).
 *
 * A line is one device: `device` (or `pub`), the device's `device.pub` file in
 * hex or base64 (what `keylock device init --pub-out` writes), or a raw 32-byte
 * X25519 key in hex or base64 together with `id`; optional `id` (must match the
 * file's device id) and `name` (the output file's name; default the device id).
 * CSV has a header line naming those columns; JSONL has one object per line.
 * A bad line (unparseable key, an id that does not match, a name that is not a
 * safe file name, a duplicate) is reported with its line number and skipped,
 * or, with `strict`, ends the run there (grants already written stay).
 */
import { createReadStream } from 'node:fs';
import { link, mkdir, open, readdir, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { decodeDevicePub } from '../../keystore/keyfiles.ts';
import { grantIssuer } from '../../keystore/grant.ts';
import { fsyncDir } from '../../keystore/atomic.ts';
import { CliError } from './command.ts';

/** What `grantFleet` needs. */
export interface FleetRequest {
  /** The device list, `.csv` or `.jsonl` (`.ndjson`). */
  list: string;
  outDir: string;
  modelId: string;
  modelKey: Uint8Array;
  vendorSeed: Uint8Array;
  notBefore: number;
  notAfter: number;
  /** Grace seconds after notAfter for a model already running (0: none). */
  grace?: number;
  /** Stop at the first bad line. */
  strict?: boolean;
  /** Grants being written at once (default 16). */
  concurrency?: number;
  /** Called after every line with the counts so far. */
  onProgress?: (granted: number, refused: number) => void;
  /** Called for every refused line. */
  onRefused?: (line: number, reason: string) => void;
}

/** What `grantFleet` did. */
export interface FleetResult {
  granted: number;
  refusedCount: number;
  /** The first few refused lines (all of them are passed to `onRefused`). */
  refused: { line: number; reason: string }[];
  /** Wall time of the whole run, and the part spent building and signing grants. */
  seconds: number;
  signSeconds: number;
  /** True when `strict` stopped the run at a bad line. */
  stopped: boolean;
}

/** Refused lines kept for the summary; the rest are counted. */
const KEEP_REFUSED = 5;

/** The list formats, by file name. */
export function fleetFormat(path: string): 'csv' | 'jsonl' | undefined {
  const p = path.toLowerCase();
  return p.endsWith('.csv') ? 'csv' : p.endsWith('.jsonl') || p.endsWith('.ndjson') ? 'jsonl' : undefined;
}

/** Counts the lines of a file without holding it (for the progress bar's total). */
export async function countLines(path: string): Promise<number> {
  let n = 0;
  let last = 10;
  for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
    for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) n++;
    if (chunk.length) last = chunk[chunk.length - 1];
  }
  return last === 10 ? n : n + 1;
}

/** A refused line. */
class BadLine extends Error {}

/** A file name keylock writes for a device: letters, digits, `.`, `_`, `-`; not starting with a dot. */
const SAFE_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$/;

/** Bytes from hex or base64 (standard or URL-safe) text. */
function decodeText(v: string): Uint8Array {
  const t = v.trim();
  if (/^([0-9a-fA-F]{2})+$/.test(t)) return new Uint8Array(Buffer.from(t, 'hex'));
  if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(t)) return new Uint8Array(Buffer.from(t, t.includes('-') || t.includes('_') ? 'base64url' : 'base64'));
  throw new BadLine('the device key is neither hex nor base64');
}

/** One device from a line's fields. */
function device(f: Record<string, unknown>): { deviceId: string; key: Uint8Array; name: string } {
  const raw = f.device ?? f.pub;
  if (typeof raw !== 'string' || !raw.trim()) throw new BadLine('no device key (column "device" or "pub")');
  const id = f.id === undefined || f.id === '' ? undefined : f.id;
  const name = f.name === undefined || f.name === '' ? undefined : f.name;
  if (id !== undefined && (typeof id !== 'string' || id.length > 256)) throw new BadLine('"id" must be text of at most 256 characters');
  if (name !== undefined && typeof name !== 'string') throw new BadLine('"name" must be text');
  const bytes = decodeText(raw);
  let dev: { deviceId: string; key: Uint8Array };
  if (bytes.byteLength === 32) {
    if (id === undefined) throw new BadLine('a raw 32-byte device key needs an "id"');
    dev = { deviceId: id, key: bytes };
  } else {
    try {
      dev = decodeDevicePub(bytes);
    } catch (e) {
      throw new BadLine(`unparseable device key: ${(e as Error).message}`);
    }
    if (id !== undefined && id !== dev.deviceId) throw new BadLine(`"id" is "${id}", but the device key file is for device "${dev.deviceId}"`);
  }
  const n = name ?? dev.deviceId;
  if (!SAFE_NAME.test(n)) throw new BadLine(`"${n.slice(0, 60)}" is not a safe file name (letters, digits, . _ -, no leading dot); give a "name"`);
  return { ...dev, name: n.endsWith('.klg') ? n.slice(0, -4) : n };
}

/** Splits one CSV line; double-quoted fields may hold commas and "" for a quote (no line breaks inside). */
function csvFields(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  for (;;) {
    let v = '';
    if (line[i] === '"') {
      i++;
      for (;;) {
        const q = line.indexOf('"', i);
        if (q < 0) throw new BadLine('unterminated quoted field');
        v += line.slice(i, q);
        i = q + 1;
        if (line[i] === '"') { v += '"'; i++; } else break;
      }
      if (i < line.length && line[i] !== ',') throw new BadLine('text after a quoted field');
    } else {
      const c = line.indexOf(',', i);
      v = line.slice(i, c < 0 ? line.length : c);
      i = c < 0 ? line.length : c;
    }
    out.push(v.trim());
    if (i >= line.length) return out;
    i++; // the comma
  }
}

/** Creates `dir`, or checks that it is empty (the folder is the duplicate check). */
async function emptyDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const entries = await readdir(dir);
  if (entries.length) {
    throw new CliError(`--out-dir ${dir} is not empty (${entries.length} entries)`, 'give a new or empty folder: grants are never overwritten, and a name seen twice in one run is a duplicate');
  }
}

/** Writes `data` to `dir/name` whole, synced, via a temp file and a hard link (never overwrites: EEXIST). */
async function writeNew(dir: string, name: string, data: Uint8Array): Promise<void> {
  const tmp = join(dir, `.${name}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', 0o644);
  try {
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await link(tmp, join(dir, name));
  } finally {
    await rm(tmp, { force: true });
  }
}

/** Issues one grant per device of `req.list` into `req.outDir` (see the module comment). */
export async function grantFleet(req: FleetRequest): Promise<FleetResult> {
  const format = fleetFormat(req.list);
  if (!format) throw new CliError(`${req.list}: expected a .csv or .jsonl device list`);
  const concurrency = req.concurrency ?? 16;
  const t0 = performance.now();
  const input = createReadStream(req.list);
  const opened = new Promise<void>((resolve, reject) => {
    input.once('open', () => resolve());
    input.once('error', (e: NodeJS.ErrnoException) => reject(e.code === 'ENOENT' ? new CliError(`device list not found: ${req.list}`) : e));
  });
  await opened;
  await emptyDir(req.outDir);
  const issuer = grantIssuer(req.vendorSeed);
  const res: FleetResult = { granted: 0, refusedCount: 0, refused: [], seconds: 0, signSeconds: 0, stopped: false };
  const refuse = (line: number, reason: string): void => {
    res.refusedCount++;
    if (res.refused.length < KEEP_REFUSED) res.refused.push({ line, reason });
    req.onRefused?.(line, reason);
    if (req.strict) res.stopped = true;
  };
  const inFlight = new Set<Promise<void>>();
  /** The write in flight for each file name (at most `concurrency` entries). */
  const writing = new Map<string, Promise<void>>();
  let writeError: unknown;
  let columns: string[] | undefined;
  let lineNo = 0;
  const rl = createInterface({ input, crlfDelay: Infinity });
  try {
    for await (const text of rl) {
      lineNo++;
      if (writeError !== undefined) throw writeError;
      if (res.stopped) break;
      const line = lineNo === 1 ? text.replace(/^\uFEFF/, '') : text;
      if (!line.trim()) continue;
      let fields: Record<string, unknown>;
      try {
        if (format === 'csv') {
          if (!columns) {
            columns = csvFields(line).map((c) => c.toLowerCase());
            if (!columns.includes('device') && !columns.includes('pub')) {
              throw new CliError(`${req.list} line ${lineNo}: expected a header line with a "device" or "pub" column, got "${line.slice(0, 80)}"`, 'the first line names the columns: device (or pub), and optionally id and name');
            }
            continue;
          }
          const vals = csvFields(line);
          if (vals.length !== columns.length) throw new BadLine(`expected ${columns.length} fields (${columns.join(',')}), got ${vals.length}`);
          fields = Object.fromEntries(columns.map((c, i) => [c, vals[i]]));
        } else {
          let v: unknown;
          try {
            v = JSON.parse(line);
          } catch {
            throw new BadLine('not a JSON object');
          }
          if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new BadLine('not a JSON object');
          fields = v as Record<string, unknown>;
        }
        const dev = device(fields);
        const s0 = performance.now();
        const bytes = issuer.issue({ modelId: req.modelId, modelKey: req.modelKey, devicePub: dev.key, deviceId: dev.deviceId, notBefore: req.notBefore, notAfter: req.notAfter, grace: req.grace });
        res.signSeconds += (performance.now() - s0) / 1000;
        const at = lineNo;
        // A name already being written by an earlier line waits for that write, so the earlier line
        // gets the file and this one the EEXIST, whatever order the writes would finish in.
        const file = `${dev.name}.klg`;
        const before = writing.get(file);
        const p: Promise<void> = (before ? before.then(() => writeNew(req.outDir, file, bytes)) : writeNew(req.outDir, file, bytes)).then(
          () => { res.granted++; },
          (e: NodeJS.ErrnoException) => {
            if (e.code === 'EEXIST') refuse(at, `duplicate device: ${dev.name}.klg was already granted by an earlier line`);
            else writeError ??= e;
          },
        ).finally(() => {
          inFlight.delete(p);
          if (writing.get(file) === p) writing.delete(file);
          req.onProgress?.(res.granted, res.refusedCount);
        });
        inFlight.add(p);
        writing.set(file, p);
        if (inFlight.size >= concurrency) await Promise.race(inFlight);
      } catch (e) {
        if (!(e instanceof BadLine)) throw e;
        refuse(lineNo, e.message);
        req.onProgress?.(res.granted, res.refusedCount);
      }
    }
    if (format === 'csv' && !columns) throw new CliError(`${req.list}: expected a header line and devices, got an empty file`);
  } finally {
    rl.close();
    input.destroy();
    await Promise.allSettled(inFlight);
    issuer.close();
    fsyncDir(req.outDir);
  }
  if (writeError !== undefined) throw writeError;
  res.seconds = (performance.now() - t0) / 1000;
  return res;
}
