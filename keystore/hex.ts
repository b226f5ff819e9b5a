/**
 * Bytes as text: lower-case hex (random grant and token ids, digests in
 * messages) and key ids. One definition for the whole repository, on the
 * ground floor, so every message and every file names a key the same way.
 */
import { bytesToHex } from '@noble/hashes/utils.js';
import { sha256 } from './nacl.ts';

/** Lower-case hex of `bytes`, two digits a byte (@noble/hashes' `bytesToHex`). */
export function hex(bytes: Uint8Array): string {
  return bytesToHex(bytes);
}

/** Lower-case hex of the first 8 bytes of SHA-256 of a public key (docs/SPEC.md, "Key files"). */
export function keyId(publicKey: Uint8Array): string {
  return hex(sha256(publicKey).subarray(0, 8));
}
