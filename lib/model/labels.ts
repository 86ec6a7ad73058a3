/**
 * A model's class labels and its preprocessing hints: from a labels file named
 * in the configuration, or beside the model: a Teachable Machine
 * `metadata.json` (labels, image size; TM image models expect [-1, 1] and a
 * centre crop), `labels.json` (an array, or {labels: [...]}) or `labels.txt`
 * (one per line).
 */
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { DeferError, errorMessage } from '../core/errors.js';
import { resolveModelPath } from './model-source.js';
import { isZooName } from './zoo.js';

export interface ModelMeta {
  labels: string[] | null;
  /** where the labels came from */
  labelsFrom: string | null;
  /** a Teachable Machine export: its preprocessing is [-1, 1] with a centre crop */
  teachableMachine: boolean;
}

function parseLabels(text: string, file: string): string[] {
  if (file.endsWith('.json')) {
    let j: unknown;
    try {
      j = JSON.parse(text);
    } catch (err) {
      throw new DeferError('E_CONFIG', `labels file ${file} is not valid JSON: ${errorMessage(err)}`);
    }
    const arr = Array.isArray(j) ? j : (j as { labels?: unknown })?.labels;
    if (!Array.isArray(arr) || !arr.every((x) => typeof x === 'string')) throw new DeferError('E_CONFIG', `labels file ${file} must hold an array of strings, or {"labels": [...]}`);
    return arr;
  }
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter(Boolean);
}

async function readIfThere(file: string): Promise<string | null> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new DeferError('E_CONFIG', `cannot read ${file}: ${errorMessage(err)}`);
  }
}

export async function loadModelMeta(modelSpec: string, labelsFile = ''): Promise<ModelMeta> {
  if (labelsFile) {
    const text = await readIfThere(labelsFile);
    if (text === null) throw new DeferError('E_CONFIG', `labels file ${labelsFile} (serve.labels) does not exist`);
    return { labels: parseLabels(text, labelsFile), labelsFrom: labelsFile, teachableMachine: false };
  }
  if (isZooName(modelSpec)) return { labels: null, labelsFrom: null, teachableMachine: false };
  const dir = dirname(await resolveModelPath(modelSpec));
  const meta = await readIfThere(join(dir, 'metadata.json'));
  if (meta !== null) {
    let m: { labels?: unknown; tmVersion?: unknown };
    try {
      m = JSON.parse(meta) as typeof m;
    } catch (err) {
      throw new DeferError('E_CONFIG', `${join(dir, 'metadata.json')} is not valid JSON: ${errorMessage(err)}`);
    }
    if (Array.isArray(m.labels) && m.labels.every((x) => typeof x === 'string')) {
      return { labels: m.labels as string[], labelsFrom: join(dir, 'metadata.json'), teachableMachine: typeof m.tmVersion === 'string' };
    }
  }
  for (const name of ['labels.json', 'labels.txt']) {
    const text = await readIfThere(join(dir, name));
    if (text !== null) return { labels: parseLabels(text, name), labelsFrom: join(dir, name), teachableMachine: false };
  }
  return { labels: null, labelsFrom: null, teachableMachine: false };
}
