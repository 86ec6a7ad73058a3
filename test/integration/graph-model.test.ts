/**
 * Graph models (TensorFlow.js `graph-model` files, as converted from a
 * SavedModel or TF Hub): the real MobileNetV2 graph split into 2 and 3
 * stages gives the whole graph's output bit for bit, each stage holding only
 * its own weights; bad cut names and graphs that cannot be split are refused
 * with the reason; `defer up` runs it end to end.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { promisify } from 'node:util';
import { CutError } from '../../lib/core/errors.js';
import { setLogLevel } from '../../lib/core/log.js';
import { initEngine, tf } from '../../lib/model/engine.js';
import type { FlatModel } from '../../lib/model/flat-model.js';
import { loadFlatModel } from '../../lib/model/model-source.js';
import { preprocessImage } from '../../lib/model/preprocess.js';
import { CLI, freePort, IMAGES, REAL_MODELS, ROOT, runChained, sameBits, waitUntil } from '../helpers/common.js';

const run = promisify(execFile);
const GRAPH = join(REAL_MODELS, 'graph-mobilenet-v2');

before(async () => {
  setLogLevel('warn');
  await initEngine('wasm');
});

async function whole(flat: FlatModel, x: tf.Tensor): Promise<Float32Array> {
  const y = flat.run(x);
  const out = (await y.data()) as Float32Array;
  y.dispose();
  return out;
}

test('real graph model: 2 and 3 stages give the whole graph output bit for bit; each stage holds only its nodes and its weights, still uint8-quantized', { timeout: 120_000 }, async () => {
  const flat = await loadFlatModel(GRAPH);
  assert.equal(flat.format, 'graph-model');
  assert.deepEqual([flat.inputShape, flat.outputShape], [[224, 224, 3], [5]]);
  assert.equal(flat.graph.layers.length, 70, 'the 178 nodes less the 108 constants');
  const photo = await preprocessImage(readFileSync(join(IMAGES, 'n07716906_spaghetti_squash.JPEG')), {
    height: 224,
    width: 224,
    channels: 3,
    range: [0, 1],
    channelOrder: 'rgb',
    resize: 'crop',
    pad: 0,
    maxPixels: 1e7,
  });
  const inputs = [tf.tensor(photo.data as Float32Array, photo.shape, 'float32'), tf.randomUniform([1, 224, 224, 3], 0, 1, 'float32', 3)];
  const outs = await Promise.all(inputs.map((x) => whole(flat, x)));
  assert.ok(!sameBits(outs[0], outs[1]), 'two inputs, two outputs');
  const shardBytes = statSync(join(GRAPH, 'group1-shard1of2')).size + statSync(join(GRAPH, 'group1-shard2of2')).size;
  const manifest = JSON.parse(readFileSync(join(GRAPH, 'model.json'), 'utf8')).weightsManifest[0].weights as { name: string; quantization?: { dtype: string } }[];
  for (const cuts of [['expanded_conv_8/add'], ['expanded_conv_4/add', 'expanded_conv_12/add']]) {
    for (const [i, x] of inputs.entries()) assert.ok(sameBits(await runChained(flat, cuts, x), outs[i]), `${cuts} input ${i}`);
    const spans = flat.spans(cuts);
    const weights = spans.map((s) => flat.stageWeights(s));
    assert.equal(
      weights.reduce((n, w) => n + w.blob.byteLength, 0),
      shardBytes,
      'the stages weight bytes add up to the shards',
    );
    assert.deepEqual(
      spans.map((s) => s.weightBytes),
      weights.map((w) => w.blob.byteLength),
    );
    const names = weights.flatMap((w) => w.specs.map((s) => s.name));
    assert.equal(new Set(names).size, manifest.length, 'every weight in exactly one stage');
    assert.ok(weights.every((w) => w.specs.every((s) => s.quantization?.dtype === 'uint8')));
    spans.forEach((span, k) => {
      const topo = flat.stageTopology(span) as { modelTopology: { node: { name: string; op: string }[] }; input: string; output: string };
      const ops = topo.modelTopology.node.filter((n) => n.op !== 'Const' && n.op !== 'Placeholder').map((n) => n.name);
      assert.deepEqual(new Set(ops), new Set(span.layers.filter((n) => n !== 'input')), `stage ${k} holds only its own nodes`);
      const consts = topo.modelTopology.node.filter((n) => n.op === 'Const').map((n) => n.name);
      assert.deepEqual(new Set(consts), new Set(weights[k].specs.map((s) => s.name)), `stage ${k} holds only its own constants`);
      assert.equal(topo.output, span.last);
    });
  }
  tf.dispose(inputs);
  flat.dispose();
});

test('graph model: bad cut names are refused with the reason and the valid cuts near them; unique suffixes are accepted', { timeout: 60_000 }, async () => {
  const flat = await loadFlatModel(GRAPH);
  const full = flat.validCutNames().find((n) => n.endsWith('/expanded_conv_8/add'))!;
  assert.deepEqual(
    flat.spans(['expanded_conv_8/add']).map((s) => s.last),
    [full, 'Identity'],
  );
  assert.equal(flat.spans([full])[0].last, full, 'the full name works too');
  const cases: [string, RegExp][] = [
    ['expanded_conv_8/ad', /unknown node 'expanded_conv_8\/ad'.*Valid cuts with similar names: expanded_conv_8\/add/],
    [
      'expanded_conv_8/expand/Relu6',
      /cannot cut after node 'expanded_conv_8\/expand\/Relu6': 2 tensors cross this point \(expanded_conv_7\/add, expanded_conv_8\/expand\/Relu6\).*Valid cuts near it: .*expanded_conv_7\/add, expanded_conv_8\/add/,
    ],
    ['add', /cut 'add' is ambiguous: 10 node names end with it \(expanded_conv_2\/add, /],
    ['input', /the model's input \(Placeholder\)/],
    ['Identity', /the model's last node/],
  ];
  for (const [cut, re] of cases) {
    assert.throws(
      () => flat.spans([cut]),
      (e: unknown) => e instanceof CutError && re.test(e.message),
      cut,
    );
  }
  flat.dispose();
});

/** A graph-model file with these nodes and no weights, in a fresh folder. */
function graphFile(nodes: Record<string, unknown>[], extra: Record<string, unknown> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'defer-graph-'));
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'model.json'), JSON.stringify({ format: 'graph-model', modelTopology: { node: nodes, versions: { producer: 1 }, ...extra }, weightsManifest: [] }));
  return dir;
}

const input = (name = 'x', dims = [-1, 4]) => ({ name, op: 'Placeholder', attr: { dtype: { type: 'DT_FLOAT' }, shape: { shape: { dim: dims.map((d) => ({ size: String(d) })) } } } });
const op = (name: string, o: string, inputs: string[], attr: Record<string, unknown> = { T: { type: 'DT_FLOAT' } }) => ({ name, op: o, input: inputs, attr });

test('graphs that cannot be split are refused naming the reason: control flow, two inputs, two outputs, unknown shapes; an int32 tensor is no cut', { timeout: 60_000 }, async () => {
  const refusals: [string, RegExp][] = [
    [
      graphFile([input(), op('p', 'Const', [], { dtype: { type: 'DT_BOOL' }, value: {} }), op('sw', 'Switch', ['x', 'p']), op('y', 'Relu', ['sw'])]),
      /node 'sw' is a 'Switch' \(control flow\).*cannot be split/,
    ],
    [graphFile([input(), op('y', 'Relu', ['x'])], { library: { function: [{ signature: { name: 'cond_true' } }] } }), /function\(s\) in its library \(control flow/],
    [graphFile([input('a'), input('b'), op('y', 'AddV2', ['a', 'b'])]), /2 inputs \(a, b\); only single-input graphs/],
    [graphFile([input(), op('r', 'Relu', ['x']), op('s', 'Sigmoid', ['x'])]), /2 outputs \(r, s\); only single-output graphs/],
    [graphFile([input('x', [-1, -1, 3]), op('y', 'Relu', ['x'])]), /input 'x' has shape \[-1,-1,3\].*every dimension but the batch is known/],
  ];
  for (const [dir, re] of refusals) await assert.rejects(loadFlatModel(dir), (e: Error) => re.test(e.message), re.source);
  // a graph that can be split: x -> relu -> cast to int32 -> cast back -> sigmoid
  const ok = graphFile([
    input(),
    op('r', 'Relu', ['x']),
    op('i', 'Cast', ['r'], { SrcT: { type: 'DT_FLOAT' }, DstT: { type: 'DT_INT32' } }),
    op('f', 'Cast', ['i'], { SrcT: { type: 'DT_INT32' }, DstT: { type: 'DT_FLOAT' } }),
    op('y', 'Sigmoid', ['f']),
  ]);
  const flat = await loadFlatModel(ok);
  assert.deepEqual(flat.validCutNames(), ['r', 'f']);
  assert.throws(() => flat.spans(['i']), /cannot cut after node 'i': its output is int32, and only float32 activations cross a cut/);
  const x = tf.tensor([[-2.5, -1, 0.5, 3.7]]);
  assert.ok(sameBits(await runChained(flat, ['r', 'f'], x), await whole(flat, x)));
  x.dispose();
  flat.dispose();
});

test('defer up --model <graph model> --nodes 2: bit-identical to the whole graph, speed-up reported; defer plan --list-cuts shows short and full names', { timeout: 180_000 }, async () => {
  const { stdout } = await run(process.execPath, [CLI, 'up', '--model', GRAPH, '--nodes', '2', '--shape', 'chain', '--frames', '20', '--json'], { cwd: ROOT, maxBuffer: 1 << 24 });
  const s = JSON.parse(stdout.trim().split('\n').at(-1)!);
  assert.deepEqual([s.frames, s.framesReturned, s.maxAbsDiffVsLocal, s.unit], [20, 20, 0, 'node']);
  assert.ok(s.speedupVsSingleProcess > 0);
  assert.equal(s.stages.length, 2);
  assert.ok(!s.stages[0].lastLayer.startsWith('StatefulPartitionedCall/'), `short names in the summary: ${s.stages[0].lastLayer}`);
  console.log(`# defer up, graph MobileNetV2 on 2 nodes: ${s.throughputFps} frames/s, ${s.speedupVsSingleProcess}x single process, cut after ${s.stages[0].lastLayer}`);
  const plan = await run(process.execPath, [CLI, 'plan', '--model', GRAPH, '--cut', 'expanded_conv_8/add', '--list-cuts'], { cwd: ROOT });
  assert.match(plan.stdout, /70 nodes, 4,300,775 parameters, 38 valid cut points/);
  assert.match(plan.stdout, /\n {2}expanded_conv_8\/add +StatefulPartitionedCall\/.*\/MobilenetV2\/expanded_conv_8\/add\n/);
});

test('defer up --serve --model <graph model>: defer sensor sends the real JPEG photos, every one answered through 2 nodes', { timeout: 180_000 }, async () => {
  const port = await freePort();
  const up = spawn(process.execPath, [CLI, 'up', '--serve', '--model', GRAPH, '--nodes', '2', '--shape', 'chain', '--port', String(port), '--json'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  up.stdout!.on('data', (d) => (log += d));
  up.stderr!.on('data', (d) => (log += d));
  try {
    await waitUntil(() => log.includes('"type":"serving"'), 120_000, 100);
    assert.match(log, /"type":"serving"/, log);
    const sensor = await run(process.execPath, [CLI, 'sensor', '--device', 'cam1', '--images', IMAGES, '--fps', '20', '--broker', `mqtt://127.0.0.1:${port}`, '--json'], {
      cwd: ROOT,
      maxBuffer: 1 << 24,
    });
    const lines = sensor.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const report = lines.at(-1).report;
    assert.deepEqual([report.sent, report.served, report.unanswered], [3, 3, 0]);
    assert.ok(lines.slice(0, -1).every((r: { ok: boolean; top: unknown[]; hops: unknown[] }) => r.ok && r.top.length === 5 && r.hops.length === 2));
  } finally {
    up.kill('SIGTERM');
    await new Promise((r) => (up.exitCode !== null ? r(null) : up.once('exit', r)));
  }
});
