/**
 * The SIMD batch normalisation kernel on the wasm engine (lib/model/batch-norm-kernel.ts): installed by
 * initEngine, bit for bit the engine's own kernel on random and special values and on a real model's layers, the
 * engine's kernel where it is not exact, and its self-check refuses a kernel that differs in one bit.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { prng } from '../../lib/core/prng.js';
import { batchNormKernels, type KernelArgs, selfCheck, type TensorInfo, type WasmBackend } from '../../lib/model/batch-norm-kernel.js';
import { BATCH_NORM_WASM } from '../../lib/model/batch-norm-wasm.js';
import { initEngine, tf } from '../../lib/model/engine.js';
import { ROOT } from '../helpers/common.js';

const rnd = prng(11);
const special = [0, -0, 1e-40, -1e-40, 3.4e38, -3.4e38, 1e-30, 1, -1, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY];
const values = (n: number, positive = false) =>
  Float32Array.from({ length: n }, (_, i) => {
    const v = i % 9 === 0 ? special[i % special.length] : (rnd() - 0.5) * Math.exp((rnd() - 0.5) * 30);
    return positive ? Math.abs(v) : v;
  });

const info = (t: tf.Tensor): TensorInfo => ({ dataId: t.dataId as object, shape: t.shape, dtype: t.dtype });
function bits(backend: WasmBackend, t: TensorInfo): Uint32Array {
  const out = new Uint32Array(backend.typedArrayFromHeap(t).slice().buffer);
  backend.disposeData(t.dataId);
  return out;
}

test('the SIMD batch normalisation: installed on wasm, bit for bit the engine kernel, the engine kernel where it is not exact', async () => {
  assert.equal(await initEngine('wasm'), 'wasm');
  const k = batchNormKernels();
  assert.ok(k, 'initEngine installs the kernel on wasm');
  const backend = tf.backend() as unknown as WasmBackend;
  const cases: { shape: number[]; offset?: boolean; scale?: boolean; eps: number }[] = [
    { shape: [1, 7, 5, 16], eps: 0.001 },
    { shape: [2, 3, 3, 96], eps: 1e-5 },
    { shape: [1, 1, 1, 4], eps: 0.0010000000474974513 },
    { shape: [1, 4, 4, 6], eps: 0.001 }, // 6 channels: the engine's kernel
    { shape: [1, 2, 2, 8], offset: false, eps: 0.001 }, // no offset: the engine's kernel
    { shape: [1, 2, 2, 8], scale: false, eps: 0.001 },
  ];
  let compared = 0;
  for (const c of cases) {
    for (let rep = 0; rep < 10; rep++) {
      const C = c.shape.at(-1)!;
      const size = c.shape.reduce((a, b) => a * b, 1);
      const ts = [tf.tensor(values(size), c.shape), tf.tensor(values(C)), tf.tensor(values(C, true)), tf.tensor(values(C)), tf.tensor(values(C))];
      const [x, mean, variance, offset, scale] = ts.map(info);
      const args = { inputs: { x, mean, variance, ...(c.offset === false ? {} : { offset }), ...(c.scale === false ? {} : { scale }) }, backend, attrs: { varianceEpsilon: c.eps } } as KernelArgs;
      const a = bits(backend, k.stock(args));
      const b = bits(backend, k.fast(args));
      const f = new Float32Array(a.buffer);
      for (let i = 0; i < a.length; i++) if (!Number.isNaN(f[i])) assert.equal(b[i], a[i], `${JSON.stringify(c)} element ${i}`);
      compared += a.length;
      tf.dispose(ts);
    }
  }
  assert.ok(compared > 20_000);
  // through the engine: tf.batchNorm runs the installed kernel
  const x = tf.tensor(values(3 * 3 * 8), [1, 3, 3, 8]);
  const p = [values(8), values(8, true), values(8), values(8)].map((v) => tf.tensor(v));
  const viaEngine = new Uint32Array((await tf.batchNorm(x, p[0], p[1], p[2], p[3], 0.001).data()).buffer);
  const stock = bits(backend, k.stock({ inputs: { x: info(x), mean: info(p[0]), variance: info(p[1]), offset: info(p[2]), scale: info(p[3]) }, backend, attrs: { varianceEpsilon: 0.001 } }));
  assert.deepEqual(viaEngine, stock);
  tf.dispose([x, ...p]);
});

test('the self-check refuses a kernel that differs: float32 division instead of the engine double', async () => {
  await initEngine('wasm');
  const k = batchNormKernels()!;
  const backend = tf.backend() as unknown as WasmBackend;
  assert.equal(selfCheck(backend, k.stock, k.fast), '');
  const f32 = ({ inputs, attrs }: KernelArgs): TensorInfo => {
    const t = tf.tidy(() => {
      const get = (i?: TensorInfo) => tf.engine().makeTensorFromTensorInfo(i as never);
      const nf = tf.sqrt(tf.add(get(inputs.variance), attrs.varianceEpsilon));
      return tf.add(tf.div(tf.mul(tf.sub(get(inputs.x), get(inputs.mean)), get(inputs.scale)), nf), get(inputs.offset));
    });
    tf.engine().incRef(t, backend as never);
    return info(t);
  };
  assert.match(selfCheck(backend, k.stock, f32), /^element \d+: 0x[0-9a-f]+ against 0x[0-9a-f]+$/);
});

test('the committed kernel bytes are native/batch-norm.wat assembled', { skip: hasWat2wasm() ? false : 'wat2wasm (Debian: wabt) is not installed; CI installs it' }, () => {
  // as scripts/build-batch-norm.mjs assembles it
  const dir = mkdtempSync(join(tmpdir(), 'defer-wat-'));
  execFileSync('wat2wasm', ['--enable-all', join(ROOT, 'native', 'batch-norm.wat'), '-o', join(dir, 'm.wasm')]);
  const bytes = readFileSync(join(dir, 'm.wasm'));
  rmSync(dir, { recursive: true });
  assert.equal(Buffer.from(BATCH_NORM_WASM, 'base64').toString('hex'), bytes.toString('hex'), 'run node scripts/build-batch-norm.mjs');
  assert.match(readFileSync(join(ROOT, 'lib', 'model', 'batch-norm-wasm.ts'), 'utf8'), /Generated by scripts\/build-batch-norm\.mjs/);
});

function hasWat2wasm(): boolean {
  try {
    execFileSync('wat2wasm', ['--version'], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}
