// What computing convolutions as matrix products (lib/model/conv-as-matmul.ts) costs in time, in one plain process:
// the whole model as one stage built as a node builds it, twice (the engine's convolutions, and the default), on the
// same frame, alternating, in rounds (this machine's noise is as large as the effect). Checks first that both give
// the same bits.
// usage: node scripts/conv-as-matmul-ab.mjs [MODEL] [RUNS] [ROUNDS]   (after npm run build; MODEL: a zoo name or a
// model.json folder, default resnet50; RUNS per round and variant, default 8; ROUNDS 3)
const { initEngine, tf } = await import('../dist/lib/model/engine.js');
const { loadFlatModel } = await import('../dist/lib/model/model-source.js');
const { buildLayersStage } = await import('../dist/lib/model/partition.js');
const { syntheticFrames } = await import('../dist/lib/model/synthetic-frames.js');

const [model = 'resnet50', n = '8', r = '3'] = process.argv.slice(2);
await initEngine('wasm');
const flat = await loadFlatModel(model);
const [span] = flat.spans([]);
const frame = syntheticFrames(flat.inputShape, 1, 3)[0];
const x = tf.tensor(frame.data, frame.shape);
const build = async (plainConvolutions) => {
  const { specs, blob } = flat.stageWeights(span);
  const stage = await buildLayersStage(flat.stageTopology(span), specs, blob, { plainConvolutions });
  stage.runReleasing(x).output.dispose(); // as a node warms up: the packed weights released
  return stage;
};
const plain = await build(true);
const products = await build(false);
const bits = (s) => {
  const y = s.run(x);
  const b = new Uint32Array(y.dataSync().slice().buffer);
  y.dispose();
  return b;
};
const a = bits(plain);
const b = bits(products);
console.log(`${model}: the same bits both ways: ${a.length === b.length && a.every((v, i) => v === b[i])}`);
const time = (s) => {
  const t0 = performance.now();
  s.run(x).dispose();
  return performance.now() - t0;
};
for (let round = 1; round <= Number(r); round++) {
  let p = 0;
  let m = 0;
  for (let i = 0; i < Number(n); i++) {
    p += time(plain);
    m += time(products);
  }
  console.log(`round ${round}: the engine's convolutions ${(p / n).toFixed(1)} ms/frame, as matrix products ${(m / n).toFixed(1)} ms/frame: ${(m / p).toFixed(2)}x`);
}
