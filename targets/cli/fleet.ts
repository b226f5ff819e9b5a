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
 * Or, with `archive` (`--out FLEET.tar`), every grant goes into one POSIX tar
 * (ustar) of `<name>.klg` entries: one file written through a temp name,
 * synced once and linked into place at the end, so the archive is whole or
 * absent (a run stopped by `strict` or an error leaves none). `tar xf` gives
 * the same folder as `--out-dir`, and `keylock install FLEET.tar` on a device
 * installs the grant in it for that device. Duplicate names are found with a
 * table of 64-bit name fingerprints (SHA-256), 16 bytes per device at most.
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
import { closeSync, createReadStream, fsyncSync, linkSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { access, link, mkdir, open, readdir, rm } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { decodeDevicePub } from '../../keystore/keyfiles.ts';
import { grantIssuer, KLG_FORMAT, KLG_VERSION, MAX_KLG_BYTES } from '../../keystore/grant.ts';
import { parseEnvelope } from '../../keystore/envelope.ts';
import { decodeCbor, Fields } from '../../keystore/cbor.ts';
import { equalBytes } from '../../keystore/nacl.ts';
import { fsyncDir } from '../../keystore/atomic.ts';
import { CliError } from './command.ts';

/** What `grantFleet` needs. */
export interface FleetRequest {
  /** The device list, `.csv` or `.jsonl` (`.ndjson`). */
  list: string;
  /** One `.klg` per device in this folder (new or empty); or, instead: */
  outDir?: string;
  /** One tar archive of all the grants (a new file, never overwritten). */
  archive?: string;
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

/**
 * The lines of a stream (`\n` or `\r\n`; a last line without one counts),
 * decoded as UTF-8 across chunk edges. Lines are split a chunk at a time and
 * handed out from that batch, instead of node:readline's async iterator, which
 * costs an event and a promise per line and pauses its input behind a queue.
 * (A million-line run that stalled was a deadlock in Node's crypto, fixed in
 * keystore/native.ts, not readline.)
 */
export async function* lines(input: AsyncIterable<Buffer>): AsyncGenerator<string> {
  const dec = new TextDecoder('utf-8');
  let carry = '';
  for await (const chunk of input) {
    const text = carry + dec.decode(chunk, { stream: true });
    let start = 0;
    const batch: string[] = [];
    for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', start)) {
      batch.push(text.charCodeAt(i - 1) === 13 && i > start ? text.slice(start, i - 1) : text.slice(start, i));
      start = i + 1;
    }
    carry = text.slice(start);
    yield* batch;
  }
  carry += dec.decode();
  if (carry) yield carry.endsWith('\r') ? carry.slice(0, -1) : carry;
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

/** Longest entry name a plain ustar header holds. */
export const TAR_NAME_MAX = 100;
const TAR_BLOCK = 512;

/** A ustar header for a regular file `name` of `size` bytes (mode 0644, owner 0, time `mtime`). */
export function tarHeader(name: string, size: number, mtime: number): Uint8Array {
  const h = new Uint8Array(TAR_BLOCK);
  const put = (off: number, len: number, text: string): void => {
    const b = Buffer.from(text, 'utf8');
    if (b.length > len) throw new RangeError(`tar field of ${len} bytes cannot hold "${text}"`);
    h.set(b, off);
  };
  const octal = (off: number, len: number, v: number): void => put(off, len, v.toString(8).padStart(len - 1, '0'));
  put(0, 100, name);
  octal(100, 8, 0o644);
  octal(108, 8, 0);
  octal(116, 8, 0);
  octal(124, 12, size);
  octal(136, 12, mtime);
  h.fill(0x20, 148, 156); // the checksum counts its own field as spaces
  h[156] = 0x30; // '0': a regular file
  put(257, 6, 'ustar');
  put(263, 2, '00');
  let sum = 0;
  for (let i = 0; i < TAR_BLOCK; i++) sum += h[i];
  put(148, 7, sum.toString(8).padStart(6, '0'));
  return h;
}

/**
 * The tar output of `archive` mode: entries appended in a 1 MiB buffer and
 * written with plain writes to a temp file beside the target; `commit` syncs
 * once and links it into place (EEXIST if the target appeared meanwhile);
 * `abort` removes the temp file.
 */
class TarSink {
  private readonly tmp: string;
  private fd: number;
  private buf = new Uint8Array(1 << 20);
  private used = 0;
  private readonly mtime = Math.floor(Date.now() / 1000);

  constructor(private readonly path: string) {
    this.tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
    this.fd = openSync(this.tmp, 'wx', 0o644);
  }

  add(name: string, data: Uint8Array): void {
    this.put(tarHeader(name, data.byteLength, this.mtime));
    this.put(data);
    const pad = (TAR_BLOCK - (data.byteLength % TAR_BLOCK)) % TAR_BLOCK;
    if (pad) this.put(new Uint8Array(pad));
  }

  private put(b: Uint8Array): void {
    if (this.used + b.byteLength > this.buf.byteLength) this.flush();
    if (b.byteLength > this.buf.byteLength) this.write(b);
    else {
      this.buf.set(b, this.used);
      this.used += b.byteLength;
    }
  }

  private flush(): void {
    this.write(this.buf.subarray(0, this.used));
    this.used = 0;
  }

  private write(b: Uint8Array): void {
    for (let off = 0; off < b.byteLength;) off += writeSync(this.fd, b, off, b.byteLength - off);
  }

  /** Two zero blocks end the archive; then one fsync, the link into place, the folder synced. */
  commit(): void {
    this.put(new Uint8Array(2 * TAR_BLOCK));
    this.flush();
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.fd = -1;
    try {
      linkSync(this.tmp, this.path);
    } finally {
      rmSync(this.tmp, { force: true });
    }
    fsyncDir(dirname(this.path) || '.');
  }

  abort(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
    rmSync(this.tmp, { force: true });
  }
}

/**
 * A set of names kept as 64-bit fingerprints (the first 8 bytes of SHA-256) in
 * an open-addressed table: 16 bytes a slot, at most half full. Two different
 * names share a fingerprint with probability about n²/2⁶⁵ (3·10⁻⁸ for a
 * million devices); then the second would be refused as a duplicate.
 */
export class NameFingerprints {
  private hi = new Uint32Array(1 << 12);
  private lo = new Uint32Array(1 << 12);
  private count = 0;

  /** Adds `name`; false if it was there already. */
  add(name: string): boolean {
    const d = createHash('sha256').update(name).digest();
    return this.insert(d.readUInt32LE(0), d.readUInt32LE(4) || 1);
  }

  get size(): number {
    return this.count;
  }

  private insert(h: number, l: number): boolean {
    const mask = this.hi.length - 1;
    for (let i = h & mask; ; i = (i + 1) & mask) {
      if (this.lo[i] === 0) {
        this.hi[i] = h;
        this.lo[i] = l;
        if (++this.count * 2 > this.hi.length) this.grow();
        return true;
      }
      if (this.lo[i] === l && this.hi[i] === h) return false;
    }
  }

  private grow(): void {
    const [hi, lo] = [this.hi, this.lo];
    this.hi = new Uint32Array(hi.length * 2);
    this.lo = new Uint32Array(lo.length * 2);
    this.count = 0;
    for (let i = 0; i < hi.length; i++) if (lo[i] !== 0) this.insert(hi[i], lo[i]);
  }
}

/** Issues one grant per device of `req.list` into `req.outDir` or `req.archive` (see the module comment). */
export async function grantFleet(req: FleetRequest): Promise<FleetResult> {
  const format = fleetFormat(req.list);
  if (!format) throw new CliError(`${req.list}: expected a .csv or .jsonl device list`);
  if ((req.outDir === undefined) === (req.archive === undefined)) throw new TypeError('grantFleet: give outDir or archive, not both or neither');
  const concurrency = req.concurrency ?? 16;
  const t0 = performance.now();
  const input = createReadStream(req.list);
  const opened = new Promise<void>((resolve, reject) => {
    input.once('open', () => resolve());
    input.once('error', (e: NodeJS.ErrnoException) => reject(e.code === 'ENOENT' ? new CliError(`device list not found: ${req.list}`) : e));
  });
  await opened;
  let tar: TarSink | undefined;
  let names: NameFingerprints | undefined;
  if (req.archive !== undefined) {
    try {
      tar = new TarSink(req.archive);
    } catch (e) {
      input.destroy();
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new CliError(`--out ${req.archive}: its folder does not exist`, 'create the folder first, or give a path in an existing one');
      throw e;
    }
    names = new NameFingerprints();
    try {
      await access(req.archive);
      tar.abort();
      input.destroy();
      throw new CliError(`--out ${req.archive} exists already`, 'give a new file name: grant archives are never overwritten');
    } catch (e) {
      if (e instanceof CliError) throw e;
    }
  } else {
    await emptyDir(req.outDir!);
  }
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
  try {
    for await (const text of lines(input)) {
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
        if (tar) {
          if (Buffer.byteLength(file) > TAR_NAME_MAX) throw new BadLine(`"${file.slice(0, 60)}…" is longer than a tar entry name (${TAR_NAME_MAX} bytes); give a shorter "name"`);
          if (!names!.add(file)) throw new BadLine(`duplicate device: ${file} was already granted by an earlier line`);
          tar.add(file, bytes);
          res.granted++;
          req.onProgress?.(res.granted, res.refusedCount);
          continue;
        }
        const before = writing.get(file);
        const outDir = req.outDir!;
        const p: Promise<void> = (before ? before.then(() => writeNew(outDir, file, bytes)) : writeNew(outDir, file, bytes)).then(
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
    if (tar) {
      if (res.stopped) tar.abort();
      else {
        try {
          tar.commit();
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new CliError(`--out ${req.archive} appeared while the grants were issued; nothing was written`, 'give a new file name');
          throw e;
        }
      }
      tar = undefined;
    }
  } finally {
    input.destroy();
    await Promise.allSettled(inFlight);
    issuer.close();
    tar?.abort();
    if (req.outDir !== undefined) fsyncDir(req.outDir);
  }
  if (writeError !== undefined) throw writeError;
  res.seconds = (performance.now() - t0) / 1000;
  return res;
}

/** Whether `head` (the first bytes of a file) starts a ustar archive. */
export function isTar(head: Uint8Array): boolean {
  return head.byteLength >= TAR_BLOCK && Buffer.from(head.subarray(257, 262)).toString('latin1') === 'ustar';
}

/**
 * Finds the grant for one device in a grant archive (`grant --devices … --out
 * FLEET.tar`), reading one entry at a time (a million-device archive is never
 * held): the first `.klg` entry whose body names `deviceId` and `devicePub`.
 * Only the routing fields are read here; the caller installs the bytes, which
 * checks the signature. Undefined when no entry is for this device.
 */
export function findGrantInTar(path: string, deviceId: string, devicePub: Uint8Array): { bytes: Uint8Array; entries: number } | { bytes: undefined; entries: number } {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new CliError(`grant archive not found: ${path}`);
    throw e;
  }
  const head = new Uint8Array(TAR_BLOCK);
  let entries = 0;
  try {
    for (let pos = 0; ;) {
      const n = readSync(fd, head, 0, TAR_BLOCK, pos);
      if (n === 0 || (n === TAR_BLOCK && head.every((b) => b === 0))) return { bytes: undefined, entries };
      if (n < TAR_BLOCK || !isTar(head)) throw new CliError(`${path}: expected a tar header at byte ${pos}, got ${n < TAR_BLOCK ? `${n} bytes (truncated)` : 'something else'}`, 'the archive is damaged; issue it again with keylock grant --devices … --out FLEET.tar');
      let sum = 0;
      for (let i = 0; i < TAR_BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : head[i];
      const field = (off: number, len: number): string => Buffer.from(head.subarray(off, off + len)).toString('latin1').replace(/\0.*$/s, '').trim();
      if (parseInt(field(148, 8), 8) !== sum) throw new CliError(`${path}: the tar header at byte ${pos} has a wrong checksum`, 'the archive is damaged; issue it again');
      const size = parseInt(field(124, 12), 8);
      if (!Number.isSafeInteger(size) || size < 0) throw new CliError(`${path}: the tar header at byte ${pos} has no valid size`, 'the archive is damaged; issue it again');
      const name = field(0, 100);
      const type = head[156];
      const data = pos + TAR_BLOCK;
      pos = data + Math.ceil(size / TAR_BLOCK) * TAR_BLOCK;
      if ((type !== 0x30 && type !== 0) || !name.endsWith('.klg') || size > MAX_KLG_BYTES) continue;
      entries++;
      const bytes = new Uint8Array(size);
      if (readSync(fd, bytes, 0, size, data) !== size) throw new CliError(`${path}: entry ${name} is truncated`, 'the archive is damaged; issue it again');
      try {
        const env = parseEnvelope(bytes, KLG_FORMAT, KLG_VERSION, MAX_KLG_BYTES);
        const body = Fields.of(`${KLG_FORMAT} body`, decodeCbor(env.signed, `${KLG_FORMAT} body`, MAX_KLG_BYTES));
        if (body.text('deviceId', 256) === deviceId && equalBytes(body.bytes('devicePub', { len: 32 }), devicePub)) return { bytes, entries };
      } catch {
        // not a grant keylock can read: another entry may be this device's; installGrant judges the one chosen
      }
    }
  } finally {
    closeSync(fd);
  }
}
