// Tamper detection by bit flips, continued from tamper.test.ts: revocation lists,
// reinstate tokens, key rotations and image manifests, one bit of every byte
// (a different bit position each byte). `npm run tamper` flips every bit.
import { tamperTests } from './tamper-cases.ts';

await tamperTests(['klr', 'klt', 'klv', 'klim']);
