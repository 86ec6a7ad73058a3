/**
 * Setting up the serving of devices for a deployment: the model's input as
 * devices must fill it (preprocessing from the configuration and the model's
 * metadata), its labels, and the frame server.
 */
import type { DeferConfig } from '../../config/schema.js';
import { DeferError } from '../../lib/core/errors.js';
import type { FlatModel } from '../../lib/model/flat-model.js';
import { loadModelMeta, type ModelMeta } from '../../lib/model/labels.js';
import type { Deployment, Dispatcher } from '../dispatcher.js';
import { DeviceServer } from './device-server.js';
import type { ModelInput } from './frame-tensor.js';

export function modelInputFor(flat: Pick<FlatModel, 'inputShape' | 'inputDtype'>, serve: DeferConfig['serve'], meta: Pick<ModelMeta, 'teachableMachine'>): ModelInput {
  const shape = flat.inputShape;
  const [h, w, c] = shape;
  const isImage = shape.length === 3 && h > 0 && w > 0 && (c === 1 || c === 3);
  if (!isImage) return { shape, dtype: flat.inputDtype, preprocess: null };
  const { mean, std } = serve;
  if (mean.length !== std.length || (mean.length && mean.length !== 1 && mean.length !== c)) {
    throw new DeferError('E_CONFIG', `serve.mean and serve.std need the same number of values, 1 or ${c} (one per channel); got ${mean.length} and ${std.length}`);
  }
  if (std.some((x) => x <= 0)) throw new DeferError('E_CONFIG', 'serve.std values must be positive');
  const range: [number, number] = serve.range === 'auto' ? (meta.teachableMachine ? [-1, 1] : [0, 1]) : (serve.range.split(',').map(Number) as [number, number]);
  return {
    shape,
    dtype: flat.inputDtype,
    preprocess: {
      height: h,
      width: w,
      channels: c as 1 | 3,
      range,
      ...(mean.length ? { mean, std } : {}),
      channelOrder: serve.channelOrder,
      resize: serve.resize === 'auto' ? 'crop' : serve.resize,
      pad: 0,
      maxPixels: serve.maxPixels,
    },
  };
}

export interface Serving {
  server: DeviceServer;
  meta: ModelMeta;
  input: ModelInput;
}

/**
 * Before deploying a chain that serves devices: with serve.compactFirstHop and an image model, stage 0
 * is to decode the devices' images itself (the dispatcher sends them as they came).
 */
export async function prepareServing(d: Dispatcher, flat: FlatModel, config: DeferConfig): Promise<void> {
  if (!config.serve.compactFirstHop) return;
  const input = modelInputFor(flat, config.serve, await loadModelMeta(config.dispatcher.model, config.serve.labels));
  if (input.preprocess) d.useImageInput(input.preprocess);
}

export async function startServing(d: Dispatcher, deployment: Deployment, flat: FlatModel, config: DeferConfig): Promise<Serving> {
  const meta = await loadModelMeta(config.dispatcher.model, config.serve.labels);
  const input = modelInputFor(flat, config.serve, meta);
  const server = new DeviceServer(d.mqtt, d.topics, deployment.stream, input, meta.labels, { ...config.serve, id: d.id });
  await server.start();
  d.events.emit({
    type: 'serving',
    deployment: deployment.id,
    broker: d.opts.brokerUrl,
    frames: d.topics.frames('<device>'),
    results: d.topics.deviceResults('<device>'),
    metrics: d.topics.metrics(d.id),
  });
  return { server, meta, input };
}

export function servingBanner(brokerUrl: string, d: Dispatcher, s: Serving): string {
  const p = s.input.preprocess;
  return [
    `serving devices through deployment ${d.topics.root}:`,
    `  broker:   ${brokerUrl}`,
    `  frames:   ${d.topics.frames('<device>')}  (JPEG/PNG bytes, JSON {shape, data}, or CBOR)`,
    `  results:  ${d.topics.deviceResults('<device>')}`,
    `  metrics:  ${d.topics.metrics(d.id)}`,
    `  input:    [${s.input.shape.join(',')}] ${s.input.dtype}` +
      (p
        ? `; images: ${p.resize} to ${p.width}x${p.height}, ${p.channels === 1 ? 'gray' : p.channelOrder}, ${p.mean ? `mean ${p.mean} std ${p.std}` : `range ${p.range.join('..')}`}`
        : '; images not accepted (not an image model)'),
    `  labels:   ${s.meta.labels ? `${s.meta.labels.length} from ${s.meta.labelsFrom}` : 'none (class indices)'}`,
    `  policy:   ${s.server.maxInFlight} frames in flight, then ${s.server.policy} per device`,
    'stop with Ctrl-C (SIGINT) or SIGTERM',
  ].join('\n');
}
