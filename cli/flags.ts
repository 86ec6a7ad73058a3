/** Flags that several `defer` commands share. */
import { SHIPPED_MODELS, ZOO_NAMES } from '../lib/model/zoo.js';
import type { FlagSpec } from './args.js';

export const MODEL: FlagSpec = {
  key: 'dispatcher.model',
  type: 'string',
  help: `a zoo model built with seeded weights (${ZOO_NAMES.join(', ')}), a real model the package ships (${Object.keys(SHIPPED_MODELS).join(', ')}: its models/ folder), or a model.json path`,
};
export const CUT: FlagSpec = { key: 'dispatcher.cut', type: 'string', list: true, help: 'layers to cut after, comma separated (default: balanced)' };
export const BALANCE: FlagSpec = { key: 'dispatcher.balanceBy', type: 'string', help: 'without --cut or --auto: time | flops | params | memory, what the cuts balance' };
export const FRAMES: FlagSpec = { key: 'up.frames', type: 'string', number: true, help: 'synthetic frames to stream' };
export const JSON_FLAG: FlagSpec = { key: 'up.json', type: 'boolean', help: 'print the summary as one JSON object on stdout, and the events as JSON lines on stderr' };
export const NO_BASELINE: FlagSpec = { key: 'up.baseline', type: 'boolean', negate: true, help: 'skip the single-process baseline' };
export const FLOAT_FRAMES: FlagSpec = { key: 'up.pixelFrames', type: 'boolean', negate: true, help: "an image model's synthetic frames as float32 tensors instead of uint8 pixels" };
export const SEED: FlagSpec = { key: 'dispatcher.seed', type: 'string', number: true, help: 'seed of zoo weights and frames' };

export const PLANNER: Record<string, FlagSpec> = {
  auto: { key: 'planner.auto', type: 'boolean', help: "choose cuts and node order from the model profile and the nodes' measured speeds" },
  speeds: { key: 'planner.speeds', type: 'string', help: 'relative node speeds instead of their calibration, e.g. 1,0.5,1' },
  memory: { key: 'planner.memoryMb', type: 'string', help: 'memory per node in MB (one per node, or one for all)' },
  bandwidth: { key: 'planner.bandwidthMbps', type: 'string', help: 'link bandwidth per node in Mbit/s (one per node, or one for all)' },
  latency: { key: 'planner.latencyMs', type: 'string', help: 'link latency per node in ms (one per node, or one for all)' },
  order: { key: 'planner.order', type: 'string', help: 'best | given: may the planner reorder the nodes' },
  shape: { key: 'planner.shape', type: 'string', help: 'auto | chain: without --cut, the planner chooses stages, replicas and workers (auto), or one node per stage (chain)' },
  replicas: { key: 'planner.replicas', type: 'string', help: 'nodes serving each stage, e.g. 2,1 (the planner chooses the cuts and workers)' },
  refresh: { key: 'planner.refresh', type: 'boolean', help: 'profile the model again, ignoring a cached profile' },
  'max-top1-loss': { key: 'planner.maxTop1Loss', type: 'string', number: true, help: 'with --precision auto: the top-1 agreement (percent) the lossy hops may lose, summed (default 0.5)' },
  'calibration-images': {
    key: 'planner.calibrationImages',
    type: 'string',
    help: "with --precision auto: a folder of sample images to measure the lossy hops' agreement on (default: synthetic frames)",
  },
};
export const SERVE: Record<string, FlagSpec> = {
  serve: { key: 'up.serve', type: 'boolean', help: "serve devices' frames (defer/<pipeline>/frames/<device>) until SIGINT or SIGTERM, instead of synthetic frames" },
  policy: { key: 'serve.policy', type: 'string', help: 'latest | queue | reject: what happens to frames while the chain is full' },
  'queue-size': { key: 'serve.queueSize', type: 'string', number: true, help: 'frames a device may have waiting with --policy queue' },
  labels: { key: 'serve.labels', type: 'string', help: 'labels file (default: metadata.json, labels.json or labels.txt beside the model)' },
  reply: { key: 'serve.reply', type: 'string', help: 'json | cbor (cbor adds the full output tensor)' },
  range: { key: 'serve.range', type: 'string', help: 'auto | 0,1 | -1,1 | 0,255: the value range the model expects for pixels' },
  resize: { key: 'serve.resize', type: 'string', help: 'auto | crop | letterbox | stretch' },
  'top-k': { key: 'serve.topK', type: 'string', number: true, help: 'labels with scores in each result' },
};
export const WORKERS: FlagSpec = { key: 'node.workers', type: 'string', number: true, help: 'the most engines (worker threads) a node runs for its stage (0: its cores)' };
export const BATCH: FlagSpec = {
  key: 'dispatcher.batch',
  type: 'string',
  number: true,
  help: 'frames an engine computes in one call at most when several wait (0: the planner chooses, about 160 ms of work, up to 8; 1: none)',
};
export const ON_FAILURE: FlagSpec = { key: 'dispatcher.onNodeFailure', type: 'string', help: 'merge | replan | off: what a node failure with no standby up does' };
export const REPLAN: FlagSpec = { key: 'planner.replan', type: 'boolean', help: 'after the frames, re-plan from the measured stage times, redeploy and run again' };
export const HTTP: Record<string, FlagSpec> = {
  'http-port': { key: 'http.port', type: 'string', number: true, help: 'serve the live page (/) and Prometheus metrics (/metrics) on this port (0: a free one)' },
  'http-host': { key: 'http.host', type: 'string', help: 'address for --http-port (default 127.0.0.1)' },
};
export const PRECISION: FlagSpec = {
  key: 'dispatcher.precision',
  type: 'string',
  list: true,
  help: 'lossless | float16 | int8 | zfp: how precisely activations travel, for every hop or one per hop (dispatcher -> first stage, ..., last stage -> dispatcher); auto: chosen per hop from --bandwidth and --max-top1-loss',
};
