/**
 * Seeded short trials of the language model's recipe, the runs behind the
 * choice of LM_CONFIG and LM_RECIPE (docs/RESULTS.md, "Transformer language
 * model"). Each trial trains from the seeded init on the seeded windows and
 * prints one JSON line: the recipe, wall and CPU seconds (one thread: the CPU time
 * is about the wall time on an idle core), steps per CPU second and held-out
 * bits per character (1024 windows).
 *
 *   node --import tsx models/train/lm-sweep.ts 'steps=300,lr=3e-3' 'steps=300,lr=1e-2,width=96,hidden=384'
 *
 * Keys: steps, batch, lr, warmup, width, hidden, heads, layers, context.
 */
import { initTfjsWasm } from '../tfjs/setup.ts';
import { bitsPerChar, disposeLm, LM_CONFIG, LM_RECIPE, lmParamCount, loadLmCorpus, trainLm, type LmConfig } from './lm.ts';

export function parseTrial(spec: string): { config: LmConfig; steps: number; batch: number; lr: number; warmup: number } {
  const kv = new Map(spec.split(',').filter(Boolean).map((p) => {
    const [k, v] = p.split('=');
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new RangeError(`trial ${JSON.stringify(spec)}: expected key=positive number, got ${JSON.stringify(p)}`);
    return [k.trim(), n] as const;
  }));
  const known = ['steps', 'batch', 'lr', 'warmup', 'width', 'hidden', 'heads', 'layers', 'context'];
  for (const k of kv.keys()) if (!known.includes(k)) throw new RangeError(`trial ${JSON.stringify(spec)}: expected one of ${known.join(', ')}, got ${k}`);
  const config: LmConfig = {
    context: kv.get('context') ?? LM_CONFIG.context, width: kv.get('width') ?? LM_CONFIG.width, heads: kv.get('heads') ?? LM_CONFIG.heads,
    layers: kv.get('layers') ?? LM_CONFIG.layers, hidden: kv.get('hidden') ?? LM_CONFIG.hidden,
  };
  return { config, steps: kv.get('steps') ?? LM_RECIPE.steps, batch: kv.get('batch') ?? LM_RECIPE.batch, lr: kv.get('lr') ?? LM_RECIPE.lr, warmup: kv.get('warmup') ?? LM_RECIPE.warmup };
}

async function main(): Promise<void> {
  const specs = process.argv.slice(2);
  if (!specs.length) throw new RangeError('usage: node --import tsx models/train/lm-sweep.ts key=value,... [...]');
  const trials = specs.map(parseTrial);
  await initTfjsWasm();
  const corpus = loadLmCorpus();
  for (const [i, tr] of trials.entries()) {
    const { lm, fit } = trainLm(corpus, tr);
    const bpc = bitsPerChar(lm, corpus.heldOut);
    disposeLm(lm);
    console.log(JSON.stringify({ trial: specs[i], weights: lmParamCount(tr.config), ...tr, seconds: +fit.seconds.toFixed(1), cpuSeconds: +fit.cpuSeconds.toFixed(1), stepsPerCpuSecond: +(tr.steps / fit.cpuSeconds).toFixed(2), trainBpc: +fit.finalLoss.toFixed(3), heldOutBpc: +bpc.toFixed(3) }));
  }
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) await main();
