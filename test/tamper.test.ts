// Tamper detection by bit flips. CI: every bit of the keystore (a MAC check is
// cheap) and one bit of every byte (a different bit position each byte) of the
// signed files, whose Ed25519 check costs ~10 ms in JavaScript. `npm run tamper`
// flips every bit of every file (docs/THREATS.md quotes its numbers).
import { tamperTests } from './tamper-cases.ts';

// The other signed files are in tamper-signed.test.ts.
await tamperTests(['klm', 'kls', 'klg']);
