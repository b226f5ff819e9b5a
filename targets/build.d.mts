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
  /** tfjs-tflite's wasm glue and `.wasm` staged beside the bundle, next to `keylock-tflite.mjs`. */
  tfliteFiles: string[];
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
  /** Source files in `keylock-tflite.mjs` (the library file beside the bundle), as esbuild names them. */
  tfliteInputs: string[];
  /** What `keylock-tflite.mjs` imports (nothing: it is self-contained). */
  tfliteImports: string[];
}

/** The file name of the tfjs-tflite library beside every bundle. */
export declare const TFLITE_LIB: string;
/** The tfjs-tflite wasm files staged per kind of target. */
export declare const TFLITE_FILES: { node: string[]; browser: string[] };

export declare const TARGETS: Record<string, Target>;
export declare function buildTarget(name: string, opts?: { minify?: boolean; outDir?: string }): Promise<BuiltTarget>;
