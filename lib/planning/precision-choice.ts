/**
 * `precision auto`: each hop between stages gets the precision its link needs,
 * within an accuracy budget. The agreement of each lossy precision at each cut
 * is measured here, on calibration frames (the user's sample images, or
 * seeded synthetic frames): the stages run in this process, the frame (hop 0)
 * or the activation at one cut goes through the codec, the rest of the model
 * runs on, and the top-1 class is compared with the lossless chain's. The
 * result hop stays lossless (a few bytes). A hop stays lossless
 * where its link carries the lossless activation within the slowest stage's
 * time (or where no bandwidth is known); otherwise it gets the most accurate
 * precision that fits the link, or failing that the smallest, as long as the
 * chain's summed measured top-1 loss stays within the budget.
 */
import { readdir, readFile } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { DeferError, errorMessage } from '../core/errors.js';
import { tf } from '../model/engine.js';
import type { FlatModel, StageModel, StageSpan } from '../model/flat-model.js';
import { type PreprocessSpec, preprocessImage } from '../model/preprocess.js';
import { buildStageModel } from '../model/stage-model.js';
import { decodeTensor, encodeTensor, type Precision, type RawTensor, zfpAvailable } from '../protocol/index.js';
import { transferMs } from './cost-model.js';

/** The lossy precisions, most accurate first; zfp only where its addon is built. */
export const LOSSY: readonly Precision[] = zfpAvailable() ? ['float16', 'int8', 'zfp'] : ['float16', 'int8'];

/** One lossy precision at one cut, measured. */
export interface HopMeasure {
  /** hop index: 0 is the frame (dispatcher -> stage 0), 1 is stage 0 -> stage 1 */
  hop: number;
  /** the layer whose output travels on this hop ('' for the frame) */
  after: string;
  precision: Precision;
  /** mean bytes on the wire (LZ4 after the precision) */
  bytes: number;
  frames: number;
  top1Agreement: number;
  maxAbsDiff: number;
}

export interface HopChoice {
  hop: number;
  precision: Precision;
  reason: string;
}

const argMax = (x: ArrayLike<number>) => {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
};

async function buildStages(flat: FlatModel, spans: StageSpan[]): Promise<StageModel[]> {
  const stages: StageModel[] = [];
  for (const s of spans) {
    const { specs, blob } = flat.stageWeights(s);
    stages.push(await buildStageModel(flat.format, flat.stageTopology(s), specs, blob));
  }
  return stages;
}

/** Let I/O through (the broker may run in this process, and nodes connecting to it time out): the kernels block the event loop. */
const yieldToIo = () => new Promise((r) => setImmediate(r));

async function runFrom(stages: StageModel[], from: number, x: tf.Tensor): Promise<Float32Array> {
  let t = x;
  for (let k = from; k < stages.length; k++) {
    const y = stages[k].run(t);
    if (t !== x) t.dispose();
    t = y;
    await yieldToIo();
  }
  const out = t.dataSync() as Float32Array;
  if (t !== x) t.dispose();
  return out;
}

/** Every lossy precision on the frame and at every cut of `flat` split at `cuts`, on `frames` (and lossless bytes, as precision 'lossless'). */
export async function measureHopPrecisions(flat: FlatModel, cuts: string[], frames: RawTensor[]): Promise<HopMeasure[]> {
  if (!frames.length) throw new DeferError('E_CONFIG', 'precision auto needs calibration frames');
  const spans = flat.spans(cuts);
  const stages = await buildStages(flat, spans);
  const acc = new Map<string, { bytes: number; same: number; diff: number }>();
  const key = (hop: number, p: Precision) => `${hop}/${p}`;
  try {
    for (const f of frames) {
      // the lossless chain, keeping the frame and the activation at every cut
      const acts: RawTensor[] = f.dtype === 'float32' ? [f] : [];
      const firstHop = f.dtype === 'float32' ? 0 : 1;
      let t: tf.Tensor = tf.tensor(f.data as Float32Array, f.shape, f.dtype === 'int32' ? 'int32' : 'float32');
      for (let k = 0; k < stages.length; k++) {
        const y = stages[k].run(t);
        t.dispose();
        t = y;
        await yieldToIo();
        if (k < stages.length - 1) acts.push({ dtype: 'float32', shape: [...y.shape], data: y.dataSync() as Float32Array });
      }
      const want = t.dataSync() as Float32Array;
      t.dispose();
      for (const [i, a] of acts.entries()) {
        const hop = i + firstHop;
        for (const p of ['lossless', ...LOSSY] as Precision[]) {
          const w = encodeTensor(a, { codec: 'lz4', precision: p });
          const bytes = w.data.byteLength + (w.scale?.byteLength ?? 0) + (w.offset?.byteLength ?? 0);
          let same = 1;
          let diff = 0;
          if (p !== 'lossless') {
            const back = decodeTensor(w);
            const x = tf.tensor(back.data as Float32Array, back.shape, 'float32');
            const got = await runFrom(stages, hop, x);
            x.dispose();
            same = argMax(got) === argMax(want) ? 1 : 0;
            for (let j = 0; j < got.length; j++) diff = Math.max(diff, Math.abs(got[j] - want[j]));
          }
          const e = acc.get(key(hop, p)) ?? { bytes: 0, same: 0, diff: 0 };
          acc.set(key(hop, p), { bytes: e.bytes + bytes, same: e.same + same, diff: Math.max(e.diff, diff) });
        }
      }
    }
  } finally {
    for (const s of stages) s.dispose();
  }
  const out: HopMeasure[] = [];
  for (let hop = 0; hop < spans.length; hop++) {
    for (const p of ['lossless', ...LOSSY] as Precision[]) {
      const e = acc.get(key(hop, p));
      if (!e) continue; // an int32 frame is never lossy
      out.push({
        hop,
        after: hop === 0 ? '' : spans[hop - 1].last,
        precision: p,
        bytes: Math.round(e.bytes / frames.length),
        frames: frames.length,
        top1Agreement: e.same / frames.length,
        maxAbsDiff: e.diff,
      });
    }
  }
  return out;
}

export interface PrecisionDecision {
  /** one per hop: dispatcher -> stage 0, ..., last stage -> dispatcher */
  precision: Precision[];
  hops: HopChoice[];
  measures: HopMeasure[];
  /** what the agreement was measured on */
  calibration: string;
}

/** Chooses each hop's precision for a chain: `nodes` in chain order, `flat` cut at `cuts`. */
export type ChoosePrecision = (flat: FlatModel, nodes: string[], cuts: string[]) => Promise<PrecisionDecision>;

export interface ChoiceInputs {
  stages: number;
  measures: HopMeasure[];
  /** Mbit/s of the link hop `h` crosses (the slower end's), undefined: unknown or loopback */
  linkMbps: (hop: number) => number | undefined;
  /** ms per frame of the slowest stage, as profiled */
  bottleneckMs: number;
  /** largest summed top-1 loss allowed over all hops, as a fraction (0.005: 0.5%) */
  maxTop1Loss: number;
}

/** One precision per hop (the result hop stays lossless), with the reason for each. */
export function choosePrecisions(c: ChoiceInputs): { precision: Precision[]; hops: HopChoice[] } {
  const precision: Precision[] = Array.from({ length: c.stages + 1 }, () => 'lossless');
  const hops: HopChoice[] = [];
  let spent = 0;
  for (let hop = 0; hop < c.stages; hop++) {
    const m = c.measures.filter((x) => x.hop === hop);
    const lossless = m.find((x) => x.precision === 'lossless');
    if (!lossless) continue;
    const mbps = c.linkMbps(hop);
    if (!mbps) {
      hops.push({ hop, precision: 'lossless', reason: 'link bandwidth not known (loopback): lossless' });
      continue;
    }
    const ms = (x: HopMeasure) => transferMs(x.bytes, mbps);
    if (ms(lossless) <= c.bottleneckMs) {
      hops.push({
        hop,
        precision: 'lossless',
        reason: `lossless fits the link: ${ms(lossless).toFixed(1)} ms per frame at ${mbps} Mbit/s, within the slowest stage's ${c.bottleneckMs.toFixed(1)} ms`,
      });
      continue;
    }
    const affordable = m.filter((x) => x.precision !== 'lossless' && spent + (1 - x.top1Agreement) <= c.maxTop1Loss + 1e-12);
    const fits = affordable.filter((x) => ms(x) <= c.bottleneckMs);
    const pick = fits[0] ?? [...affordable].sort((a, b) => a.bytes - b.bytes)[0];
    if (!pick) {
      const best = m.filter((x) => x.precision !== 'lossless').sort((a, b) => b.top1Agreement - a.top1Agreement)[0];
      hops.push({
        hop,
        precision: 'lossless',
        reason: `the link is slow (${ms(lossless).toFixed(1)} ms per frame) but no lossy precision is within the accuracy budget (best: ${best.precision}, top-1 agreement ${(best.top1Agreement * 100).toFixed(1)}% on ${best.frames} frames)`,
      });
      continue;
    }
    spent += 1 - pick.top1Agreement;
    precision[hop] = pick.precision;
    hops.push({
      hop,
      precision: pick.precision,
      reason: `lossless would take ${ms(lossless).toFixed(1)} ms per frame at ${mbps} Mbit/s, over the slowest stage's ${c.bottleneckMs.toFixed(1)} ms; ${pick.precision} takes ${ms(pick).toFixed(1)} ms (${pick.bytes.toLocaleString('en')} bytes), top-1 agreement ${(pick.top1Agreement * 100).toFixed(1)}% on ${pick.frames} frames`,
    });
  }
  return { precision, hops };
}

const IMAGE_EXT = new Set(['.jpg', '.jpeg', '.png', '.webp', '.gif']);

/** Calibration frames: up to `count` images from `dir` preprocessed as devices' frames are, or seeded synthetic frames. */
export async function calibrationFrames(dir: string, count: number, preprocess: PreprocessSpec | null, synthetic: () => RawTensor[]): Promise<{ frames: RawTensor[]; source: string }> {
  if (!dir) return { frames: synthetic(), source: `${count} synthetic frames` };
  if (!preprocess) throw new DeferError('E_CONFIG', `planner.calibrationImages is set (${dir}) but the model's input is not an image`);
  let files: string[];
  try {
    files = (await readdir(dir)).filter((f) => IMAGE_EXT.has(extname(f).toLowerCase())).sort();
  } catch (err) {
    throw new DeferError('E_CONFIG', `cannot read the calibration images folder ${dir}: ${errorMessage(err)}`);
  }
  if (!files.length) throw new DeferError('E_CONFIG', `the calibration images folder ${dir} has no .jpg, .png, .webp or .gif files`);
  const frames: RawTensor[] = [];
  for (const f of files.slice(0, count)) frames.push(await preprocessImage(await readFile(join(dir, f)), preprocess));
  return { frames, source: `${frames.length} images from ${dir}` };
}
