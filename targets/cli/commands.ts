/** The command table: one entry per `keylock <command>`, each defined with its neighbours. */
import type { Command } from './command.ts';
import { extract, inspect, keygen, runCmd } from './model-commands.ts';
import { lock } from './lock-command.ts';
import { demo } from './demo.ts';
import { deviceInit, deviceShow, grant, install, reinstate, revoke } from './device-commands.ts';
import { image, verifyImageCmd } from './image.ts';
import { resign, rotate } from './rotate-commands.ts';
import { record } from './record-command.ts';
import { generate } from './generate-command.ts';

export const COMMANDS: Record<string, Command> = {
  keygen,
  lock,
  inspect,
  extract,
  grant,
  revoke,
  reinstate,
  rotate,
  resign,
  'device init': deviceInit,
  'device show': deviceShow,
  install,
  run: runCmd,
  generate,
  record,
  demo,
  image,
  'verify-image': verifyImageCmd,
};
