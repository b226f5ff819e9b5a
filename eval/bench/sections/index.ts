/**
 * The bench's self-contained sections (section 7 on in docs/BENCH.md): each file here measures one
 * thing side by side in one process and renders its own table; `npm run bench` runs each in a child
 * process of its own (eval/bench/sections/child.ts) and keeps the result in bench.json under `extra`.
 * Each also runs alone: `node --import tsx eval/bench/sections/<id>.ts [--quick]`.
 */
import * as aead from './aead.ts';
import * as signatures from './signatures.ts';
import * as fleet from './fleet.ts';
import * as defaultBackend from './default-backend.ts';
import * as stream from './stream.ts';
import * as weightPlaces from './weight-places.ts';
import * as bundleTflite from './bundle-tflite.ts';
import * as realtime from './realtime.ts';
import * as inline from './inline.ts';

/** One section: its id (for `--only`), its heading, and its module. */
export interface ExtraSection {
  id: 'signatures' | 'aead' | 'fleet' | 'default-backend' | 'stream' | 'weight-places' | 'bundle-tflite' | 'realtime' | 'inline';
  title: string;
  measure(quick: boolean): Promise<unknown>;
  render(r: never): string[];
}

export const EXTRA_SECTIONS: readonly ExtraSection[] = [
  { id: 'signatures', title: 'Signatures and key agreement at the crypto boundary', measure: signatures.measure, render: signatures.render as ExtraSection['render'] },
  { id: 'aead', title: 'sealed open throughput beside node:crypto', measure: aead.measure, render: aead.render as ExtraSection['render'] },
  { id: 'fleet', title: 'Fleet scale: grants and revocation lists', measure: (q) => fleet.measure(q), render: fleet.render as ExtraSection['render'] },
  { id: 'default-backend', title: 'keylock by default on Node vs plain onnxruntime-node', measure: defaultBackend.measure, render: defaultBackend.render as ExtraSection['render'] },
  { id: 'stream', title: 'Jitter of a locked pipeline on a streaming workload', measure: stream.measure, render: stream.render as ExtraSection['render'] },
  { id: 'weight-places', title: 'Loading models locked where exports keep their weights', measure: weightPlaces.measure, render: weightPlaces.render as ExtraSection['render'] },
  { id: 'bundle-tflite', title: 'What carrying TFLite costs a device bundle at load', measure: bundleTflite.measure, render: bundleTflite.render as ExtraSection['render'] },
  { id: 'realtime', title: 'Worker mode: the event loop while a model runs, and the per-run cost', measure: realtime.measure, render: realtime.render as ExtraSection['render'] },
  { id: 'inline', title: '`sealed` inline: cost per inference', measure: inline.measure, render: inline.render as ExtraSection['render'] },
];
