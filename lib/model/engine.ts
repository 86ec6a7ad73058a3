/**
 * Engine selection: which TensorFlow.js backend runs the model.
 * `auto` tries native TensorFlow (@tensorflow/tfjs-node, an optional peer),
 * then WebAssembly (SIMD), then plain JavaScript (`cpu`).
 */
import { DeferError } from '../core/errors.js';
import { log } from '../core/log.js';
import { installBatchNormKernel } from './batch-norm-kernel.js';
import * as tf from './tf.js';

export type BackendChoice = 'auto' | 'tensorflow' | 'wasm' | 'cpu';
export const BACKEND_CHOICES: readonly BackendChoice[] = ['auto', 'tensorflow', 'wasm', 'cpu'];

let active: string | undefined;
/** the selection in progress: concurrent callers (two Node-RED nodes starting at once) share it */
let pending: { choice: BackendChoice; promise: Promise<string> } | undefined;

async function tryTensorflow(): Promise<boolean> {
  try {
    const name = '@tensorflow/tfjs-node';
    await import(name);
  } catch {
    return false;
  }
  return tf.findBackend('tensorflow') !== null && (await tf.setBackend('tensorflow'));
}

async function tryWasm(): Promise<boolean> {
  try {
    await import('@tensorflow/tfjs-backend-wasm');
    return await tf.setBackend('wasm');
  } catch {
    return false;
  }
}

const INSTALL_HINT: Record<Exclude<BackendChoice, 'auto'>, string> = {
  tensorflow: "install it with 'npm install @tensorflow/tfjs-node' (it downloads libtensorflow at install time, so the machine needs internet access then), or choose backend 'wasm'",
  wasm: "reinstall the project's dependencies ('npm ci'): @tensorflow/tfjs-backend-wasm ships with it",
  cpu: "reinstall the project's dependencies ('npm ci')",
};

/**
 * Select and initialise a backend. Idempotent per process: a second call with
 * a compatible choice returns the backend already active.
 */
export async function initEngine(choice: BackendChoice = 'auto'): Promise<string> {
  if (active && (choice === 'auto' || choice === active)) return active;
  if (pending && (choice === 'auto' || choice === pending.choice)) return pending.promise;
  const promise = selectBackend(choice).finally(() => {
    if (pending?.promise === promise) pending = undefined;
  });
  pending = { choice, promise };
  return promise;
}

async function selectBackend(choice: BackendChoice): Promise<string> {
  const order: Exclude<BackendChoice, 'auto'>[] = choice === 'auto' ? ['tensorflow', 'wasm', 'cpu'] : [choice];
  for (const b of order) {
    const ok = b === 'tensorflow' ? await tryTensorflow() : b === 'wasm' ? await tryWasm() : await tf.setBackend('cpu');
    if (ok) {
      await tf.ready();
      active = tf.getBackend();
      // keep the console quiet about tfjs-node in every process
      tf.env().set('PROD', true);
      // the wasm engine's batch normalisation, bit for bit, in SIMD (lib/model/batch-norm-kernel.ts)
      if (active === 'wasm') installBatchNormKernel();
      log.debug(`engine: backend '${active}' (asked for '${choice}')`);
      return active;
    }
    if (choice !== 'auto') {
      throw new DeferError('E_BACKEND', `backend '${b}' is not available: ${INSTALL_HINT[b]}`);
    }
  }
  throw new DeferError('E_BACKEND', 'no TensorFlow.js backend could be started');
}

export { tf };

/** Bytes of the engine's own heap where it has one (the wasm backend's linear memory, which never shrinks); undefined otherwise. */
export function engineHeapBytes(): number | undefined {
  try {
    const b = tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } };
    return b.wasm?.HEAPU8?.byteLength;
  } catch {
    return undefined; // no backend yet
  }
}
