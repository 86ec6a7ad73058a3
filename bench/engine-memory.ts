/**
 * What the wasm engine keeps for a convolution and for a matrix product once it has run them: the growth of
 * the engine's allocations on the first run, and on a second (docs/memory.md, "What the
 * engine keeps"). Allocations are read as the address a large request lands at: the heap is first grown with
 * room to spare, so that request always takes the free space above everything allocated.
 *
 * Each operation runs in a process of its own, so that no hole left by another is reused.
 *
 *   node dist/bench/engine-memory.js   (about 5 s; prints a table)
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { convAsMatMul } from '../lib/model/conv-as-matmul.js';
import { initEngine, tf } from '../lib/model/engine.js';

interface WasmModule {
  _malloc(n: number): number;
  _free(p: number): void;
}

const MB = 1e6;

const CASES: { name: string; weight: number[]; run: (wt: tf.Tensor, b: tf.Tensor) => tf.Tensor }[] = [
  {
    name: 'conv 3x3, 512 -> 512, 7x7 input',
    weight: [3, 3, 512, 512],
    run: (f, b) => tf.fused.conv2d({ x: tf.zeros([1, 7, 7, 512]) as tf.Tensor4D, filter: f as tf.Tensor4D, bias: b, pad: 'same', strides: 1 }),
  },
  {
    name: 'conv 1x1, 1024 -> 2048, 14x14 input, stride 2',
    weight: [1, 1, 1024, 2048],
    run: (f, b) => tf.fused.conv2d({ x: tf.zeros([1, 14, 14, 1024]) as tf.Tensor4D, filter: f as tf.Tensor4D, bias: b, pad: 'valid', strides: 2 }),
  },
  {
    name: 'conv 3x3, 256 -> 256, 14x14 input',
    weight: [3, 3, 256, 256],
    run: (f, b) => tf.fused.conv2d({ x: tf.zeros([1, 14, 14, 256]) as tf.Tensor4D, filter: f as tf.Tensor4D, bias: b, pad: 'same', strides: 1 }),
  },
  { name: 'the same conv 3x3, 512 -> 512, as a matrix product (conv-as-matmul.ts)', weight: [3, 3, 512, 512], run: (f, b) => asProduct(f, b, [7, 7, 512], 1, 'same') },
  { name: 'the same conv 1x1, stride 2, as a matrix product', weight: [1, 1, 1024, 2048], run: (f, b) => asProduct(f, b, [14, 14, 1024], 2, 'valid') },
  { name: 'depthwise 3x3, 1024 channels', weight: [3, 3, 1024, 1], run: (f) => tf.depthwiseConv2d(tf.zeros([1, 7, 7, 1024]) as tf.Tensor4D, f as tf.Tensor4D, 1, 'same') },
  { name: 'matrix product 2048 -> 1000 (dense)', weight: [2048, 1000], run: (f, b) => tf.fused.matMul({ a: tf.zeros([1, 2048]) as tf.Tensor2D, b: f as tf.Tensor2D, bias: b }) },
];

/** A Keras convolution layer (not built: it allocates nothing) that reads `f` and `b` as its kernel and bias, computed as a matrix product. */
function asProduct(f: tf.Tensor, b: tf.Tensor, input: number[], strides: number, padding: 'same' | 'valid'): tf.Tensor {
  const layer = tf.layers.conv2d({ filters: f.shape[3]!, kernelSize: f.shape[0]!, strides, padding });
  Object.assign(layer, { kernel: { read: () => f }, bias: { read: () => b } });
  return convAsMatMul(layer, tf.zeros([1, ...input]));
}

function main(): void {
  const rows = ['| operation | weight MB | its first run adds MB | x weight | a second run adds MB |', '| --- | --- | --- | --- | --- |'];
  for (let i = 0; i < CASES.length; i++) rows.push(execFileSync(process.execPath, [fileURLToPath(import.meta.url), String(i)], { encoding: 'utf8' }).trim());
  process.stdout.write(`${rows.join('\n')}\n`);
}

async function measure(c: (typeof CASES)[number]): Promise<string> {
  await initEngine('wasm');
  const w = (tf.backend() as unknown as { wasm: WasmModule }).wasm;
  const spare = w._malloc(1.5e9);
  w._free(spare);
  /** the start of the free space above every allocation */
  const top = () => {
    const p = w._malloc(1e9);
    w._free(p);
    return p;
  };
  const f = tf.randomUniform(c.weight);
  const b = tf.randomUniform([c.weight[c.weight.length - 1] * (c.weight.length === 4 && c.weight[3] === 1 ? c.weight[2] : 1)]);
  const bytes = f.size * 4;
  const t0 = top();
  tf.tidy(() => {
    c.run(f, b);
  });
  const added = top() - t0;
  // a second run adds nothing: the engine keeps what the first made until the weight is disposed
  tf.tidy(() => {
    c.run(f, b);
  });
  const again = top() - t0 - added;
  return `| ${c.name} | ${(bytes / MB).toFixed(2)} | ${(added / MB).toFixed(2)} | ${(added / bytes).toFixed(2)} | ${(again / MB).toFixed(2)} |`;
}

const which = process.argv[2];
(which === undefined ? Promise.resolve(main()) : measure(CASES[Number(which)]).then((row) => void process.stdout.write(`${row}\n`))).catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
