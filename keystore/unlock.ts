/**
 * Unlock providers: where the 32-byte storage key that seals a keystore comes
 * from. A raw key from a file, an environment variable or an app's hook (TPM,
 * secure element), or a passphrase stretched with scrypt whose parameters and
 * salt are stored in the keystore's outer map (so they can be raised later).
 *
 * CLI spellings (`parseUnlock`):
 *   file:PATH           32 raw bytes; created (mode 0600) by `Keystore.create` when missing
 *   env:VAR             hex (64 digits) or base64 of 32 bytes
 *   pass:env:VAR        passphrase read from an environment variable
 *   pass:file:PATH      passphrase read from a file (one trailing newline dropped)
 * A literal `pass:TEXT` is refused: command lines are visible to every user in `ps`.
 */
import { scryptAsync } from '@noble/hashes/scrypt.js';
import { randomBytes, wipe } from './nacl.ts';
import type { Fields } from './cbor.ts';
import { FormatError, UnlockError } from './errors.ts';

/** Length of every storage key. */
export const STORAGE_KEY_BYTES = 32;

/** The key in a file of exactly 32 raw bytes. */
export interface FileUnlock {
  kind: 'file';
  path: string;
}

/** The key in an environment variable, hex or base64. */
export interface EnvUnlock {
  kind: 'env';
  name: string;
  /** Where to look the variable up (default `process.env`). */
  env?: Record<string, string | undefined>;
}

/** scrypt cost parameters (RFC 7914). */
export interface ScryptCost {
  N: number;
  r: number;
  p: number;
}

/** A passphrase, stretched with scrypt. */
export interface PassUnlock {
  kind: 'pass';
  /** Returns the passphrase (called once per unlock; never stored). */
  passphrase(): string | Promise<string>;
  /** Where the passphrase comes from, for messages (e.g. `env:KEYLOCK_PASS`). */
  source?: string;
  /** Cost for a new keystore or a re-key (default N = 2^15, r = 8, p = 1). */
  cost?: Partial<ScryptCost>;
}

/** An app-supplied key source (TPM, secure element, OS keychain). */
export interface HookUnlock {
  kind: 'hook';
  /** Resolves to the 32-byte storage key. */
  getKey(): Promise<Uint8Array>;
}

/** Any storage-key source. */
export type UnlockProvider = FileUnlock | EnvUnlock | PassUnlock | HookUnlock;

/** What a keystore records about its unlock provider (outer map, unsealed). */
export type UnlockRecord =
  | { kind: 'file' | 'env' | 'hook' }
  | ({ kind: 'pass'; kdf: 'scrypt'; salt: Uint8Array } & ScryptCost);

/** Default scrypt cost: 32 MiB of memory, about 0.1-0.3 s in JavaScript on a laptop. */
export const DEFAULT_SCRYPT: ScryptCost = { N: 1 << 15, r: 8, p: 1 };
/** Accepted scrypt cost: N a power of two in [2^10, 2^20], r in [1, 32], p in [1, 16], memory 128·N·r <= 1 GiB. */
export const SCRYPT_LIMITS = { minLogN: 10, maxLogN: 20, maxR: 32, maxP: 16, maxMem: 1 << 30, saltMin: 16, saltMax: 64 } as const;

/** Parses a CLI unlock spec (see the module comment). */
export function parseUnlock(spec: string): UnlockProvider {
  if (typeof spec !== 'string') throw new TypeError('unlock spec must be a string');
  const colon = spec.indexOf(':');
  const kind = colon < 0 ? spec : spec.slice(0, colon);
  const rest = colon < 0 ? '' : spec.slice(colon + 1);
  switch (kind) {
    case 'file':
      if (!rest) throw new RangeError('unlock spec file:PATH needs a path');
      return { kind: 'file', path: rest };
    case 'env':
      if (!rest) throw new RangeError('unlock spec env:VAR needs a variable name');
      return { kind: 'env', name: rest };
    case 'pass': {
      if (rest.startsWith('env:') && rest.length > 4) {
        const name = rest.slice(4);
        return { kind: 'pass', source: `env:${name}`, passphrase: () => envValue(name, undefined, 'passphrase') };
      }
      if (rest.startsWith('file:') && rest.length > 5) {
        const path = rest.slice(5);
        return { kind: 'pass', source: `file:${path}`, passphrase: () => readPassFile(path) };
      }
      throw new RangeError(`unlock spec "pass:…": expected pass:env:VAR or pass:file:PATH, got "pass:${rest.length ? '…' : ''}" (a literal passphrase on the command line would be visible in ps)`);
    }
    case 'hook':
      throw new RangeError('unlock spec "hook": a hook provider is wired in code ({ kind: "hook", getKey }), not on the command line');
    default:
      throw new RangeError(`unlock spec: expected file:PATH, env:VAR, pass:env:VAR or pass:file:PATH, got "${spec.length > 40 ? spec.slice(0, 40) + '…' : spec}"`);
  }
}

/** The record a new keystore stores for `provider` (a fresh salt for passphrases). */
export function newUnlockRecord(provider: UnlockProvider): UnlockRecord {
  if (provider.kind !== 'pass') return { kind: provider.kind };
  const cost = { ...DEFAULT_SCRYPT, ...provider.cost };
  checkCost(cost, (m) => new RangeError(m));
  return { kind: 'pass', kdf: 'scrypt', ...cost, salt: randomBytes(16) };
}

/**
 * Obtains the storage key from `provider` for a keystore that recorded `record`.
 * With `create`, a missing key file is made (32 random bytes, mode 0600).
 * Every way of not getting a usable key is `UnlockError`.
 */
export async function storageKey(provider: UnlockProvider, record: UnlockRecord, opts: { create?: boolean } = {}): Promise<Uint8Array> {
  if ((provider.kind === 'pass') !== (record.kind === 'pass')) {
    throw new UnlockError(`keystore unlock: expected ${record.kind === 'pass' ? 'a passphrase' : 'a raw 32-byte key (file, env or hook)'}, got a ${provider.kind} provider`);
  }
  switch (provider.kind) {
    case 'file':
      return fileKey(provider.path, opts.create === true);
    case 'env':
      return parseRawKey(envValue(provider.name, provider.env, 'storage key'), `environment variable ${provider.name}`);
    case 'hook': {
      let key: unknown;
      try {
        key = await provider.getKey();
      } catch (e) {
        throw new UnlockError(`keystore unlock hook failed: ${(e as Error)?.message ?? String(e)}`, { cause: e });
      }
      if (!(key instanceof Uint8Array) || key.byteLength !== STORAGE_KEY_BYTES) {
        throw new UnlockError(`keystore unlock hook: expected ${STORAGE_KEY_BYTES} bytes, got ${key instanceof Uint8Array ? `${key.byteLength} bytes` : typeof key}`);
      }
      return key.slice();
    }
    case 'pass': {
      const r = record as Extract<UnlockRecord, { kind: 'pass' }>;
      let text: string;
      try {
        text = await provider.passphrase();
      } catch (e) {
        if (e instanceof UnlockError) throw e;
        throw new UnlockError(`keystore passphrase (${provider.source ?? 'callback'}): ${(e as Error)?.message ?? String(e)}`, { cause: e });
      }
      if (typeof text !== 'string' || text.length === 0) throw new UnlockError(`keystore passphrase (${provider.source ?? 'callback'}): expected a non-empty passphrase, got an empty one`);
      const pw = new TextEncoder().encode(text.normalize('NFC'));
      try {
        return await scryptAsync(pw, r.salt, { N: r.N, r: r.r, p: r.p, dkLen: STORAGE_KEY_BYTES, maxmem: SCRYPT_LIMITS.maxMem + 4096 });
      } finally {
        wipe(pw);
      }
    }
  }
}

/** Encodes the record for the keystore's outer map. */
export function unlockRecordToCbor(r: UnlockRecord): Record<string, unknown> {
  return r.kind === 'pass' ? { kind: 'pass', kdf: r.kdf, N: r.N, r: r.r, p: r.p, salt: r.salt } : { kind: r.kind };
}

/** Reads and bounds-checks the record from the keystore's outer map (hostile N/r/p are a FormatError, not a hang). */
export function parseUnlockRecord(f: Fields): UnlockRecord {
  const kind = f.oneOf('kind', ['file', 'env', 'pass', 'hook'] as const);
  if (kind !== 'pass') return { kind };
  const kdf = f.oneOf('kdf', ['scrypt'] as const);
  const cost = { N: f.uint('N'), r: f.uint('r'), p: f.uint('p') };
  checkCost(cost, (m) => new FormatError(`${f.what}: ${m}`));
  const salt = f.bytes('salt', { max: SCRYPT_LIMITS.saltMax });
  if (salt.byteLength < SCRYPT_LIMITS.saltMin) throw new FormatError(`${f.what}.salt: expected at least ${SCRYPT_LIMITS.saltMin} bytes, got ${salt.byteLength}`);
  return { kind, kdf, ...cost, salt };
}

function checkCost(c: ScryptCost, err: (m: string) => Error): void {
  const logN = Math.log2(c.N);
  if (!Number.isInteger(logN) || logN < SCRYPT_LIMITS.minLogN || logN > SCRYPT_LIMITS.maxLogN) {
    throw err(`scrypt N: expected a power of two from 2^${SCRYPT_LIMITS.minLogN} to 2^${SCRYPT_LIMITS.maxLogN}, got ${c.N}`);
  }
  if (!Number.isInteger(c.r) || c.r < 1 || c.r > SCRYPT_LIMITS.maxR) throw err(`scrypt r: expected 1..${SCRYPT_LIMITS.maxR}, got ${c.r}`);
  if (!Number.isInteger(c.p) || c.p < 1 || c.p > SCRYPT_LIMITS.maxP) throw err(`scrypt p: expected 1..${SCRYPT_LIMITS.maxP}, got ${c.p}`);
  if (128 * c.N * c.r > SCRYPT_LIMITS.maxMem) throw err(`scrypt memory 128·N·r: expected at most ${SCRYPT_LIMITS.maxMem} bytes, got ${128 * c.N * c.r}`);
}

function envValue(name: string, env: Record<string, string | undefined> | undefined, what: string): string {
  const vars = env ?? (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env ?? {};
  const v = vars[name];
  if (v === undefined || v === '') throw new UnlockError(`keystore ${what}: expected environment variable ${name} to be set, got it ${v === undefined ? 'missing' : 'empty'}`);
  return v;
}

/** Hex (64 digits) or base64 / base64url (43 or 44 characters) of 32 bytes. */
export function parseRawKey(text: string, where: string): Uint8Array {
  const t = text.trim();
  if (/^[0-9a-fA-F]{64}$/.test(t)) {
    const out = new Uint8Array(32);
    for (let i = 0; i < 32; i++) out[i] = Number.parseInt(t.slice(2 * i, 2 * i + 2), 16);
    return out;
  }
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(t)) {
    const bin = atob(t.replace(/-/g, '+').replace(/_/g, '/').replace(/=?$/, '='));
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    if (out.byteLength === 32) return out;
  }
  throw new UnlockError(`keystore storage key in ${where}: expected 64 hex digits or base64 of 32 bytes, got ${t.length} characters that are neither`);
}

async function fileKey(path: string, create: boolean): Promise<Uint8Array> {
  const fs = await import('./filestore.ts');
  let b = fs.readFileIfExists(path);
  if (b === undefined && create) {
    const key = randomBytes(STORAGE_KEY_BYTES);
    try {
      fs.createSecretFile(path, key);
      return key;
    } catch (e) {
      if ((e as { code?: string }).code !== 'exists') throw e;
      b = fs.readFileIfExists(path); // another initialiser won the race: use its key
    }
  }
  if (b === undefined) throw new UnlockError(`keystore key file ${path}: expected a file of ${STORAGE_KEY_BYTES} raw bytes, got no such file`);
  if (b.byteLength !== STORAGE_KEY_BYTES) {
    wipe(b);
    throw new UnlockError(`keystore key file ${path}: expected ${STORAGE_KEY_BYTES} raw bytes, got ${b.byteLength} bytes`);
  }
  return b;
}

async function readPassFile(path: string): Promise<string> {
  const fs = await import('./filestore.ts');
  const b = fs.readFileIfExists(path);
  if (b === undefined) throw new UnlockError(`keystore passphrase file ${path}: expected a file, got no such file`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(b);
  } catch {
    throw new UnlockError(`keystore passphrase file ${path}: expected UTF-8 text, got invalid UTF-8`);
  } finally {
    wipe(b);
  }
  return text.replace(/\r?\n$/, '');
}
