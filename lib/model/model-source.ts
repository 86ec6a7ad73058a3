/**
 * Where a model comes from: a zoo name (`tiny`, `resnet50`, `mobilenet`) or
 * the path of a model.json (or of the folder that holds one).
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DeferError } from '../core/errors.js';
import type { tf } from './engine.js';
import { loadLayersModel } from './model-io.js';
import { FlatModel } from './partition.js';
import { createZooModel, isZooName, ZOO_NAMES } from './zoo.js';

export async function resolveModelPath(spec: string): Promise<string> {
  const s = await stat(spec).catch(() => null);
  if (!s) {
    throw new DeferError('E_MODEL', `model '${spec}' is neither a zoo model (${ZOO_NAMES.join(', ')}) nor an existing model.json or folder`);
  }
  return s.isDirectory() ? join(spec, 'model.json') : spec;
}

export async function loadModel(spec: string, seed = 1): Promise<tf.LayersModel> {
  if (isZooName(spec)) return createZooModel(spec, seed);
  return loadLayersModel(await resolveModelPath(spec));
}

/** Load a model and flatten it for partitioning; the loaded original is disposed. */
export async function loadFlatModel(spec: string, seed = 1): Promise<FlatModel> {
  const source = await loadModel(spec, seed);
  try {
    return await FlatModel.from(source);
  } finally {
    source.dispose();
  }
}
