/**
 * A node's stage: built from its assignment and verified weights, then one
 * activation at a time through it (decode and check, run, encode the output
 * with this node's hop appended). Pure of MQTT: the node publishes what this
 * returns.
 */
import { now } from '../lib/core/clock.js';
import { DeferError, errorMessage } from '../lib/core/errors.js';
import { tf } from '../lib/model/engine.js';
import type { StageModel } from '../lib/model/flat-model.js';
import { canReleasePacked } from '../lib/model/packed-weights.js';
import { buildLayersStage, type StageBuildOptions } from '../lib/model/partition.js';
import { pixelsToTensor, preprocessImage } from '../lib/model/preprocess.js';
import { buildStageModel } from '../lib/model/stage-model.js';
import { type BlobWeights, EngineWeights, type WeightSink } from '../lib/model/weight-sink.js';
import { type Activation, type Assignment, decodeActivation, decodeTensor, elementCount, encodeActivation, encodeTensor, type Hop, parseTopic, type RawTensor } from '../lib/protocol/index.js';

/** What a node keeps of its stage's weights in its engine (docs/memory.md, "How a node keeps it small"). */
export interface EngineOptions extends StageBuildOptions {
  /** keep the weights the engine packed as well as their packed copies (default: release them after the first frame) */
  keepPackedWeights?: boolean;
}

export interface RunningStage {
  assignment: Assignment;
  model: StageModel;
}

export interface ComputeContext {
  nodeId: string;
  maxMessageBytes: number;
  /** artificial slow-down factor (1: none) */
  slowdown: number;
  /** record the process's CPU time per frame in the hop (not on worker threads: the process's time is every thread's) */
  processCpu?: boolean;
}

/** The encoded activation for the next stage and where it goes; without `body`, the frame belonged to another deployment and was dropped. */
export interface ComputeOutcome {
  frame: string;
  deployment: string;
  body?: Buffer;
  /** the topic to publish `body` on: the frame's route (a replica of the next stage) or the assignment's output topic */
  topic?: string;
}

/**
 * Where this stage's output of `msg` goes: its route's entry for this stage (the replica of the next stage the
 * dispatcher chose), checked to be an input of the next stage of this pipeline; else the assignment's output.
 */
export function nextTopic(a: Assignment, msg: Activation): string {
  const last = a.stage === a.stageCount - 1;
  if (!msg.route || last) return a.outputTopic;
  const to = msg.route[a.stage];
  const t = to === undefined ? null : parseTopic(to);
  if (t?.pipeline !== a.pipeline || t.topic?.kind !== 'stage-in' || t.topic.stage !== a.stage + 1) {
    throw new DeferError(
      'E_ENVELOPE',
      `frame ${msg.frame}: its route sends stage ${a.stage}'s output to '${to ?? '(nothing)'}', which is not an input of stage ${a.stage + 1} of pipeline ${a.pipeline}`,
    );
  }
  return to!;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One activation as the node received it. */
export interface ActivationIn {
  payload: Buffer;
  recvAt: number;
}

/** Each activation's outcome, or the error that stopped it (one frame's bad input fails that frame alone). */
export type BatchOutcome = ComputeOutcome | { error: Error };

/** A frame decoded and checked, its input ready for the engine. */
interface Prepared {
  msg: Activation;
  input: RawTensor;
  topic: string;
  bytesIn: number;
  recvAt: number;
  t0: number;
  t1: number;
}

/**
 * Compute activations together: each is decoded and checked on its own (its input then has the stage's input
 * shape and type); those of the current deployment run through the stage as batches of at most `maxBatch` frames
 * (a stage whose batched output is not bit for bit its frames' own outputs gets 1, see batchesExactly), and each
 * frame's output is encoded with its own hop. A hop's computeMs is its share of the batch's time.
 */
export async function computeActivations(stage: RunningStage, jobs: readonly ActivationIn[], ctx: ComputeContext, maxBatch: number): Promise<BatchOutcome[]> {
  const a = stage.assignment;
  const cpu0 = process.cpuUsage();
  const out: BatchOutcome[] = new Array(jobs.length);
  const ready: { index: number; p: Prepared }[] = [];
  for (const [index, job] of jobs.entries()) {
    const t0 = now();
    let msg: Activation;
    try {
      msg = decodeActivation(job.payload, ctx.maxMessageBytes);
    } catch (err) {
      out[index] = { error: err instanceof Error ? err : new Error(String(err)) };
      continue;
    }
    if (msg.deployment !== a.deployment) {
      out[index] = { frame: msg.frame, deployment: msg.deployment };
      continue;
    }
    try {
      ready.push({ index, p: await prepare(a, msg, job.payload.byteLength, job.recvAt, t0, ctx) });
    } catch (err) {
      out[index] = { error: new FrameComputeError(msg.deployment, msg.frame, errorMessage(err)) };
    }
  }
  // the process's CPU for decoding, shared out over the jobs (a batch's computing over its frames, below)
  const decoded = process.cpuUsage(cpu0);
  const decodeCpuMs = (decoded.user + decoded.system) / 1000 / Math.max(1, jobs.length);
  // the checked frames in order, maxBatch at a time
  const size = Math.max(1, maxBatch);
  for (let i = 0; i < ready.length; i += size) {
    const group = ready.slice(i, i + size);
    try {
      const t1 = now();
      const cpu1 = process.cpuUsage();
      const outputs = await runBatch(
        stage,
        group.map((g) => g.p.input),
        ctx,
      );
      const share = (now() - t1) / group.length;
      const cpu = process.cpuUsage(cpu1);
      const cpuShare = decodeCpuMs + (cpu.user + cpu.system) / 1000 / group.length;
      for (const [k, g] of group.entries()) out[g.index] = finish(a, g.p, outputs[k], share, group.length, cpuShare, ctx);
    } catch (err) {
      for (const g of group) out[g.index] = { error: new FrameComputeError(g.p.msg.deployment, g.p.msg.frame, errorMessage(err)) };
    }
  }
  return out;
}

async function prepare(a: Assignment, msg: Activation, bytesIn: number, recvAt: number, t0: number, ctx: ComputeContext): Promise<Prepared> {
  if (msg.stage !== a.stage) throw new DeferError('E_ENVELOPE', `activation for stage ${msg.stage} arrived at stage ${a.stage}`);
  const topic = nextTopic(a, msg);
  const input = await inputOf(a, msg, ctx.maxMessageBytes * 8);
  const want = a.inputShape;
  const got = input.shape;
  if (got.length !== want.length + 1 || got[0] < 1 || got[0] > 64 || want.some((d, i) => d !== got[i + 1])) {
    throw new DeferError('E_ENVELOPE', `activation shape [${got}] does not fit stage input [batch,${want}]`);
  }
  if (input.dtype !== a.inputDtype) throw new DeferError('E_ENVELOPE', `activation dtype ${input.dtype} does not fit stage input ${a.inputDtype}`);
  return { msg, input, topic, bytesIn, recvAt, t0, t1: now() };
}

/** The stage on the inputs as one batch; each input's rows of the output, in order. */
async function runBatch(stage: RunningStage, inputs: RawTensor[], ctx: ComputeContext): Promise<RawTensor[]> {
  const t1 = now();
  const dtype = inputs[0].dtype === 'int32' ? 'int32' : 'float32';
  const rows = inputs.map((x) => x.shape[0]);
  const shape = [rows.reduce((s, r) => s + r, 0), ...inputs[0].shape.slice(1)];
  let data = inputs[0].data as Float32Array | Int32Array;
  if (inputs.length > 1) {
    const all = dtype === 'int32' ? new Int32Array(elementCount(shape)) : new Float32Array(elementCount(shape));
    let at = 0;
    for (const x of inputs) {
      all.set(x.data as ArrayLike<number>, at);
      at += x.data.length;
    }
    data = all;
  }
  const out = tf.tidy(() => stage.model.run(tf.tensor(data, shape, dtype)));
  const values = (await out.data()) as Float32Array;
  const outShape = [...out.shape];
  out.dispose();
  if (ctx.slowdown > 1) await sleep((ctx.slowdown - 1) * (now() - t1));
  if (inputs.length === 1) return [{ dtype: 'float32', shape: outShape, data: values }];
  const perRow = values.length / shape[0];
  let row = 0;
  return rows.map((r) => {
    // a view of the output's rows (encodeTensor reads views as they are): no copy per frame
    const part = values.subarray(row * perRow, (row + r) * perRow);
    row += r;
    return { dtype: 'float32', shape: [r, ...outShape.slice(1)], data: part };
  });
}

function finish(a: Assignment, p: Prepared, output: RawTensor, computeMs: number, batch: number, cpuShareMs: number, ctx: ComputeContext): ComputeOutcome {
  const t2 = now();
  const cpu0 = process.cpuUsage();
  const tensor = encodeTensor(output, { codec: a.codec, precision: a.outputPrecision });
  const hop: Hop = {
    node: ctx.nodeId,
    stage: a.stage,
    bytesIn: p.bytesIn,
    recvAt: p.recvAt,
    decodeMs: p.t1 - p.t0,
    computeMs,
    encodeMs: 0,
    sentAt: 0,
    ...(batch > 1 ? { batch } : {}),
  };
  const hops = [...p.msg.hops, hop];
  hop.encodeMs = now() - t2;
  hop.sentAt = now();
  if (ctx.processCpu !== false) {
    const cpu = process.cpuUsage(cpu0);
    hop.cpuMs = cpuShareMs + (cpu.user + cpu.system) / 1000;
  }
  const m = p.msg;
  const body = encodeActivation({ deployment: a.deployment, frame: m.frame, device: m.device, stage: a.stage + 1, sentAt: m.sentAt, hops, tensor, ...(m.route ? { route: m.route } : {}) });
  return { frame: m.frame, deployment: a.deployment, body, topic: p.topic };
}

/** A frame this node could not compute, with the reason. */
export class FrameComputeError extends DeferError {
  constructor(
    readonly deployment: string,
    readonly frame: string,
    reason: string,
  ) {
    super('E_COMPUTE', reason);
  }
}

async function inputOf(a: Assignment, msg: Activation, maxBytes: number): Promise<RawTensor> {
  if (msg.image) {
    if (!a.inputImage) throw new DeferError('E_ENVELOPE', `stage ${a.stage} takes tensors, but frame ${msg.frame} came as an image`);
    return preprocessImage(msg.image, a.inputImage);
  }
  const t = decodeTensor(msg.tensor, maxBytes);
  return t.dtype === 'uint8' && a.inputDtype === 'float32' ? pixelsIn(a, msg.frame, t) : t;
}

/** Pixels [batch, height, width, channels], already sized, into the model's floats as `inputImage` says (the same code as an image's). */
function pixelsIn(a: Assignment, frame: string, t: RawTensor): RawTensor {
  const spec = a.inputImage;
  if (!spec)
    throw new DeferError(
      'E_ENVELOPE',
      `stage ${a.stage} takes float32 tensors, but frame ${frame} came as uint8 pixels (only stage 0 of an image model, whose assignment has inputImage, takes pixels)`,
    );
  const [, h, w, c] = t.shape;
  if (t.shape.length !== 4 || h !== spec.height || w !== spec.width || c !== spec.channels) {
    throw new DeferError('E_ENVELOPE', `pixels of frame ${frame} have shape [${t.shape}], stage 0 takes [batch,${spec.height},${spec.width},${spec.channels}]`);
  }
  return pixelsToTensor(t, spec);
}

/** The stage model of assignment `a` from its weights: size and sha256 checked against the manifest (warm it up with warmUp once a blob is dropped). */
export async function buildStage(a: Assignment, weights: WeightSink, options: StageBuildOptions = {}): Promise<StageModel> {
  if (weights.totalBytes !== a.manifest.totalBytes) throw new DeferError('E_WEIGHTS', `weights are ${weights.totalBytes} bytes, the manifest says ${a.manifest.totalBytes}`);
  if (weights.sha256() !== a.manifest.sha256) throw new DeferError('E_WEIGHTS', 'the weights do not match the sha256 of the manifest');
  let topology: Record<string, unknown>;
  try {
    topology = JSON.parse(a.topology) as Record<string, unknown>;
  } catch {
    throw new DeferError('E_ENVELOPE', 'the stage topology is not valid JSON');
  }
  const format = a.modelFormat ?? 'layers-model';
  if (weights instanceof EngineWeights) {
    if (format !== 'layers-model') throw new DeferError('E_WEIGHTS', 'internal: engine weights are for layers models only');
    return buildLayersStage(topology, a.manifest.specs, weights.take(), options);
  }
  return buildStageModel(format, topology, a.manifest.specs, (weights as BlobWeights).blob, options);
}

/**
 * The first call compiles kernels and allocates their workspaces (on wasm, XNNPACK packs the weights once more):
 * done before frames come. Unless `keepPacked`, the weights the engine packed are then released (their memory
 * reused by the packed copies, not held twice), and a second run on the same input must give the first run's
 * output bit for bit, or the stage is refused. Returns the bytes released.
 */
export function warmUp(a: Assignment, model: StageModel, keepPacked = false): number {
  const dtype = a.inputDtype === 'int32' ? 'int32' : 'float32';
  if (keepPacked || !model.runReleasing || !canReleasePacked()) {
    tf.tidy(() => {
      model.run(tf.zeros([1, ...a.inputShape], dtype));
    });
    return 0;
  }
  // values that reach every weight (zeros would hide a wrong one behind a product with zero); indices stay 0
  const x = dtype === 'int32' ? tf.zeros([1, ...a.inputShape], dtype) : tf.randomUniform([1, ...a.inputShape], 0, 1, dtype, 7);
  try {
    const first = model.runReleasing(x);
    const want = first.output.dataSync();
    first.output.dispose();
    if (first.releasedBytes === 0) return 0;
    const again = model.run(x);
    const got = again.dataSync();
    again.dispose();
    if (!sameBits(want, got)) {
      throw new DeferError(
        'E_BACKEND',
        `stage ${a.stage + 1}: after its packed weights were released the stage computes other values than before; start the node with --keep-packed-weights (and report this)`,
      );
    }
    return first.releasedBytes;
  } finally {
    x.dispose();
  }
}

/**
 * Whether the stage computes frames together bit for bit as it computes each alone: two inputs, each alone, then
 * as one batch of two (two different random inputs; for a stage of int32 indices, zeros twice, as any index may
 * be out of its range). Checked for every stage before it takes batches (wasm's kernels passed for every model
 * tried; an engine whose kernels tile by batch might not).
 */
export function batchesExactly(a: Assignment, model: StageModel): boolean {
  const dtype = a.inputDtype === 'int32' ? 'int32' : 'float32';
  const make = (seed: number) => (dtype === 'int32' ? tf.zeros([1, ...a.inputShape], dtype) : tf.randomUniform([1, ...a.inputShape], 0, 1, dtype, seed));
  return tf.tidy(() => {
    const x = make(11);
    const y = make(12);
    const alone = [model.run(x).dataSync(), model.run(y).dataSync()];
    const both = model.run(tf.concat([x, y], 0)).dataSync();
    const half = both.length / 2;
    return sameBits(alone[0], both.subarray(0, half)) && sameBits(alone[1], both.subarray(half));
  });
}

function sameBits(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(Float32Array.from(a).buffer);
  const y = new Uint32Array(Float32Array.from(b).buffer);
  return x.every((v, i) => v === y[i]);
}
