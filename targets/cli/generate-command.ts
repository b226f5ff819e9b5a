/** `keylock generate`: text from a locked character-level language model, on the device, with the key. */
import { generateText, DEFAULT_VOCAB } from '../../runtime/generate.ts';
import { AUTO, backendNames } from '../../runtime/backends.ts';
import { InputMismatchError } from '../../keystore/errors.ts';
import { CliError, UsageError, type Command } from './command.ts';
import { intFlag, numFlag, readInput, req } from './io.ts';
import { keySourceFlags, openModel } from './model-commands.ts';

const BACKENDS = [...backendNames(), AUTO];

export const generate: Command = {
  summary: 'generate text from a locked character-level language model (input int32 [1,T], output logits [1,T,V]) with the key',
  usage: 'generate M.klm (--keystore F.kls --unlock SPEC | --model-key M.key [--trust VENDOR.pub]) --prompt TEXT [--tokens N] '
    + `[--greedy | --temperature T [--seed S]] [--vocab CHARS] [--backend ${BACKENDS.join('|')}] [--json]`,
  options: {
    'model-key': { type: 'string' }, keystore: { type: 'string' }, unlock: { type: 'string' }, trust: { type: 'string' },
    prompt: { type: 'string' }, tokens: { type: 'string' }, greedy: { type: 'boolean' }, temperature: { type: 'string' },
    seed: { type: 'string' }, vocab: { type: 'string' }, backend: { type: 'string' }, json: { type: 'boolean' },
  },
  positionals: [1, 1],
  async run({ values, positionals }) {
    const usage = `usage: keylock ${this.usage}`;
    if (typeof values.prompt !== 'string') throw new UsageError('--prompt is required (it may be empty: --prompt "")', usage);
    const prompt = values.prompt;
    const tokens = intFlag(values, 'tokens', 1, this.usage) ?? 64;
    if (values.greedy === true && values.temperature !== undefined) throw new UsageError('give --greedy or --temperature T, not both', usage);
    const temperature = numFlag(values, 'temperature', 0, this.usage);
    if (temperature === 0) throw new UsageError('--temperature must be greater than 0 (use --greedy for argmax decoding)', usage);
    if (values.seed !== undefined && temperature === undefined) throw new UsageError('--seed goes with --temperature T (greedy decoding draws nothing)', usage);
    const seed = intFlag(values, 'seed', 0, this.usage) ?? 1;
    const vocab = values.vocab === undefined ? DEFAULT_VOCAB : req(values, 'vocab', this.usage).replace(/\\n/g, '\n');
    if (new Set(vocab).size !== vocab.length) throw new UsageError('--vocab must not repeat a character', 'id i is the i-th character; write a newline as \\n');
    const backend = values.backend as string | undefined;
    if (backend !== undefined && !BACKENDS.includes(backend)) throw new UsageError(`--backend: expected one of ${BACKENDS.join(', ')}, got "${backend}"`, usage);
    const source = keySourceFlags(values, this.usage);
    const model = await openModel(readInput(positionals[0], 'model file'), source, { backend });
    if (model.state !== 'ready') {
      const hint = model.state === 'disabled' ? 'only a vendor reinstate token (keylock install T.klt) lifts it' : model.error?.hint;
      throw new CliError(`model is ${model.state}: ${model.error?.message} (${model.error?.code})`, hint, 3);
    }
    const json = values.json === true;
    try {
      // The prompt is echoed with the first character made, once generateText has accepted it.
      let echoed = json;
      const r = await generateText(model, {
        prompt, tokens, vocab, temperature, seed,
        onToken: (ch) => {
          if (!echoed) { process.stdout.write(prompt); echoed = true; }
          if (!json) process.stdout.write(ch);
        },
      }).catch((e: unknown) => {
        if (e instanceof InputMismatchError) throw new CliError(e.message, `the model's vocabulary is ${JSON.stringify(vocab)} (--vocab CHARS for another model)`);
        throw e;
      });
      const how = temperature === undefined ? 'greedy' : `temperature ${temperature}, seed ${seed}`;
      if (json) process.stdout.write(`${JSON.stringify({ prompt, text: r.text, tokens: r.ids.length, decoding: how, backend: model.backend, msPerToken: r.msPerToken })}\n`);
      else process.stderr.write(`\n(${r.ids.length} characters, ${how}, backend ${model.backend}, ${r.msPerToken.toFixed(2)} ms per character)\n`);
    } finally {
      await model.release();
    }
    return 0;
  },
};
