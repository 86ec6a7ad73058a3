/**
 * Pixel frames: an image model's frames as uint8 pixels, which stage 0's node normalises as its assignment's
 * inputImage says. The node's floats must be the local reference's bit for bit (one `normalise` for both), and
 * pixels where a stage cannot take them are refused with a reason.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig } from '../../config/schema.js';
import { runFramesFor } from '../../dispatcher/run/run-frames.js';
import { type ComputeContext, type ComputeOutcome, computeActivations, FrameComputeError, type RunningStage } from '../../edge-node/stage.js';
import { initEngine, tf } from '../../lib/model/engine.js';
import { normalise } from '../../lib/model/preprocess.js';
import { syntheticPixels } from '../../lib/model/synthetic-frames.js';
import { type Assignment, decodeActivation, decodeTensor, encodeActivation, encodeTensor, type ImageInput, type RawTensor } from '../../lib/protocol/index.js';

const image: ImageInput = { height: 4, width: 5, channels: 3, range: [-1, 1], channelOrder: 'bgr', resize: 'crop', pad: 0, maxPixels: 1000 };

function stage(withImage: boolean, stageIndex = 0): RunningStage {
  const assignment = {
    deployment: 'd1',
    pipeline: 'p',
    stage: stageIndex,
    stageCount: 1,
    inputShape: [4, 5, 3],
    inputDtype: 'float32',
    outputTopic: 'defer/p/results/x',
    codec: 'none',
    ...(withImage ? { inputImage: image } : {}),
  } as unknown as Assignment;
  // the identity: the stage's output is the input it was given, as floats
  return { assignment, model: { run: (x: tf.Tensor) => tf.mul(x, 1) } as never };
}

const ctx = { nodeId: 'n1', maxMessageBytes: 1 << 20, slowdown: 1, processCpu: false };
/** One frame through the stage: its outcome, or the error it failed with, thrown. */
async function computeActivation(st: RunningStage, payload: Buffer, recvAt: number, c: ComputeContext): Promise<ComputeOutcome> {
  const [r] = await computeActivations(st, [{ payload, recvAt }], c, 1);
  if ('error' in r) throw r.error;
  return r;
}

const frameOf = (t: RawTensor, stageIndex = 0) =>
  Buffer.from(encodeActivation({ deployment: 'd1', frame: 'f1', device: 'dev', stage: stageIndex, sentAt: 0, hops: [], tensor: encodeTensor(t, { codec: 'lz4' }) }));

test('stage 0 normalises pixel frames as its inputImage says: the floats of the local reference, bit for bit', async () => {
  await initEngine('wasm');
  const [px] = syntheticPixels(image, 1, 5);
  assert.equal(px.dtype, 'uint8');
  assert.deepEqual(px.shape, [1, 4, 5, 3]);
  const out = await computeActivation(stage(true), frameOf(px), 0, ctx);
  const got = decodeTensor(decodeActivation(out.body!, 1 << 20).tensor!, 1 << 20);
  assert.deepEqual(got.shape, [1, 4, 5, 3]);
  assert.deepEqual([...(got.data as Float32Array)], [...normalise(px.data as Uint8Array, image)]);
  // bgr: the first value is the third channel's pixel
  assert.equal((got.data as Float32Array)[0], Math.fround(-1 + (2 / 255) * (px.data as Uint8Array)[2]));
});

test('pixels where they cannot go are refused with the reason: a stage without inputImage, a wrong size', async () => {
  await initEngine('wasm');
  const [px] = syntheticPixels(image, 1, 5);
  await assert.rejects(computeActivation(stage(false), frameOf(px), 0, ctx), (e: Error) => e instanceof FrameComputeError && /came as uint8 pixels/.test(e.message));
  const [small] = syntheticPixels({ height: 4, width: 4, channels: 3 }, 1, 5);
  await assert.rejects(computeActivation(stage(true), frameOf(small), 0, ctx), (e: Error) => /pixels of frame f1 have shape \[1,4,4,3\], stage 0 takes \[batch,4,5,3\]/.test(e.message));
});

test('defer up frames: pixels for an image model where the first hop is lossless, float32 otherwise', async () => {
  const flat = { inputShape: [4, 5, 3], inputDtype: 'float32' } as never;
  const cfg = (over: Record<string, unknown>) => loadConfig(undefined, { 'dispatcher.model': 'tiny', 'up.frames': 3, ...over }, {});
  const px = await runFramesFor(flat, cfg({}));
  assert.equal(px.frames[0].dtype, 'uint8');
  assert.deepEqual(px.image?.range, [0, 1]);
  assert.equal((await runFramesFor(flat, cfg({ 'up.pixelFrames': false }))).frames[0].dtype, 'float32');
  assert.equal((await runFramesFor(flat, cfg({ 'dispatcher.precision': ['float16'] }))).frames[0].dtype, 'float32');
  assert.equal((await runFramesFor({ inputShape: [10], inputDtype: 'float32' } as never, cfg({}))).frames[0].dtype, 'float32');
});

test('normalise: every pixel value of every channel as its own arithmetic gives it, in double precision stored as float32', () => {
  const pixels = new Uint8Array(256 * 3 * 2);
  for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 7 + (i >> 8)) & 255; // every value in every channel
  const specs: Pick<ImageInput, 'channels' | 'range' | 'mean' | 'std' | 'channelOrder'>[] = [
    { channels: 3, range: [-1, 1] as [number, number], channelOrder: 'rgb' as const },
    { channels: 3, range: [0, 1] as [number, number], channelOrder: 'bgr' as const },
    { channels: 3, range: [0, 1] as [number, number], channelOrder: 'rgb' as const, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
    { channels: 1, range: [0, 255] as [number, number], channelOrder: 'rgb' as const },
  ];
  for (const spec of specs) {
    const got = normalise(pixels, spec);
    const c = spec.channels;
    const want = new Float32Array(pixels.length);
    for (let i = 0; i < pixels.length; i++) {
      const k = i % c;
      const src = pixels[i - k + (c === 3 && spec.channelOrder === 'bgr' ? c - 1 - k : k)];
      want[i] = spec.mean && spec.std ? (src / 255 - spec.mean[k]) / spec.std[k] : spec.range[0] + ((spec.range[1] - spec.range[0]) / 255) * src;
    }
    assert.deepEqual(Buffer.from(got.buffer), Buffer.from(want.buffer), JSON.stringify(spec));
  }
});
