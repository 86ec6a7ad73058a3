/**
 * `npm run bench`: throughput of the chain against the single-process
 * baseline measured in the same run, and the activation codec's speed.
 * Quick mode (default): the tiny CNN and MobileNet on 1-2 nodes. `--full`: ResNet50 on 1-3 nodes.
 * Writes bench/results/<date>-<host>.json and .md.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, hostname } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { runUp } from '../cli/up.js';
import { loadConfig } from '../config/schema.js';
import { initEngine, tf } from '../lib/engine.js';
import { setLogLevel } from '../lib/log.js';
import { loadFlatModel } from '../lib/model-source.js';
import { round } from '../lib/stats.js';
import { decodeTensor, encodeTensor } from '../lib/tensor-codec.js';

interface CodecRow {
  activation: string;
  rawBytes: number;
  wireBytes: number;
  ratio: number;
  encodeMBps: number;
  decodeMBps: number;
}

async function codecBench(): Promise<CodecRow[]> {
  const flat = await loadFlatModel('resnet50');
  const rows: CodecRow[] = [];
  const cuts = ['conv2_block3_out', 'conv3_block4_out', 'conv4_block6_out'];
  const probe = tf.model({ inputs: flat.model.inputs, outputs: cuts.map((c) => flat.model.getLayer(c).output as tf.SymbolicTensor) });
  const x = tf.randomUniform([1, ...flat.inputShape], 0, 1, 'float32', 1);
  const outs = probe.predict(x) as tf.Tensor[];
  for (let i = 0; i < cuts.length; i++) {
    const data = (await outs[i].data()) as Float32Array;
    const t = { dtype: 'float32' as const, shape: [...outs[i].shape], data };
    const reps = 20;
    let t0 = performance.now();
    let w = encodeTensor(t);
    for (let r = 1; r < reps; r++) w = encodeTensor(t);
    const enc = (performance.now() - t0) / reps;
    t0 = performance.now();
    for (let r = 0; r < reps; r++) decodeTensor(w);
    const dec = (performance.now() - t0) / reps;
    rows.push({
      activation: `${cuts[i]} [${t.shape.slice(1)}]`,
      rawBytes: data.byteLength,
      wireBytes: w.data.byteLength,
      ratio: round(data.byteLength / w.data.byteLength, 2),
      encodeMBps: round(data.byteLength / 1e6 / (enc / 1000), 0),
      decodeMBps: round(data.byteLength / 1e6 / (dec / 1000), 0),
    });
  }
  tf.dispose([x, ...outs]);
  flat.model.dispose();
  return rows;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { full: { type: 'boolean' }, frames: { type: 'string' } } });
  setLogLevel('warn');
  const backend = await initEngine('auto');
  const runs: { model: string; nodes: number; frames: number[] }[] = values.full
    ? [{ model: 'resnet50', nodes: 3, frames: [40] }]
    : [
        { model: 'tiny', nodes: 2, frames: [100] },
        { model: 'mobilenet', nodes: 2, frames: [20] },
      ];
  const pipeline: Record<string, unknown>[] = [];
  for (const r of runs) {
    for (let n = 1; n <= r.nodes; n++) {
      const frames = values.frames ? Number(values.frames) : r.frames[0];
      const config = loadConfig(undefined, { 'dispatcher.model': r.model, 'up.nodes': n, 'up.frames': frames, 'broker.port': 0, logLevel: 'warn' });
      process.stderr.write(`bench: ${r.model} on ${n} node(s), ${frames} frames\n`);
      const s = await runUp(config, { progress: () => undefined });
      pipeline.push({
        model: r.model,
        nodes: n,
        frames,
        throughputFps: s.throughputFps,
        singleProcessFps: s.singleProcess?.throughputFps ?? null,
        speedup: s.speedupVsSingleProcess,
        p50Ms: s.latencyMs.p50,
        p95Ms: s.latencyMs.p95,
        stageMs: s.stages.map((st) => st.meanComputeMs),
        bytesPerHop: s.bytesPerFramePerHop.map((h) => h.bytes),
        maxAbsDiffVsLocal: s.maxAbsDiffVsLocal,
      });
    }
  }
  process.stderr.write('bench: codec\n');
  const codec = await codecBench();
  const date = new Date().toISOString().slice(0, 10);
  const host = hostname();
  const machine = { host, cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', node: process.version, backend };
  const result = { date, mode: values.full ? 'full' : 'quick', machine, pipeline, codec };
  const dir = join('bench', 'results');
  await mkdir(dir, { recursive: true });
  const base = join(dir, `${date}-${host}`);
  await writeFile(`${base}.json`, JSON.stringify(result, null, 2) + '\n');
  const md = [
    `# Benchmark ${date} on ${host} (${machine.cpus} cores, ${machine.cpu}, Node ${machine.node}, backend ${backend}, ${result.mode} mode)`,
    '',
    'Speed-up is against the whole model run in one process on the same frames, measured in the same run.',
    '',
    '| model | nodes | frames | frames/s | single-process frames/s | speed-up | p50 ms | p95 ms | stage ms | maxAbsDiffVsLocal |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...pipeline.map((p) => `| ${p.model} | ${p.nodes} | ${p.frames} | ${p.throughputFps} | ${p.singleProcessFps} | ${p.speedup}x | ${p.p50Ms} | ${p.p95Ms} | ${(p.stageMs as number[]).join(' / ')} | ${p.maxAbsDiffVsLocal} |`),
    '',
    '| ResNet50 activation | raw bytes | LZ4 bytes | ratio | encode MB/s | decode MB/s |',
    '| --- | --- | --- | --- | --- | --- |',
    ...codec.map((c) => `| ${c.activation} | ${c.rawBytes} | ${c.wireBytes} | ${c.ratio} | ${c.encodeMBps} | ${c.decodeMBps} |`),
    '',
  ].join('\n');
  await writeFile(`${base}.md`, md);
  process.stdout.write(md);
  process.stderr.write(`bench: wrote ${base}.json and ${base}.md\n`);
}

main().then(
  () => setImmediate(() => process.exit(0)),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
