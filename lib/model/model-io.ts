/**
 * Reading TensorFlow.js models (LayersModels and GraphModels) as `model.json` +
 * weight shards from the local file system, and writing LayersModels, without
 * tfjs-node (whose `file://` handler is not available on the wasm and cpu
 * backends).
 *
 * Both topology layouts that the converter writes are accepted: the newer
 * `modelTopology.model_config` and the older one where `modelTopology` is the
 * model config itself.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { DeferError, errorMessage } from '../core/errors.js';
import { tf } from './engine.js';

interface ModelJson {
  modelTopology: Record<string, unknown>;
  weightsManifest?: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
  format?: string;
  /** graph models: the inputs and outputs (the converter writes it here or inside userDefinedMetadata) */
  signature?: tf.io.ModelArtifacts['signature'];
  userDefinedMetadata?: tf.io.ModelArtifacts['userDefinedMetadata'];
  generatedBy?: string;
  convertedBy?: string | null;
}

/** Read model.json and its shards into ModelArtifacts (`format` says which kind: layers-model, graph-model). */
export async function readModelArtifacts(modelJsonPath: string): Promise<tf.io.ModelArtifacts> {
  const path = resolve(modelJsonPath);
  let json: ModelJson;
  try {
    json = JSON.parse(await readFile(path, 'utf8')) as ModelJson;
  } catch (err) {
    throw new DeferError('E_MODEL', `cannot read model ${path}: ${errorMessage(err)}`);
  }
  if (!json || typeof json.modelTopology !== 'object' || json.modelTopology === null) {
    throw new DeferError('E_MODEL', `${path} is not a TensorFlow.js model: it has no modelTopology`);
  }
  const format = json.format ?? ('node' in json.modelTopology ? 'graph-model' : 'layers-model');
  if (format !== 'layers-model' && format !== 'graph-model') {
    throw new DeferError('E_MODEL', `${path} is a '${json.format}'; supported are TensorFlow.js layers-model and graph-model files`);
  }
  const weightSpecs: tf.io.WeightsManifestEntry[] = [];
  const buffers: Buffer[] = [];
  for (const group of json.weightsManifest ?? []) {
    weightSpecs.push(...group.weights);
    for (const p of group.paths) {
      const shard = join(dirname(path), p);
      try {
        buffers.push(await readFile(shard));
      } catch (err) {
        throw new DeferError('E_MODEL', `cannot read weight shard ${shard} of ${path}: ${errorMessage(err)}`);
      }
    }
  }
  const all = Buffer.concat(buffers);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength) as ArrayBuffer;
  return {
    modelTopology: json.modelTopology as tf.io.ModelArtifacts['modelTopology'],
    weightSpecs,
    weightData,
    format,
    ...(json.signature ? { signature: json.signature } : {}),
    ...(json.userDefinedMetadata ? { userDefinedMetadata: json.userDefinedMetadata } : {}),
    generatedBy: json.generatedBy,
    convertedBy: json.convertedBy ?? null,
  };
}

export async function loadLayersModel(modelJsonPath: string): Promise<tf.LayersModel> {
  return layersModelFrom(await readModelArtifacts(modelJsonPath), modelJsonPath);
}

export async function layersModelFrom(artifacts: tf.io.ModelArtifacts, modelJsonPath: string): Promise<tf.LayersModel> {
  if (artifacts.format !== 'layers-model') throw new DeferError('E_MODEL', `${modelJsonPath} is a ${artifacts.format}, not a layers-model`);
  try {
    return await tf.loadLayersModel(tf.io.fromMemory(artifacts));
  } catch (err) {
    throw new DeferError('E_MODEL', `cannot build the model in ${modelJsonPath}: ${errorMessage(err)}`);
  }
}

/** Write a model as `<dir>/model.json` + `<dir>/weights.bin` (one shard). */
export async function saveLayersModel(model: tf.LayersModel, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const modelJson = join(dir, 'model.json');
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const data = artifacts.weightData;
      const buf = data === undefined ? Buffer.alloc(0) : Buffer.from(Array.isArray(data) ? Buffer.concat(data.map((b) => Buffer.from(b))) : Buffer.from(data));
      await writeFile(join(dir, 'weights.bin'), buf);
      const json: ModelJson = {
        format: 'layers-model',
        generatedBy: artifacts.generatedBy,
        convertedBy: 'defer-mqtt',
        modelTopology: artifacts.modelTopology as Record<string, unknown>,
        weightsManifest: [{ paths: ['weights.bin'], weights: artifacts.weightSpecs ?? [] }],
      };
      await writeFile(modelJson, JSON.stringify(json));
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON', weightDataBytes: buf.byteLength } };
    }),
  );
  return modelJson;
}
