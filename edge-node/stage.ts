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
import { buildLayersStage } from '../lib/model/partition.js';
import { pixelsToTensor, preprocessImage } from '../lib/model/preprocess.js';
import { buildStageModel } from '../lib/model/stage-model.js';
import { type BlobWeights, EngineWeights, type WeightSink } from '../lib/model/weight-sink.js';
import { type Activation, type Assignment, decodeActivation, decodeTensor, encodeActivation, encodeTensor, type Hop, parseTopic, type RawTensor } from '../lib/protocol/index.js';

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

export async function computeActivation(stage: RunningStage, payload: Buffer, recvAt: number, ctx: ComputeContext): Promise<ComputeOutcome> {
  const a = stage.assignment;
  const cpu0 = process.cpuUsage();
  const t0 = now();
  const msg: Activation = decodeActivation(payload, ctx.maxMessageBytes);
  if (msg.deployment !== a.deployment) return { frame: msg.frame, deployment: msg.deployment };
  try {
    return await computeFrame(stage, msg, payload.byteLength, recvAt, t0, cpu0, ctx);
  } catch (err) {
    // the frame is known: the report names it, and the dispatcher fails it at once
    throw new FrameComputeError(msg.deployment, msg.frame, errorMessage(err));
  }
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

async function computeFrame(stage: RunningStage, msg: Activation, bytesIn: number, recvAt: number, t0: number, cpu0: NodeJS.CpuUsage, ctx: ComputeContext): Promise<ComputeOutcome> {
  const a = stage.assignment;
  if (msg.stage !== a.stage) throw new DeferError('E_ENVELOPE', `activation for stage ${msg.stage} arrived at stage ${a.stage}`);
  const topic = nextTopic(a, msg);
  const input = await inputOf(a, msg, ctx.maxMessageBytes * 8);
  const want = a.inputShape;
  const got = input.shape;
  if (got.length !== want.length + 1 || got[0] < 1 || got[0] > 64 || want.some((d, i) => d !== got[i + 1])) {
    throw new DeferError('E_ENVELOPE', `activation shape [${got}] does not fit stage input [batch,${want}]`);
  }
  if (input.dtype !== a.inputDtype) throw new DeferError('E_ENVELOPE', `activation dtype ${input.dtype} does not fit stage input ${a.inputDtype}`);
  const t1 = now();
  const out = tf.tidy(() => stage.model.run(tf.tensor(input.data as Float32Array, got, input.dtype === 'int32' ? 'int32' : 'float32')));
  const data = (await out.data()) as Float32Array;
  const shape = [...out.shape];
  out.dispose();
  if (ctx.slowdown > 1) await sleep((ctx.slowdown - 1) * (now() - t1));
  const t2 = now();
  const tensor = encodeTensor({ dtype: 'float32', shape, data }, { codec: a.codec, precision: a.outputPrecision });
  const hop: Hop = {
    node: ctx.nodeId,
    stage: a.stage,
    bytesIn,
    recvAt,
    decodeMs: t1 - t0,
    computeMs: t2 - t1,
    encodeMs: 0,
    sentAt: 0,
  };
  const hops = [...msg.hops, hop];
  hop.encodeMs = now() - t2;
  hop.sentAt = now();
  if (ctx.processCpu !== false) {
    const cpu = process.cpuUsage(cpu0);
    hop.cpuMs = (cpu.user + cpu.system) / 1000;
  }
  const body = encodeActivation({ deployment: a.deployment, frame: msg.frame, device: msg.device, stage: a.stage + 1, sentAt: msg.sentAt, hops, tensor, ...(msg.route ? { route: msg.route } : {}) });
  return { frame: msg.frame, deployment: a.deployment, body, topic };
}

/** The stage model of assignment `a` from its weights: size and sha256 checked against the manifest (warm it up with warmUp once a blob is dropped). */
export async function buildStage(a: Assignment, weights: WeightSink): Promise<StageModel> {
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
    return buildLayersStage(topology, a.manifest.specs, weights.take());
  }
  return buildStageModel(format, topology, a.manifest.specs, (weights as BlobWeights).blob);
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

function sameBits(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(Float32Array.from(a).buffer);
  const y = new Uint32Array(Float32Array.from(b).buffer);
  return x.every((v, i) => v === y[i]);
}
