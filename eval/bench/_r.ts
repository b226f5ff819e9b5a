import { checkInputs } from '../../runtime/model.ts';
const specs = [{ name: 'input', dtype: 'float32', shape: [1, 1, 28, 28] }];
const inputs = { input: { dtype: 'float32' as const, dims: [1, 1, 28, 28], data: new Float32Array(784) } };
for (let i = 0; i < 1e5; i++) checkInputs(specs, inputs);
const N = 1e6; let s = performance.now();
for (let i = 0; i < N; i++) checkInputs(specs, inputs);
console.log('checkInputs', ((performance.now() - s) / N * 1e3).toFixed(3), 'us');
s = performance.now();
for (let i = 0; i < N; i++) performance.now();
console.log('performance.now', ((performance.now() - s) / N * 1e3).toFixed(3), 'us');
async function f() { return 1; }
s = performance.now();
for (let i = 0; i < N / 10; i++) { const r = f(); r.then(() => {}, () => {}); await r; }
console.log('async fn + then + await', ((performance.now() - s) / (N / 10) * 1e3).toFixed(3), 'us');
