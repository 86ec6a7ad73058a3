// A stage's resident memory at each step of a node's build, in a fresh process of its own: the weights read in
// 1 MB pieces into the engine (as from the weight cache), built, warmed up (the engine packs the weights and the
// node releases the originals), collected, then 5 frames. For each step: the process's RSS and its high-water
// mark (VmHWM), V8's heap and the array buffers outside it, all in MB. Used to measure memory changes to a node
// A/B (docs/memory.md): run it in a worktree of each commit, alternating, on the same saved stage.
//
// usage (after npm run build):
//   node scripts/stage-memory-phases.mjs save MODEL CUTS INDEX DIR   the stage's topology and weights, to DIR
//   node scripts/stage-memory-phases.mjs run DIR                      measure (a fresh process each time)
// CUTS: comma-separated cut names, or '' for the whole model; INDEX: which stage (0 first).
import { createHash } from 'node:crypto';
import { openSync, readFileSync, readSync, writeFileSync } from 'node:fs';

const [cmd, ...args] = process.argv.slice(2);
const { initEngine } = await import('../dist/lib/model/engine.js');
await initEngine('wasm');

const mb = (kb) => (kb / 1e3).toFixed(0);
function step(name) {
  const s = readFileSync('/proc/self/status', 'utf8');
  const m = process.memoryUsage();
  return `${name}: rss ${mb(+s.match(/VmRSS:\s+(\d+)/)[1])} hwm ${mb(+s.match(/VmHWM:\s+(\d+)/)[1])} v8 ${(m.heapUsed / 1e6).toFixed(0)} buffers ${(m.arrayBuffers / 1e6).toFixed(0)}`;
}

if (cmd === 'save') {
  const [model, cuts, index, dir] = args;
  const { loadFlatModel } = await import('../dist/lib/model/model-source.js');
  const flat = await loadFlatModel(model);
  const span = flat.spans(cuts ? cuts.split(',') : [])[Number(index)];
  const { specs, blob } = flat.stageWeights(span);
  writeFileSync(`${dir}/weights.bin`, blob);
  writeFileSync(`${dir}/stage.json`, JSON.stringify({ specs, topology: flat.stageTopology(span), inputShape: span.inputShape, stage: Number(index) }));
  console.log(`${model} stage ${index}: ${(blob.byteLength / 1e6).toFixed(1)} MB of weights in ${dir}`);
} else if (cmd === 'run') {
  const [dir] = args;
  const { tf } = await import('../dist/lib/model/engine.js');
  const { EngineWeights, BlobWeights } = await import('../dist/lib/model/weight-sink.js');
  const { buildStage, warmUp } = await import('../dist/edge-node/stage.js');
  const { collectGarbage } = await import('../dist/lib/core/gc.js');
  const stage = JSON.parse(readFileSync(`${dir}/stage.json`, 'utf8'));
  const out = [step('start')];
  const totalBytes = stage.specs.reduce((n, s) => n + s.bytes, 0);
  const sink = EngineWeights.tryFor(stage.specs) ?? new BlobWeights(totalBytes);
  const fd = openSync(`${dir}/weights.bin`, 'r');
  const piece = Buffer.allocUnsafe(1 << 20);
  const hash = createHash('sha256');
  for (let at = 0; at < totalBytes; ) {
    const n = readSync(fd, piece, 0, Math.min(piece.length, totalBytes - at), at);
    sink.write(at, piece.subarray(0, n));
    hash.update(piece.subarray(0, n));
    at += n;
  }
  collectGarbage();
  out.push(step('loaded'));
  const a = {
    stage: stage.stage,
    inputShape: stage.inputShape,
    inputDtype: 'float32',
    topology: JSON.stringify(stage.topology),
    modelFormat: 'layers-model',
    manifest: { specs: stage.specs, totalBytes, sha256: hash.digest('hex') },
  };
  const model = await buildStage(a, sink, {});
  collectGarbage();
  out.push(step('built'));
  const released = warmUp(a, model);
  out.push(`${step('warm')} (released ${(released / 1e6).toFixed(1)})`);
  collectGarbage();
  out.push(step('collected'));
  for (let i = 0; i < 5; i++) tf.tidy(() => void model.run(tf.randomUniform([1, ...stage.inputShape])));
  out.push(step('5 frames'));
  console.log(out.join(' | '));
} else {
  console.error('usage: node scripts/stage-memory-phases.mjs save MODEL CUTS INDEX DIR | run DIR');
  process.exit(2);
}
