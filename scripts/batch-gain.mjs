// What batches gain in one plain process: the whole model on one engine, a frame a call against B frames a call,
// on the same frames, in rounds (this machine's noise is as large as the effect). Checks first that each frame's
// output in the batch is its output alone, bit for bit.
// usage: node scripts/batch-gain.mjs [MODEL] [B] [FRAMES] [ROUNDS]   (after npm run build; MODEL: a zoo name or a
// model.json folder, default the Teachable Machine fixture; B default 8; FRAMES per round, default 400; ROUNDS 3)
const { initEngine, tf } = await import('../dist/lib/model/engine.js');
const { loadFlatModel } = await import('../dist/lib/model/model-source.js');
const { syntheticFrames } = await import('../dist/lib/model/synthetic-frames.js');

const [model = 'test/fixtures/models/tm-aircraft', b = '8', n = '400', r = '3'] = process.argv.slice(2);
const B = Number(b);
const frames = Math.max(B, Math.floor(Number(n) / B) * B);
await initEngine('auto');
const flat = await loadFlatModel(model);
const inputs = syntheticFrames(flat.inputShape, B, 3);
const run = (fs) => {
  const data = new Float32Array(fs.reduce((a, f) => a + f.data.length, 0));
  let at = 0;
  for (const f of fs) {
    data.set(f.data, at);
    at += f.data.length;
  }
  return tf.tidy(() => flat.run(tf.tensor(data, [fs.length, ...fs[0].shape.slice(1)], 'float32'))).dataSync();
};
const alone = inputs.map((f) => run([f]));
const together = run(inputs);
const per = together.length / B;
const same = alone.every((a, i) => Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(together.buffer, together.byteOffset + i * per * 4, per * 4)) === 0);
console.log(`${model}: batch of ${B} bit for bit each frame alone: ${same}`);
for (let round = 1; round <= Number(r); round++) {
  let t0 = performance.now();
  for (let i = 0; i < frames; i++) run([inputs[i % B]]);
  const one = (performance.now() - t0) / frames;
  t0 = performance.now();
  for (let i = 0; i < frames / B; i++) run(inputs);
  const many = (performance.now() - t0) / frames;
  console.log(`round ${round}: a frame a call ${one.toFixed(2)} ms/frame, ${B} a call ${many.toFixed(2)} ms/frame: ${(one / many).toFixed(2)}x`);
}
