/**
 * A small static server for the browser bundle and its demo page, on
 * 127.0.0.1 only. Every response carries COOP `same-origin` + COEP
 * `require-corp` (+ CORP `same-origin`), which makes the page cross-origin
 * isolated: without that, browsers refuse SharedArrayBuffer and ORT runs on
 * one thread. `.wasm` goes out as `application/wasm` so it compiles while
 * streaming. Only GET/HEAD of files under the configured roots are served;
 * anything that resolves outside them (`..`, encoded slashes, symlinks out) is
 * refused.
 *
 *   node targets/build.mjs browser browser-webgpu
 *   node --import tsx targets/browser/prepare-demo.ts
 *   node --import tsx targets/browser/serve.ts [--port 8080]
 */
import { createServer, type Server } from 'node:http';
import { createReadStream, existsSync, realpathSync, statSync } from 'node:fs';
import { extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.klm': 'application/octet-stream',
  '.kls': 'application/octet-stream',
  '.cbor': 'application/cbor',
  '.map': 'application/json',
};

/** The headers that make a page cross-origin isolated. */
export const ISOLATION_HEADERS: Readonly<Record<string, string>> = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

/** Options of `serve`. */
export interface ServeOptions {
  /** URL prefix (starting and ending with `/`) → folder. The longest matching prefix wins. */
  roots: Record<string, string>;
  /** 0 (default) picks a free port. */
  port?: number;
  /** Called for every request, after it is answered (tests count them). */
  onRequest?: (method: string, path: string, status: number) => void;
}

/** A running server. */
export interface Served {
  /** `http://127.0.0.1:<port>` (no trailing slash). */
  origin: string;
  server: Server;
  close(): Promise<void>;
}

/**
 * Maps a request path to a file under one of the roots, or undefined when it
 * names nothing servable (outside every root, a folder without index.html).
 */
export function resolvePath(roots: Record<string, string>, urlPath: string): string | undefined {
  let path: string;
  try {
    path = decodeURIComponent(urlPath);
  } catch {
    return undefined;
  }
  if (path.includes('\0') || path.includes('\\')) return undefined;
  const prefixes = Object.keys(roots).sort((a, b) => b.length - a.length);
  const prefix = prefixes.find((p) => path.startsWith(p));
  if (!prefix) return undefined;
  try {
    const base = realpathSync(roots[prefix]);
    let file = resolve(base, '.' + sep + path.slice(prefix.length));
    if (file !== base && !file.startsWith(base + sep)) return undefined;
    if (statSync(file).isDirectory()) file = join(file, 'index.html');
    const real = realpathSync(file); // a symlink must not lead out of the root either
    if (real !== base && !real.startsWith(base + sep)) return undefined;
    return statSync(real).isFile() ? real : undefined;
  } catch {
    return undefined;
  }
}

/** Starts the server on 127.0.0.1. */
export function serve(opts: ServeOptions): Promise<Served> {
  for (const p of Object.keys(opts.roots)) {
    if (!p.startsWith('/') || !p.endsWith('/')) throw new RangeError(`serve: root prefix must start and end with "/", got "${p}"`);
  }
  const server = createServer((req, res) => {
    const method = req.method ?? 'GET';
    const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
    const done = (status: number): void => opts.onRequest?.(method, path, status);
    const headers = { ...ISOLATION_HEADERS, 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff' };
    if (method !== 'GET' && method !== 'HEAD') {
      res.writeHead(405, { ...headers, Allow: 'GET, HEAD', 'Content-Type': 'text/plain' }).end('method not allowed\n');
      return done(405);
    }
    const file = resolvePath(opts.roots, path);
    if (!file) {
      res.writeHead(404, { ...headers, 'Content-Type': 'text/plain' }).end('not found\n');
      return done(404);
    }
    const size = statSync(file).size;
    res.writeHead(200, { ...headers, 'Content-Type': MIME[extname(file)] ?? 'application/octet-stream', 'Content-Length': String(size) });
    if (method === 'HEAD') {
      res.end();
      return done(200);
    }
    createReadStream(file).on('error', () => res.destroy()).pipe(res);
    res.on('finish', () => done(200));
  });
  return new Promise((resolveServe, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => {
      const addr = server.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      resolveServe({
        origin: `http://127.0.0.1:${port}`,
        server,
        close: () => new Promise<void>((r) => {
          server.closeAllConnections();
          server.close(() => r());
        }),
      });
    });
  });
}

const root = fileURLToPath(new URL('../../', import.meta.url));

/** Where the demo's parts were built (defaults: dist/browser-demo, dist/browser, dist/browser-webgpu). */
export interface DemoDirs {
  demo?: string;
  browser?: string;
  browserWebgpu?: string;
}

/** The demo's layout: the page at `/`, the two bundles beside it (`keylock/`, `keylock-webgpu/`). */
export function demoRoots(dirs: DemoDirs = {}): Record<string, string> {
  return {
    '/': dirs.demo ?? join(root, 'dist/browser-demo'),
    '/keylock/': dirs.browser ?? join(root, 'dist/browser'),
    '/keylock-webgpu/': dirs.browserWebgpu ?? join(root, 'dist/browser-webgpu'),
  };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { port: { type: 'string', default: '8080' }, demo: { type: 'string' } } });
  const roots = demoRoots({ demo: values.demo ? resolve(values.demo) : undefined });
  const hints: Record<string, string> = { '/': 'node --import tsx targets/browser/prepare-demo.ts', '/keylock/': 'node targets/build.mjs browser', '/keylock-webgpu/': 'node targets/build.mjs browser-webgpu' };
  for (const [prefix, dir] of Object.entries(roots)) {
    if (!existsSync(dir)) process.stderr.write(`note: ${dir} does not exist yet (${prefix} will answer 404); make it with: ${hints[prefix]}\n`);
  }
  const s = await serve({ roots, port: Number(values.port) });
  process.stdout.write(`keylock browser demo on ${s.origin}/  (COOP/COEP set; Ctrl-C stops)\n`);
}
