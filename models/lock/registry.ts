/** Lockers by scheme name: one file per scheme. */
import type { Scheme } from '../../runtime/klm.ts';
import { advparamsLocker } from './advparams.ts';
import { deeplockLocker } from './deeplock.ts';
import { sealedLocker } from './sealed.ts';
import { shuffleLocker } from './shuffle.ts';
import { signflipLocker } from './signflip.ts';
import type { Locker } from './types.ts';

export const LOCKERS: Record<Scheme, Locker> = {
  shuffle: shuffleLocker,
  signflip: signflipLocker,
  deeplock: deeplockLocker,
  advparams: advparamsLocker,
  sealed: sealedLocker,
};
