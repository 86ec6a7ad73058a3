// The compute-only ceiling of N engines on this machine: the whole model run in one plain process, then in N
// processes side by side (no transport, no MQTT), each on its own frames. Prints each process's ms per frame and
// the throughput of N together over one alone: what replicas could give here at the most.
// usage: node scripts/compute-ceiling.mjs [MODEL] [N] [FRAMES]   (after npm run build; MODEL: a zoo name or a
// model.json folder, default the Teachable Machine fixture; N default 2; FRAMES per process, default 200)
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const [model = 'test/fixtures/models/tm-aircraft', n = '2', frames = '200', role] = process.argv.slice(2);

if (role === 'worker') {
  const { initEngine, tf } = await import('../dist/lib/model/engine.js');
  const { loadFlatModel } = await import('../dist/lib/model/model-source.js');
  const { syntheticFrames } = await import('../dist/lib/model/synthetic-frames.js');
  await initEngine('auto');
  const flat = await loadFlatModel(model);
  const inputs = syntheticFrames(flat.inputShape, 10, 3);
  const once = async (f) => {
    const y = tf.tidy(() => flat.run(tf.tensor(f.data, f.shape, 'float32')));
    await y.data();
    y.dispose();
  };
  for (let i = 0; i < 3; i++) await once(inputs[i]);
  const t0 = performance.now();
  for (let i = 0; i < Number(frames); i++) await once(inputs[i % inputs.length]);
  console.log(((performance.now() - t0) / Number(frames)).toFixed(2));
} else {
  const self = fileURLToPath(import.meta.url);
  const one = Number(execFileSync(process.execPath, [self, model, '1', frames, 'worker'], { encoding: 'utf8' }));
  const together = await Promise.all(
    Array.from(
      { length: Number(n) },
      () =>
        new Promise((resolve, reject) => {
          const child = spawn(process.execPath, [self, model, n, frames, 'worker'], { stdio: ['ignore', 'pipe', 'inherit'] });
          let out = '';
          child.stdout.on('data', (d) => (out += d));
          child.on('exit', (code) => (code === 0 ? resolve(Number(out)) : reject(new Error(`a worker process exited with code ${code}`))));
        }),
    ),
  );
  const ratio = together.reduce((a, ms) => a + 1 / ms, 0) / (1 / one);
  console.log(`${model}: one process ${one} ms per frame; ${n} side by side ${together.join(', ')} ms; ${ratio.toFixed(2)}x one alone`);
}
