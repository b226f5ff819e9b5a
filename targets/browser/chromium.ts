/**
 * Headless Chromium for the browser tests and the bench, driven by
 * playwright-core, the only way that works offline here: the system Chromium
 * (apt `chromium`), a throwaway profile, no background networking. Every
 * request that is not to the local test server is failed and recorded, so a
 * test can assert that nothing left the page.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';

/** Where Debian's chromium package puts the browser. */
export const CHROMIUM = '/usr/bin/chromium';

/** A skip reason when Chromium is absent, else false (for `test(name, { skip }, fn)`). */
export const chromiumMissing: string | false = existsSync(CHROMIUM)
  ? false
  : `Chromium not found at ${CHROMIUM}: install it with "apt-get install -y chromium" (the CI script does) to run the browser tests`;

const BASE_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** A launched browser whose pages may only talk to `origin`. */
export interface Browser {
  context: BrowserContext;
  /** URLs of requests that were refused because they were not to `origin`. */
  external: string[];
  close(): Promise<void>;
}

/**
 * Launches Chromium with a fresh profile. `origin` is the only place pages may
 * fetch from; `extraArgs` adds flags (e.g. `--enable-unsafe-webgpu`).
 */
export async function launchChromium(origin: string, extraArgs: string[] = []): Promise<Browser> {
  const profile = mkdtempSync(join(tmpdir(), 'keylock-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...BASE_ARGS, ...extraArgs],
    viewport: { width: 1100, height: 1000 },
  });
  const external: string[] = [];
  await context.route('**', (route) => {
    const url = route.request().url();
    if (url.startsWith(origin + '/') || url.startsWith('data:') || url.startsWith('blob:')) return route.continue();
    external.push(url);
    return route.abort('blockedbyclient');
  });
  return {
    context,
    external,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
