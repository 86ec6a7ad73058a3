/**
 * The SIMD batch normalisation against the wasm engine's own kernel (lib/model/batch-norm-kernel.ts): each model
 * whole, one frame after another as the single-process baseline runs it, in fresh processes alternating the two
 * kernels (DEFER_STOCK_BATCH_NORM=1 keeps the engine's), and whether the outputs are bit-identical.
 *
 *   node dist/bench/batch-norm.js [--rounds 3] [model:frames ...]
 *   (default: the Teachable Machine MobileNetV2 of the fixtures 200 frames, mobilenet 60, resnet50 15; about 3 min)
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { initEngine, tf } from '../lib/model/engine.js';
import { loadFlatModel } from '../lib/model/model-source.js';
import { syntheticFrames } from '../lib/model/synthetic-frames.js';

const HERE = fileURLToPath(import.meta.url);
const TM = join(dirname(HERE), '..', '..', 'test', 'fixtures', 'models', 'tm-aircraft');

/** In a child: ms per frame of the whole model and a hash of its outputs, as one JSON line. */
async function child(model: string, frames: number): Promise<void> {
  await initEngine('wasm');
  const flat = await loadFlatModel(model);
  const inputs = syntheticFrames(flat.inputShape, 8, 3, -1, 1);
  const run = async (i: number) => {
    const f = inputs[i % inputs.length];
    const out = tf.tidy(() => flat.run(tf.tensor(f.data as Float32Array, f.shape, 'float32')));
    const data = (await out.data()) as Float32Array;
    out.dispose();
    return data;
  };
  const hash = createHash('sha256');
  for (let i = 0; i < inputs.length; i++) hash.update(await run(i));
  const t0 = performance.now();
  for (let i = 0; i < frames; i++) await run(i);
  process.stdout.write(`${JSON.stringify({ ms: (performance.now() - t0) / frames, outputs: hash.digest('hex').slice(0, 16) })}\n`);
}

function main(): void {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { rounds: { type: 'string', default: '3' } } });
  const cases = positionals.length ? positionals : [`${TM}:200`, 'mobilenet:60', 'resnet50:15'];
  const rows = ['| model | round | engine kernel ms/frame | SIMD kernel ms/frame | ratio | outputs identical |', '| --- | --- | --- | --- | --- | --- |'];
  for (let r = 1; r <= Number(values.rounds); r++) {
    for (const c of cases) {
      const [model, frames = '30'] = c.split(/:(?=\d+$)/);
      const once = (stock: boolean) =>
        JSON.parse(execFileSync(process.execPath, [HERE, '--child', model, frames], { encoding: 'utf8', env: { ...process.env, DEFER_STOCK_BATCH_NORM: stock ? '1' : '' } }).trim()) as {
          ms: number;
          outputs: string;
        };
      const a = once(true);
      const b = once(false);
      rows.push(`| ${model.replace(/^.*\//, '')} | ${r} | ${a.ms.toFixed(1)} | ${b.ms.toFixed(1)} | ${(a.ms / b.ms).toFixed(2)}x | ${a.outputs === b.outputs ? 'yes' : 'NO'} |`);
      process.stderr.write(`${rows.at(-1)}\n`);
    }
  }
  process.stdout.write(`${rows.join('\n')}\n`);
}

if (process.argv[2] === '--child') await child(process.argv[3], Number(process.argv[4]));
else main();
