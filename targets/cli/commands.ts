/** The command table: one entry per `keylock <command>`, each defined in its own file. */
import type { Command } from './main.ts';

export const COMMANDS: Record<string, Command> = {};
