/**
 * Profiles cached on disk, keyed by the model's hash and the backend: a model
 * file's profile lies beside its model.json, a zoo model's in the cache
 * folder. A profile carries the calibration of the process that made it, so
 * node speeds stay comparable to it on any machine that reads it later.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { errorMessage } from '../core/errors.js';
import { log } from '../core/log.js';
import type { FlatModel } from '../model/flat-model.js';
import { resolveModelPath } from '../model/model-source.js';
import { isZooName } from '../model/zoo.js';
import { CALIBRATION_VERSION, calibrate } from './calibrate.js';
import { profileSegments, type SegmentProfile } from './profile.js';

/** 3: the wasm engine runs batch normalisation with lib/model/batch-norm-kernel.ts; 4: a stage's per-call cost apart (callMs) */
export const PROFILE_VERSION = 4;

export interface CachedProfile extends SegmentProfile {
  version: number;
  modelHash: string;
  backend: string;
  createdAt: string;
  host: string;
  /** the profiling process's own calibration, made just before the profile */
  calibration: { version: number; calibrationMs: number; calibrationCpuMs: number };
}

export interface ProfileOptions {
  /** zoo name or model path, as given by the user */
  modelSpec: string;
  backend: string;
  /** folder for the profiles; '' means ~/.cache/defer for zoo models and beside the model.json for model files */
  cacheDir?: string;
  /** ignore a cached profile */
  refresh?: boolean;
  progress?: (line: string) => void;
}

/** sha256 of the flattened model's topology and every weight byte. */
export function modelHash(flat: FlatModel): string {
  const h = createHash('sha256');
  flat.digest(h);
  return h.digest('hex');
}

export async function profilePath(opts: ProfileOptions, hash: string): Promise<string> {
  const file = (stem: string) => `${stem}.profile.${opts.backend}.${hash.slice(0, 16)}.json`;
  if (isZooName(opts.modelSpec)) return join(opts.cacheDir || join(homedir(), '.cache', 'defer'), file(opts.modelSpec));
  const modelJson = await resolveModelPath(opts.modelSpec);
  if (opts.cacheDir) return join(opts.cacheDir, file(`${basename(dirname(modelJson))}-${basename(modelJson, '.json')}`));
  return join(dirname(modelJson), file(basename(modelJson, '.json')));
}

function isUsable(p: Partial<CachedProfile>, hash: string, backend: string, layers: number): p is CachedProfile {
  return (
    p.version === PROFILE_VERSION &&
    p.modelHash === hash &&
    p.backend === backend &&
    p.calibration?.version === CALIBRATION_VERSION &&
    typeof p.callMs === 'number' &&
    Array.isArray(p.layerMs) &&
    p.layerMs.length === layers &&
    p.layerMs.every((x) => typeof x === 'number' && x >= 0)
  );
}

/** The model's profile on this backend: from the cache when it matches, else measured now and cached. */
export async function getProfile(flat: FlatModel, opts: ProfileOptions): Promise<{ profile: CachedProfile; path: string; cached: boolean }> {
  const progress = opts.progress ?? ((l: string) => log.info(l));
  const hash = modelHash(flat);
  const path = await profilePath(opts, hash);
  if (!opts.refresh) {
    try {
      const p = JSON.parse(await readFile(path, 'utf8')) as Partial<CachedProfile>;
      if (isUsable(p, hash, opts.backend, flat.graph.layers.length)) {
        progress(`profile: cached ${path} (made ${p.createdAt} on ${p.host}, whole model ${p.totalMs.toFixed(0)} ms)`);
        return { profile: p, path, cached: true };
      }
      progress(`profile: ${path} is for another model version or format; profiling again`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') progress(`profile: cannot read ${path} (${errorMessage(err)}); profiling again`);
    }
  }
  const t0 = performance.now();
  progress(`profile: timing ${flat.cuts.valid.length + 1} segments of the model on ${opts.backend} (done once, then cached)`);
  const cal = await calibrate();
  const seg = await profileSegments(flat);
  const profile: CachedProfile = {
    version: PROFILE_VERSION,
    modelHash: hash,
    backend: opts.backend,
    createdAt: new Date().toISOString(),
    host: cal.host,
    calibration: { version: CALIBRATION_VERSION, calibrationMs: cal.calibrationMs, calibrationCpuMs: cal.calibrationCpuMs },
    ...seg,
  };
  progress(`profile: whole model ${profile.totalMs.toFixed(0)} ms, calibration ${cal.calibrationMs.toFixed(1)} ms, in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  try {
    await mkdir(dirname(path), { recursive: true });
    const tmp = `${path}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify(profile, null, 1));
    await rename(tmp, path);
    progress(`profile: cached in ${path}`);
  } catch (err) {
    log.warn(`cannot cache the profile in ${path}: ${errorMessage(err)} (it will be measured again next time)`);
  }
  return { profile, path, cached: false };
}
