export declare const TARGETS: Record<string, { entry: string; options: object; ortFiles: string[] }>;
export declare function buildTarget(name: string, opts?: { minify?: boolean }): Promise<{ files: string[]; inputs: string[] }>;
