/**
 * Entry of the Node device bundles (dist/node/keylock.mjs, and through
 * targets/rpi dist/rpi/keylock.mjs): the node target, plus the part of
 * `keylock/testing` that checks a device from its own folder, which has no
 * node_modules: recorded inputs read in (the target tests' runner replays
 * recorded digits) and unlocked sessions on the bundle's own engines, to
 * compare with. The runtime carries all three already, so they cost the bundle
 * nothing. Apps that install the package get the node target alone as `keylock`.
 */
export * from './index.ts';
export { createNativeSession, createOrtSession, decodeRecorded } from '../../runtime/testing.ts';
