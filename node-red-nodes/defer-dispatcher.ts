/**
 * defer-dispatcher: deploys a model onto DEFER edge nodes and runs every
 * message's frame through the chain. Input `msg.payload`: an image Buffer
 * (JPEG, PNG, ...), JSON or CBOR frame bytes, a tensor (anything with `shape`
 * and `dataSync()`), or a typed array or array with `msg.shape`. Output: the
 * same message with `payload` (the output scores), `topk` (labels where the
 * model has them), `prediction` (the best label and score, with the top-k),
 * `frameId`, `latencyMs` and `hops`.
 *
 * With a frames topic it also takes frames from MQTT itself, on the DEFER
 * broker node's connection (no second connection that could race an embedded
 * broker), and with a predictions topic it publishes each prediction, with
 * its label, as JSON.
 */

import { randomBytes } from 'node:crypto';
import { loadConfig } from '../config/schema.js';
import { type StageMember, stageNodes } from '../dispatcher/deploy/deployment-package.js';
import { autoPrecision } from '../dispatcher/deploy/precision-auto.js';
import { type Deployment, Dispatcher } from '../dispatcher/dispatcher.js';
import { type DispatcherEvent, describeEvent } from '../dispatcher/events.js';
import { frameTensor, type ModelInput } from '../dispatcher/serving/frame-tensor.js';
import { modelInputFor } from '../dispatcher/serving/start-serving.js';
import { errorMessage } from '../lib/core/errors.js';
import { count } from '../lib/core/words.js';
import { initEngine } from '../lib/model/engine.js';
import type { FlatModel } from '../lib/model/flat-model.js';
import { loadModelMeta } from '../lib/model/labels.js';
import { loadFlatModel } from '../lib/model/model-source.js';
import { defaultCuts } from '../lib/planning/auto-plan.js';
import { shapeLine } from '../lib/planning/shape.js';
import { type DeviceFrame, hopLatencies, isName, MAX_BATCH, NAME_RULE, PRECISIONS, type Precision, parseFrame, type RawTensor, topK } from '../lib/protocol/index.js';
import { BrokerStartError, type BrokerState, type DeferBrokerNode, statusOf } from './defer-broker.js';
import { filterProblem, type NodeAPI, type NodeMessage, nameList, positiveInt, type RedNode, replyProblem, replyTopicFor, short } from './red.js';

export interface DispatcherConfig {
  name?: string;
  broker?: string;
  model?: string;
  nodes?: string;
  standby?: string;
  cuts?: string;
  /** nodes serving each stage, e.g. '2,1'; empty: one node per stage */
  replicas?: string;
  /** engines (worker threads) each node runs */
  workers?: number | string;
  /** frames an engine computes in one call at most when several wait (1: none) */
  batch?: number | string;
  codec?: string;
  precision?: string;
  topK?: number | string;
  timeoutMs?: number | string;
  maxWaiting?: number | string;
  /** an MQTT topic filter to take frames from, on the DEFER broker node's connection (e.g. cameras/+/image) */
  topic?: string;
  /** where each prediction is published, each + filled from the frame's topic (e.g. cameras/+/prediction) */
  replyTopic?: string;
  /** class names: comma-separated, or a labels.txt / labels.json / metadata.json file */
  labels?: string;
}

interface Settings {
  model: string;
  nodes: string[];
  standby: string[];
  cuts: string[] | 'auto';
  /** the nodes of each stage with their engines (the nodes in order, grouped by the replica counts) */
  shape: StageMember[][];
  codec: 'lz4' | 'none';
  precision: (Precision | 'auto')[];
  topK: number;
  timeoutMs: number;
  maxWaiting: number;
  topic: string;
  replyTopic: string;
  /** class names given in the field, a file of them, or null: the model's own (metadata.json, labels.txt) */
  labels: string[] | { file: string } | null;
}

/** Validate the editor's fields; a string says what is wrong. */
export function dispatcherSettings(c: DispatcherConfig): Settings | string {
  const model = (c.model ?? '').trim();
  if (!model) return 'no model: give a model.json path or a zoo name (tiny, resnet50, mobilenet)';
  const nodes = nameList(c.nodes);
  if (!nodes.length) return 'no edge nodes: give their ids, e.g. n1,n2';
  const badNode = nodes.find((n) => !isName(n));
  if (badNode) return `node id '${badNode}' must be ${NAME_RULE}`;
  if (new Set(nodes).size !== nodes.length) return 'a node id is listed twice';
  const standby = nameList(c.standby);
  const badStandby = standby.find((n) => !isName(n));
  if (badStandby) return `standby id '${badStandby}' must be ${NAME_RULE}`;
  const both = standby.find((n) => nodes.includes(n));
  if (both) return `'${both}' is both an edge node of the chain and a standby`;
  const replicas = nameList(c.replicas).map(Number);
  if (replicas.some((r) => !Number.isInteger(r) || r < 1)) return `replicas must be whole numbers >= 1, one per stage (e.g. 2,1), not '${c.replicas}'`;
  if (replicas.length && replicas.reduce((a, b) => a + b, 0) !== nodes.length) return `replicas ${replicas.join(',')} need ${replicas.reduce((a, b) => a + b, 0)} nodes, but ${nodes.length} are given`;
  const workers = positiveInt(c.workers, 1);
  if (Number.isNaN(workers)) return 'workers must be a positive integer';
  const batch = positiveInt(c.batch, 1);
  if (Number.isNaN(batch) || batch > MAX_BATCH) return `batch must be a whole number from 1 to ${MAX_BATCH} (frames an engine computes in one call; 1: none), not '${c.batch}'`;
  const counts = replicas.length ? replicas : nodes.map(() => 1);
  const starts = counts.map((_, k) => counts.slice(0, k).reduce((a, b) => a + b, 0));
  const shape = counts.map((r, k) => nodes.slice(starts[k], starts[k] + r).map((node): StageMember => ({ node, workers, ...(batch > 1 ? { batch } : {}) })));
  const stages = shape.length;
  const cutsText = (c.cuts ?? 'auto').trim();
  const cuts = cutsText === '' || cutsText === 'auto' ? 'auto' : nameList(cutsText);
  if (cuts !== 'auto' && cuts.length !== stages - 1)
    return `${cuts.length} cuts make ${cuts.length + 1} stages, but there are ${replicas.length ? `${stages} stages (replicas ${replicas.join(',')})` : `${stages} nodes`}: give ${stages - 1} cuts, or 'auto'`;
  const codec = c.codec || 'lz4';
  if (codec !== 'lz4' && codec !== 'none') return `codec must be lz4 or none, not '${codec}'`;
  const precision = nameList(c.precision || 'lossless') as (Precision | 'auto')[];
  const badPrecision = precision.find((p) => p !== 'auto' && !PRECISIONS.includes(p));
  if (badPrecision) return `precision '${badPrecision}' must be auto, or one of ${PRECISIONS.join(', ')} (one for every hop, or one per hop)`;
  if (precision.includes('auto') && precision.length > 1) return "precision 'auto' stands alone: it chooses every hop";
  if (precision.length > 1 && precision.length !== stages + 1) return `precision has ${precision.length} values; ${stages} stages have ${stages + 1} hops: give one value, or ${stages + 1}`;
  const topK = positiveInt(c.topK, 5);
  const timeoutMs = positiveInt(c.timeoutMs, 30_000);
  const maxWaiting = positiveInt(c.maxWaiting, 100);
  if (Number.isNaN(topK) || Number.isNaN(timeoutMs) || Number.isNaN(maxWaiting)) return 'top-k, timeout and waiting limit must be positive integers';
  const topic = (c.topic ?? '').trim();
  const replyTopic = (c.replyTopic ?? '').trim();
  const badTopic = topic ? filterProblem(topic) : null;
  if (badTopic) return `frames topic: ${badTopic}`;
  const badReply = replyTopic ? replyProblem(replyTopic, topic) : null;
  if (badReply) return badReply;
  const labelsText = (c.labels ?? '').trim();
  const labels = !labelsText ? null : labelsText.includes(',') ? labelsText.split(',').map((l) => l.trim()) : { file: labelsText };
  return { model, nodes, standby, cuts, shape, codec, precision, topK, timeoutMs, maxWaiting, topic, replyTopic, labels };
}

function isTensorLike(x: unknown): x is { shape: number[]; dtype?: string; dataSync(): ArrayLike<number> } {
  return typeof x === 'object' && x !== null && Array.isArray((x as { shape?: unknown }).shape) && typeof (x as { dataSync?: unknown }).dataSync === 'function';
}

/** The frame in a message: bytes (image, JSON, CBOR), a tensor, or an array with msg.shape. */
export function frameOf(msg: NodeMessage, maxBytes: number): DeviceFrame {
  const p = msg.payload;
  if (Buffer.isBuffer(p) || p instanceof Uint8Array) {
    if (Array.isArray(msg.shape)) return { format: 'json', tensor: { dtype: 'float32', shape: msg.shape as number[], data: Float32Array.from(p) }, bytes: p.byteLength };
    return parseFrame(p, maxBytes);
  }
  if (isTensorLike(p)) {
    const dtype = p.dtype === 'int32' ? 'int32' : 'float32';
    return { format: 'json', tensor: { dtype, shape: [...p.shape], data: dtype === 'int32' ? Int32Array.from(p.dataSync()) : Float32Array.from(p.dataSync()) }, bytes: 0 };
  }
  if ((ArrayBuffer.isView(p) || Array.isArray(p)) && Array.isArray(msg.shape)) {
    const data = Float32Array.from(p as ArrayLike<number>);
    return { format: 'json', tensor: { dtype: 'float32', shape: msg.shape as number[], data }, bytes: data.byteLength };
  }
  if (typeof p === 'string') return parseFrame(Buffer.from(p), maxBytes);
  throw new Error('msg.payload must be an image Buffer (JPEG, PNG), a tensor, or a typed array or array with msg.shape');
}

/** The status text while the supervisor mends the chain, for the events that start a repair. */
function statusWhileMending(e: DispatcherEvent): string | null {
  if (e.type === 'node-failed') return `node ${e.node} down: mending`;
  if (e.type === 'node-left') return `node ${e.node} left: mending`;
  if (e.type === 'broker-lost') return 'broker lost: frames held';
  if (e.type === 'repair-start' && e.kind === 'restore') return 'restoring the full chain';
  return null;
}

export default function (RED: NodeAPI): void {
  function DeferDispatcherNode(this: RedNode, config: DispatcherConfig) {
    RED.nodes.createNode(this, config);
    const node = this;
    const broker = RED.nodes.getNode(config.broker ?? '') as DeferBrokerNode | null;
    const settings = dispatcherSettings(config);
    const problem = !broker ? 'no DEFER broker configured: pick or add one' : broker.problem ? `broker: ${broker.problem}` : typeof settings === 'string' ? settings : null;
    if (problem) {
      node.status({ fill: 'red', shape: 'ring', text: short(problem) });
      node.error(`defer-dispatcher not started: ${problem}`);
      node.on('input', (msg, _send, done) => {
        node.error(`defer-dispatcher is not configured: ${problem}`, msg);
        done();
      });
      return;
    }
    const s = settings as Settings;
    let closed = false;
    let flat: FlatModel | undefined;
    let dispatcher: Dispatcher | undefined;
    let deployment: Deployment | undefined;
    let input: ModelInput | undefined;
    let labels: string[] | null = null;
    let ready = false;
    let waiting = 0;
    const readyWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
    let failure: Error | null = null;

    let mending = false;
    const showNodes = () => {
      if (!dispatcher || !ready || mending) return;
      // the deployment as it is now: the supervisor may have moved a stage to a standby, merged one, or dropped a replica
      const stages = deployment ? deployment.package.stages.map((st) => stageNodes(st).map((n) => ({ node: n.nodeId, workers: n.assignment.workers ?? 1 }))) : s.shape;
      const all = stages.flat().map((m) => m.node);
      const off = all.filter((n) => dispatcher!.nodes.statuses.get(n)?.state === 'offline');
      if (off.length) node.status({ fill: 'red', shape: 'ring', text: `node ${off.join(', ')} offline` });
      else node.status({ fill: 'green', shape: 'dot', text: `ready (${count(all.length, 'node')}: ${shapeLine(stages)})` });
    };
    const user = {
      id: node.id,
      brokerState(b: BrokerState) {
        if (closed) return;
        if (!b.connected) node.status({ fill: 'red', shape: 'ring', text: short(b.text) });
        else if (ready) showNodes();
      },
    };
    const fail = (err: unknown) => {
      // the broker's own failure is logged once by the broker node, with what to do: here, its short form
      const text = err instanceof BrokerStartError ? `not started: ${err.status}` : errorMessage(err);
      failure = new Error(text);
      node.status({ fill: 'red', shape: 'dot', text: statusOf(err) });
      if (!(err instanceof BrokerStartError)) node.error(`defer-dispatcher: ${text}`);
      for (const w of readyWaiters.splice(0)) w.reject(failure);
    };

    (async () => {
      node.status({ fill: 'yellow', shape: 'ring', text: 'connecting' });
      const endpoint = await broker!.register(user);
      if (closed) return;
      // frames from MQTT wait for the chain like wired messages: subscribed now, none is lost while it deploys
      if (s.topic) await broker!.subscribe(user, s.topic, onFrame);
      if (closed) return;
      const conf = loadConfig(undefined, { 'dispatcher.model': s.model, 'dispatcher.codec': s.codec, 'dispatcher.precision': s.precision, 'serve.topK': s.topK }, {});
      const backend = await initEngine('auto');
      node.status({ fill: 'yellow', shape: 'ring', text: 'loading model' });
      flat = await loadFlatModel(s.model);
      const meta = await loadModelMeta(s.model, s.labels && !Array.isArray(s.labels) ? s.labels.file : '');
      labels = Array.isArray(s.labels) ? s.labels : meta.labels;
      input = modelInputFor(flat, conf.serve, meta);
      if (closed) return;
      const cuts = s.cuts === 'auto' ? await defaultCuts(flat, conf, backend, s.shape.length, (l) => node.log(l)) : s.cuts;
      dispatcher = new Dispatcher({
        ...conf.dispatcher,
        brokerUrl: endpoint.url,
        pipeline: endpoint.pipeline,
        frameTimeoutMs: s.timeoutMs,
        client: broker!.client(),
        standby: s.standby,
        precision: s.precision,
        choosePrecision: autoPrecision(conf, backend, s.nodes, (l) => node.log(l)),
        chooseCuts: (f, n) => defaultCuts(f, conf, backend, n, (l) => node.log(l)),
      });
      dispatcher.events.onAny((e) => {
        node.log(describeEvent(e).trim());
        const mendingText = statusWhileMending(e);
        if (mendingText) {
          mending = true;
          node.status({ fill: 'yellow', shape: 'ring', text: mendingText });
        } else if (e.type === 'repair-done') {
          mending = false;
          showNodes();
        } else if (e.type === 'repair-failed') {
          mending = false;
          node.status({ fill: 'red', shape: 'ring', text: short(`could not mend the chain: ${e.reason}`) });
        } else if (!mending && e.type === 'weights-sent') node.status({ fill: 'yellow', shape: 'ring', text: `deploying: weights ${e.pct}%` });
        else if (!mending && e.type === 'nodes-ready') node.status({ fill: 'yellow', shape: 'ring', text: `deploying: ${e.ready.length}/${e.total} nodes ready` });
      });
      await dispatcher.connect();
      if (closed) return;
      node.status({ fill: 'yellow', shape: 'ring', text: `deploying on ${s.nodes.join(', ')}` });
      deployment = await dispatcher.deploy(
        flat,
        s.shape.map((st) => st[0].node),
        cuts,
        s.shape,
      );
      ready = true;
      node.log(`deployment ${deployment.id} ready: cuts ${cuts.join(', ') || '(none)'} on ${shapeLine(s.shape)}`);
      dispatcher.nodes.onChange(showNodes);
      showNodes();
      for (const w of readyWaiters.splice(0)) w.resolve();
    })().catch((err) => {
      if (!closed) fail(err);
    });

    const whenReady = () => (ready ? Promise.resolve() : failure ? Promise.reject(failure) : new Promise<void>((resolve, reject) => readyWaiters.push({ resolve, reject })));

    /** A message's frame through the chain: the message with the prediction, and published where the predictions topic says. */
    const serve = async (msg: NodeMessage): Promise<NodeMessage> => {
      const reply = s.replyTopic ? replyTopicFor(s.replyTopic, s.topic, msg.topic) : null;
      try {
        await whenReady();
        const frame = frameOf(msg, 64 * 1024 * 1024);
        const tensor: RawTensor = await frameTensor(frame, input!);
        const r = await deployment!.stream.send(tensor, 'node-red');
        msg.payload = Array.from(r.output.data as Float32Array);
        const top = topK(r.output.data, s.topK, labels);
        msg.topk = top;
        msg.frameId = r.frame;
        msg.latencyMs = Math.round(r.latencyMs * 10) / 10;
        msg.hops = hopLatencies(r);
        // the prediction in short, as it is published: what a debug node or a dashboard shows
        const prediction = { label: top[0]?.label, score: top[0]?.score, topk: top, frameId: r.frame, latencyMs: msg.latencyMs };
        msg.prediction = prediction;
        if (reply) publish(reply, prediction);
        return msg;
      } catch (err) {
        if (reply) publish(reply, { error: errorMessage(err) });
        throw err;
      }
    };
    const publish = (topic: string, body: object) => {
      if (!ready) return; // no chain (the broker did not start, or it is not deployed yet): the node's error says why
      try {
        broker!
          .client()
          .publishAsync(topic, JSON.stringify(body), { qos: 1 })
          .catch((err: unknown) => node.warn(`cannot publish the prediction on ${topic}: ${errorMessage(err)}`));
      } catch (err) {
        node.warn(`cannot publish the prediction on ${topic}: ${errorMessage(err)}`);
      }
    };
    /** Run `msg`; its error, if any, as one line (no stack) that a Catch node gets with the message. */
    const run = (msg: NodeMessage, send: (m: NodeMessage) => void, done: () => void) => {
      if (waiting >= s.maxWaiting) {
        node.error(`busy: ${waiting} messages already wait for the chain (max ${s.maxWaiting}); the message was dropped`, msg);
        done();
        return;
      }
      waiting++;
      serve(msg).then(
        (m) => {
          waiting--;
          send(m);
          done();
        },
        (err: unknown) => {
          waiting--;
          node.error(errorMessage(err), msg);
          done();
        },
      );
    };
    function onFrame(topic: string, payload: Buffer) {
      if (closed) return;
      run(
        { _msgid: RED.util?.generateId() ?? randomBytes(8).toString('hex'), topic, payload },
        (m) => node.send(m),
        () => undefined,
      );
    }

    node.on('input', (msg, send, done) => run(msg, send, () => done()));

    node.on('close', (_removed, done) => {
      closed = true;
      for (const w of readyWaiters.splice(0)) w.reject(new Error('the node is closing'));
      (async () => {
        await dispatcher?.close().catch(() => undefined);
        flat?.dispose();
        flat = undefined;
        await broker!.deregister(user);
        node.status({});
      })().then(done, done);
    });
  }

  RED.nodes.registerType('defer-dispatcher', DeferDispatcherNode as never);
}
