/** One bundle of a target: a source entry and the output file name beside the others. */
export interface TargetEntry {
  in: string;
  out: string;
  options?: object;
}

/** A build target (see build.mjs). `entry` is the main entry, also listed first in `entries`. */
export interface Target {
  entry: string;
  entries: TargetEntry[];
  options: object;
  ortFiles: string[];
}

/** What `buildTarget` built. */
export interface BuiltTarget {
  /** The folder the target was built into. */
  dir: string;
  /** Absolute paths of every file in `dir`: bundles and the ORT files beside them. */
  files: string[];
  /** Source files bundled, relative to the repository (esbuild metafile names). */
  inputs: string[];
  /** Per output bundle file name, the imports left external (e.g. `node:fs`, `cbor-extract`). */
  externals: Record<string, string[]>;
}

export declare const TARGETS: Record<string, Target>;
export declare function buildTarget(name: string, opts?: { minify?: boolean; outDir?: string }): Promise<BuiltTarget>;
