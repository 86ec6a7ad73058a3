/**
 * Where a model comes from: a zoo name (`tiny`, `resnet50`, `resnet152`, `mobilenet`: built here with seeded
 * weights), the name of a model the package ships (`mnist`, `aircraft`: files in its models/ folder), or the path
 * of a model.json (or of the folder that holds one): a LayersModel or a GraphModel.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DeferError } from '../core/errors.js';
import type { tf } from './engine.js';
import type { FlatModel } from './flat-model.js';
import { GraphFlatModel } from './graph-partition.js';
import { layersModelFrom, readModelArtifacts } from './model-io.js';
import { LayersFlatModel } from './partition.js';
import { SHIPPED_MODELS_DIR } from './shipped.js';
import { createZooModel, isShippedModelName, isZooName, SHIPPED_MODELS, ZOO_NAMES } from './zoo.js';

/**
 * A model.json's path: a shipped model's name gives its file in the package (not in the working directory:
 * `./mnist` names a folder there), a folder its model.json.
 */
export async function resolveModelPath(spec: string): Promise<string> {
  if (isShippedModelName(spec)) return join(SHIPPED_MODELS_DIR, SHIPPED_MODELS[spec], 'model.json');
  const s = await stat(spec).catch(() => null);
  if (!s) {
    throw new DeferError(
      'E_MODEL',
      `model '${spec}' is neither a zoo model (${ZOO_NAMES.join(', ')}), a shipped model (${Object.keys(SHIPPED_MODELS).join(', ')}) nor an existing model.json or folder`,
    );
  }
  return s.isDirectory() ? join(spec, 'model.json') : spec;
}

/** A zoo model or a LayersModel file (graph models: loadFlatModel). */
export async function loadModel(spec: string, seed = 1): Promise<tf.LayersModel> {
  if (isZooName(spec)) return createZooModel(spec, seed);
  const path = await resolveModelPath(spec);
  return layersModelFrom(await readModelArtifacts(path), path);
}

/** Load a model and flatten it for partitioning (a LayersModel's loaded original is disposed). */
export async function loadFlatModel(spec: string, seed = 1): Promise<FlatModel> {
  if (!isZooName(spec)) {
    const path = await resolveModelPath(spec);
    const artifacts = await readModelArtifacts(path);
    if (artifacts.format === 'graph-model') return GraphFlatModel.from(artifacts, path);
    return layersFlat(await layersModelFrom(artifacts, path));
  }
  return layersFlat(await createZooModel(spec, seed));
}

async function layersFlat(source: tf.LayersModel): Promise<FlatModel> {
  try {
    return await LayersFlatModel.from(source);
  } finally {
    source.dispose();
  }
}
