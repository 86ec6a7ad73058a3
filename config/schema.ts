/**
 * One configuration schema for every role (broker, node, dispatcher, `up`).
 * Precedence: defaults < config file (--config) < DEFER_* environment
 * variables < command-line flags. Unknown keys and bad values are rejected
 * with the key's name. docs/configuration.md is generated from this schema.
 */

import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import convict from 'convict';
import { checkTopicLimits, DEFAULT_TOPIC_LIMITS, type TopicLimits } from '../broker/topic-limits.js';
import { DeferError, errorMessage } from '../lib/core/errors.js';
import { BACKEND_CHOICES } from '../lib/model/engine.js';
import { isName, NAME_RULE, PRECISIONS, type Precision } from '../lib/protocol/index.js';

/** A comma-separated value from a flag or an environment variable, as a list. */
const commaList = (v: string) =>
  v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

convict.addFormat({
  name: 'name-list',
  validate(v: unknown) {
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || !isName(x))) {
      throw new Error('must be a list of names made of letters, digits, _ . -');
    }
  },
  coerce: commaList,
});

convict.addFormat({
  name: 'layer-list',
  validate(v: unknown) {
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || x.length === 0)) throw new Error('must be a list of layer names');
  },
  coerce: commaList,
});

convict.addFormat({
  name: 'precision-list',
  validate(v: unknown) {
    if (Array.isArray(v) && v.length === 1 && v[0] === 'auto') return;
    if (!Array.isArray(v) || v.length === 0 || v.some((x) => !PRECISIONS.includes(x))) throw new Error(`must be auto, or one of ${PRECISIONS.join(', ')}, or one per hop, comma separated`);
  },
  coerce: commaList,
});

convict.addFormat({
  name: 'number-list',
  validate(v: unknown) {
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'number' || !Number.isFinite(x) || x < 0)) throw new Error('must be a list of numbers >= 0, comma separated');
  },
  coerce: (v: string) => commaList(v).map(Number),
});

convict.addFormat({
  name: 'factor',
  validate(v: unknown) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 1 || v > 1000) throw new Error('must be a number from 1 to 1000');
  },
  coerce: Number,
});

convict.addFormat({
  name: 'milliseconds',
  validate(v: unknown) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 10_000) throw new Error('must be a number of milliseconds from 0 to 10000 (fractions allowed)');
  },
  coerce: Number,
});

convict.addFormat({
  name: 'topic-name',
  validate(v: unknown) {
    if (typeof v !== 'string' || !isName(v)) throw new Error(`must be ${NAME_RULE} (it becomes a topic level)`);
  },
});

convict.addFormat({
  name: 'mqtt-url',
  validate(v: unknown) {
    if (typeof v !== 'string' || !/^(mqtts?|wss?|tcp|ssl):\/\/[^\s/]+(:\d+)?\/?$/.test(v)) throw new Error('must be a broker URL such as mqtt://127.0.0.1:1883');
  },
});

convict.addFormat({
  name: 'topic-limits',
  validate(v: unknown) {
    try {
      checkTopicLimits(v, 'the map');
    } catch (err) {
      throw new Error(errorMessage(err).replace(/^the map:? ?/, ''));
    }
  },
  coerce: (v: string) => {
    try {
      return JSON.parse(v) as unknown;
    } catch {
      return v;
    }
  },
});

const int = (min: number, max: number) => (v: unknown) => {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new Error(`must be an integer from ${min} to ${max}`);
};

export const schema = {
  pipeline: { doc: 'Pipeline name: the topic root is defer/<pipeline>/. Nodes and dispatcher must share it.', format: 'topic-name', default: 'default', env: 'DEFER_PIPELINE' },
  backend: { doc: 'TensorFlow.js engine: auto tries tensorflow (tfjs-node), then wasm, then cpu.', format: [...BACKEND_CHOICES], default: 'auto', env: 'DEFER_BACKEND' },
  logLevel: { doc: 'Log level (logs go to stderr).', format: ['debug', 'info', 'warn', 'error', 'silent'], default: 'info', env: 'DEFER_LOG_LEVEL' },
  broker: {
    url: { doc: 'Broker URL that nodes and dispatcher connect to. Any MQTT 3.1.1 broker (Mosquitto, EMQX, ...) works.', format: 'mqtt-url', default: 'mqtt://127.0.0.1:1883', env: 'DEFER_BROKER_URL' },
    host: { doc: 'Address the embedded broker listens on (defer broker, defer up).', format: String, default: '127.0.0.1', env: 'DEFER_BROKER_HOST' },
    port: { doc: 'Port of the embedded broker; 0 picks a free one.', format: int(0, 65535), default: 1883, env: 'DEFER_BROKER_PORT' },
    maxPacketBytes: {
      doc: 'Largest MQTT packet the embedded broker accepts; a client sending a larger one is disconnected.',
      format: int(1024, 268_435_455),
      default: 64 * 1024 * 1024,
      env: 'DEFER_BROKER_MAX_PACKET_BYTES',
    },
    users: {
      doc: 'Users file of the embedded broker (defer broker): salted password hashes and roles, made with defer user add. Empty: anonymous clients, no ACLs (keep broker.host 127.0.0.1 then).',
      format: String,
      default: '',
      env: 'DEFER_BROKER_USERS',
    },
    tlsCert: { doc: 'TLS certificate (PEM) of the embedded broker (defer broker): it then speaks mqtts.', format: String, default: '', env: 'DEFER_BROKER_TLS_CERT' },
    tlsKey: { doc: 'TLS private key (PEM) for broker.tlsCert.', format: String, default: '', env: 'DEFER_BROKER_TLS_KEY' },
    ca: { doc: "CA certificate (PEM) that clients check the broker's TLS certificate against (mqtts:// URLs).", format: String, default: '', env: 'DEFER_BROKER_CA' },
    username: { doc: 'Username that nodes, dispatchers and sensors connect with.', format: String, default: '', env: 'DEFER_BROKER_USERNAME' },
    password: { doc: 'Password for broker.username (prefer the environment variable to a file).', format: String, default: '', env: 'DEFER_BROKER_PASSWORD', sensitive: true },
    authModule: {
      doc: 'ES module with an external credential check for the embedded broker (defer broker): its default export gets { username, password, clientId } and returns { role, id } or null. Asked for users the users file does not know.',
      format: String,
      default: '',
      env: 'DEFER_BROKER_AUTH_MODULE',
    },
    topicLimits: {
      doc: 'Largest payload per topic pattern under defer/<pipeline>/ (JSON map of MQTT filters to bytes) in the embedded broker; a client publishing more is disconnected and the refusal reported on the errors topic. A map given adds to these defaults or overrides them. broker.maxPacketBytes bounds every topic.',
      format: 'topic-limits',
      default: DEFAULT_TOPIC_LIMITS as TopicLimits,
      env: 'DEFER_BROKER_TOPIC_LIMITS',
    },
    persistence: {
      doc: 'Folder where the embedded broker keeps retained messages and sessions (LevelDB), so that deployments and statuses survive its restart; empty: memory only (the dispatcher then republishes its deployment when the broker comes back).',
      format: String,
      default: '',
      env: 'DEFER_BROKER_PERSISTENCE',
    },
  },
  node: {
    id: { doc: 'Id of this edge node (defer node): a topic level, unique in the pipeline.', format: String, default: '', env: 'DEFER_NODE_ID' },
    maxQueue: {
      doc: "Activations a node holds while busy; more are dropped and counted. A node running its stage on W engines with batches of B holds at least 4 x W x B (what the dispatcher's default window may give it).",
      format: int(1, 100_000),
      default: 64,
      env: 'DEFER_NODE_MAX_QUEUE',
    },
    weightCache: {
      doc: 'Folder where a node keeps its stage weights by sha256 (the newest 8), so that after a restart, or when a standby takes over a stage it prefetched, it builds the stage without a transfer; empty: no cache (and no prefetch).',
      format: String,
      default: join(homedir(), '.cache', 'defer', 'weights'),
      env: 'DEFER_NODE_WEIGHT_CACHE',
    },
    slowdown: {
      doc: 'Artificial slow-down factor (>= 1): after each frame, and in its calibration, the node idles (factor - 1) times its compute time. For testing plans on unequal devices.',
      format: 'factor',
      default: 1,
      env: 'DEFER_NODE_SLOWDOWN',
    },
    workers: {
      doc: "The most engines (worker threads, each with its own TensorFlow.js engine and copy of the stage's weights) a node runs for its stage; the dispatcher's assignment says how many it runs. 0: the node's cores. (The wasm backend is single-threaded: one engine uses one core.)",
      format: int(0, 256),
      default: 0,
      env: 'DEFER_NODE_WORKERS',
    },
    memoryLimit: {
      doc: "The memory this node may use (a size: 256M, 1.5G); its planner offer is this less what the node holds once started. Empty: its cgroup's limit where it can read one (a container; defer up --node-memory passes it), else the host's memory.",
      format: String,
      default: '',
      env: 'DEFER_NODE_MEMORY_LIMIT',
    },
    heartbeatThread: {
      doc: 'Send the heartbeat from a thread of its own, with its own connection to the broker, so that a stage computed on the main thread does not silence it (a slow device is not a dead one). false: from the main thread, about 15-20 MB less memory, and a node busy computing for longer than dispatcher.heartbeatTimeoutMs is taken for failed.',
      format: Boolean,
      default: true,
      env: 'DEFER_NODE_HEARTBEAT_THREAD',
    },
    cpus: {
      doc: "The cores this node may use, e.g. 0.2 (a CPU quota it runs under): it calibrates under it, reports it as its cores, and names itself a device of its own. 0: its cgroup's quota where it can read one (a container; not inside a network namespace of its own, whose sysfs has no cgroups: defer up --fleet passes it), else none.",
      format: Number,
      default: 0,
      env: 'DEFER_NODE_CPUS',
    },
    keepPackedWeights: {
      doc: "Keep each weight the engine has packed (wasm: XNNPACK's copies of convolution filters and matrix operands) as well as its packed copy. By default a node gives those weights' memory back after its stage's first frame and checks that the stage then computes the same bits: a stage then needs about its weights once, not twice.",
      format: Boolean,
      default: false,
      env: 'DEFER_NODE_KEEP_PACKED_WEIGHTS',
    },
    plainConvolutions: {
      doc: "Compute every convolution with the engine's own kernel. By default, on the wasm engine, a node computes a convolution whose filter holds more bytes than a frame's input patches as one matrix product, the same bits: the engine then keeps its filter once, not twice (ResNet50 on one node: peak RSS about 270 MiB against 355).",
      format: Boolean,
      default: false,
      env: 'DEFER_NODE_PLAIN_CONVOLUTIONS',
    },
    heartbeatMs: {
      doc: 'How often a node publishes its heartbeat (defer/<pipeline>/node/<id>/alive), ms; the dispatcher takes a silent node as failed after dispatcher.heartbeatTimeoutMs. 0: none.',
      format: int(0, 3_600_000),
      default: 1000,
      env: 'DEFER_NODE_HEARTBEAT_MS',
    },
  },
  dispatcher: {
    model: {
      doc: 'Model: a zoo name (tiny, resnet50, mobilenet) or the path of a model.json (a TensorFlow.js LayersModel or graph model) or its folder.',
      format: String,
      default: 'resnet50',
      env: 'DEFER_MODEL',
    },
    nodes: { doc: 'Node ids, one per stage, in chain order (defer dispatch).', format: 'name-list', default: [] as string[], env: 'DEFER_NODES' },
    cut: {
      doc: 'Layer names (graph models: node names, or a unique ending of one) to cut after, in order; empty: cuts that balance the estimated work (see balanceBy).',
      format: 'layer-list',
      default: [] as string[],
      env: 'DEFER_CUT',
    },
    balanceBy: {
      doc: "What the automatic cuts balance: time (each segment between valid cuts measured on this backend), estimated flops, parameter count, or memory (the planner's estimate of each stage's memory: the heaviest stage as light as it can be).",
      format: ['time', 'flops', 'params', 'memory'],
      default: 'time',
      env: 'DEFER_BALANCE_BY',
    },
    seed: { doc: "Seed of the zoo models' weights and of synthetic frames.", format: int(0, 2 ** 31 - 1), default: 1, env: 'DEFER_SEED' },
    chunkBytes: { doc: 'Size of the retained weight chunks. 256 KiB suits every common broker.', format: int(1024, 64 * 1024 * 1024), default: 256 * 1024, env: 'DEFER_CHUNK_BYTES' },
    readyTimeoutMs: { doc: 'How long to wait for every node to load its stage.', format: int(1000, 3_600_000), default: 180_000, env: 'DEFER_READY_TIMEOUT_MS' },
    frameTimeoutMs: { doc: 'How long a frame may take end to end before it is reported lost.', format: int(100, 3_600_000), default: 60_000, env: 'DEFER_FRAME_TIMEOUT_MS' },
    maxInFlight: {
      doc: "Frames in the chain at once; 0: two per engine (a worker thread of a node, or the node itself), four per engine where a stage has replicas, times the engine's batch.",
      format: int(0, 10_000),
      default: 0,
      env: 'DEFER_MAX_IN_FLIGHT',
    },
    batch: {
      doc: "Frames an engine computes in one call at most when several wait for it (a batch: more frames per second for a light stage under load, each waiting longer; exact, as a node checks its stage computes a batch bit for bit as each frame alone). 0: chosen by the shape planner, about 160 ms of an engine's work and at most 8 frames, as its node's memory allows (1 for a chain given by --cut or --shape chain); 1: no batches.",
      format: int(0, 16),
      default: 0,
      env: 'DEFER_BATCH',
    },
    maxMessageBytes: { doc: 'Largest activation message a node or dispatcher accepts.', format: int(1024, 268_435_455), default: 64 * 1024 * 1024, env: 'DEFER_MAX_MESSAGE_BYTES' },
    codec: { doc: 'Activation codec: lz4 (lossless, compressed) or none (raw bytes).', format: ['lz4', 'none'], default: 'lz4', env: 'DEFER_CODEC' },
    precision: {
      doc: "How precisely activations travel: lossless (bit-exact, the default), float16 (IEEE half floats: half the bytes), int8 (one scale and offset per channel: a quarter), or zfp (DEFER's codec, 12 bit planes; where its optional addon is built). One value for every hop, or one per hop, in order: dispatcher -> first stage, between stages, last stage -> dispatcher (e.g. lossless,int8,lossless for 2 stages). Lossy hops change the outputs: measure the agreement (docs/protocol.md#tensor). auto: each hop between stages lossless where its link (planner.bandwidthMbps) carries it within the slowest stage's time, else float16 or int8 within planner.maxTop1Loss, as measured on calibration frames.",
      format: 'precision-list',
      default: ['lossless'] as (Precision | 'auto')[],
      env: 'DEFER_PRECISION',
    },
    qos: { doc: 'MQTT QoS of activations (0 or 1).', format: [0, 1], default: 1, env: 'DEFER_QOS' },
    standby: {
      doc: 'Standby node ids, kept out of the chain: when a node of the chain fails, the first standby that is up takes over its stage (weights from the broker, or its cache). Nodes that fail and come back join them.',
      format: 'name-list',
      default: [] as string[],
      env: 'DEFER_STANDBY',
    },
    heartbeatTimeoutMs: {
      doc: 'A node of the chain whose heartbeat is older than this (or than 3 times the longest it took for one frame, if longer) is taken as failed (a half-open link, a frozen process); its Last Will catches a crash at once. 0: Last Will only.',
      format: int(0, 3_600_000),
      default: 5000,
      env: 'DEFER_HEARTBEAT_TIMEOUT_MS',
    },
    prefetchStandby: {
      doc: "Standbys keep the running deployment's stages in their weight caches (fetched from the broker one at a time, while idle), so that taking over a failed node's stage needs no transfer.",
      format: Boolean,
      default: true,
      env: 'DEFER_PREFETCH_STANDBY',
    },
    restoreAfterMs: {
      doc: 'After a merge or re-plan, when standbys (such as the failed node, back again) have been up and idle this long, the chain goes back to the split it started with; a failed replica back and idle this long rejoins its stage. 0: it stays as mended.',
      format: int(0, 86_400_000),
      default: 10_000,
      env: 'DEFER_RESTORE_AFTER_MS',
    },
    onNodeFailure: {
      doc: 'When a node of the chain fails and no standby is up: merge its stage into the lighter neighbour, replan (cuts balanced again over the nodes left, see balanceBy), or off (its frames fail).',
      format: ['merge', 'replan', 'off'],
      default: 'merge',
      env: 'DEFER_ON_NODE_FAILURE',
    },
  },
  http: {
    port: {
      doc: "Port of the dispatcher's live page (/) and Prometheus metrics (/metrics); -1: none (the default), 0: a free one.",
      format: int(-1, 65535),
      default: -1,
      env: 'DEFER_HTTP_PORT',
    },
    host: {
      doc: 'Address the live page and metrics listen on. 127.0.0.1 keeps them on this machine; a wider one is warned about (there is no authentication).',
      format: String,
      default: '127.0.0.1',
      env: 'DEFER_HTTP_HOST',
    },
  },
  planner: {
    auto: {
      doc: "Plan the pipeline from measured figures: profile the model (cached), read each node's calibration (or planner.speeds), choose cuts and node order that minimise the bottleneck.",
      format: Boolean,
      default: false,
      env: 'DEFER_PLANNER_AUTO',
    },
    speeds: {
      doc: "Relative speed of each node, in the order of the nodes (1: as fast as the planning machine, 0.5: twice as slow). Empty: each node's own calibration.",
      format: 'number-list',
      default: [] as number[],
      env: 'DEFER_PLANNER_SPEEDS',
    },
    memoryMb: {
      doc: 'Memory each node can give its stage, MB, one value per node or one for all. Empty: the free memory each node reports.',
      format: 'number-list',
      default: [] as number[],
      env: 'DEFER_PLANNER_MEMORY_MB',
    },
    bandwidthMbps: {
      doc: "Bandwidth of each node's link to the broker, Mbit/s, one value per node or one for all; 0 or empty: loopback (not a limit).",
      format: 'number-list',
      default: [] as number[],
      env: 'DEFER_PLANNER_BANDWIDTH_MBPS',
    },
    latencyMs: { doc: "One-way latency of each node's link, ms, one value per node or one for all; empty: 0.", format: 'number-list', default: [] as number[], env: 'DEFER_PLANNER_LATENCY_MS' },
    dispatcherBandwidthMbps: {
      doc: "Bandwidth of the dispatcher's link (frames out, results in), Mbit/s; 0: loopback.",
      format: int(0, 1_000_000),
      default: 0,
      env: 'DEFER_PLANNER_DISPATCHER_BANDWIDTH_MBPS',
    },
    relayMsPerMB: {
      doc: "CPU ms the broker and dispatcher spend per MB of messages relayed (the frame and every stage's output), charged to their host when nodes share it (measured with defer up on the 2-core VM: docs/planner.md).",
      format: 'milliseconds',
      default: 8,
      env: 'DEFER_PLANNER_RELAY_MS_PER_MB',
    },
    relayMsPerMessage: {
      doc: 'CPU ms the broker and dispatcher spend per message relayed (a frame makes stages + 1), measured as relayMsPerMB.',
      format: 'milliseconds',
      default: 0.4,
      env: 'DEFER_PLANNER_RELAY_MS_PER_MESSAGE',
    },
    order: { doc: 'best: try every order of the nodes along the chain; given: keep the order of dispatcher.nodes.', format: ['best', 'given'], default: 'best', env: 'DEFER_PLANNER_ORDER' },
    shape: {
      doc: "auto: without dispatcher.cut, the planner chooses the deployment's shape from the nodes' measured figures: the number of stages, the cuts, which nodes serve each stage (replicas, fed by load), each node's engines (worker threads), and which nodes stay idle. chain: one node per stage, one engine each (cuts balanced, or planned with planner.auto).",
      format: ['auto', 'chain'],
      default: 'auto',
      env: 'DEFER_PLANNER_SHAPE',
    },
    replicas: {
      doc: 'With planner.shape auto: the number of nodes serving each stage, e.g. 2,1 (two replicas of the first of two stages); the planner chooses the rest. Empty: the planner chooses.',
      format: 'number-list',
      default: [] as number[],
      env: 'DEFER_PLANNER_REPLICAS',
    },
    cacheDir: { doc: 'Where model profiles are cached; empty: ~/.cache/defer for zoo models, beside the model.json for model files.', format: String, default: '', env: 'DEFER_PLANNER_CACHE_DIR' },
    refresh: { doc: 'Profile the model again even when a cached profile exists.', format: Boolean, default: false, env: 'DEFER_PLANNER_REFRESH' },
    replan: {
      doc: 'After the frames, compare measured stage times with predicted ones, re-plan with the measured figures, redeploy if the plan changed, and run the frames again.',
      format: Boolean,
      default: false,
      env: 'DEFER_PLANNER_REPLAN',
    },
    maxTop1Loss: {
      doc: 'precision auto: the largest loss of top-1 agreement with the lossless chain, percent, summed over the lossy hops, as measured on the calibration frames.',
      format: (v: unknown) => {
        if (typeof v !== 'number' || !(v >= 0 && v <= 100)) throw new Error('must be a percentage between 0 and 100');
      },
      default: 0.5,
      env: 'DEFER_PLANNER_MAX_TOP1_LOSS',
    },
    calibrationImages: {
      doc: "precision auto: a folder of sample images (the devices' kind of frames) to measure the lossy precisions' agreement on; empty: seeded synthetic frames (weak evidence for a real model: give real samples).",
      format: String,
      default: '',
      env: 'DEFER_PLANNER_CALIBRATION_IMAGES',
    },
    calibrationFrames: { doc: 'precision auto: how many calibration frames (images or synthetic) to measure on.', format: int(1, 100_000), default: 16, env: 'DEFER_PLANNER_CALIBRATION_FRAMES' },
    onlineTimeoutMs: { doc: 'How long the planner waits for the nodes to report their calibration.', format: int(1000, 3_600_000), default: 60_000, env: 'DEFER_PLANNER_ONLINE_TIMEOUT_MS' },
  },
  serve: {
    policy: {
      doc: 'When devices send faster than the chain serves: latest (keep only the newest waiting frame per device), queue (keep up to serve.queueSize per device), reject (answer busy at once). Every frame not served is counted.',
      format: ['latest', 'queue', 'reject'],
      default: 'latest',
      env: 'DEFER_SERVE_POLICY',
    },
    queueSize: { doc: 'Frames a device may have waiting with policy queue; more are dropped and counted.', format: int(1, 10_000), default: 8, env: 'DEFER_SERVE_QUEUE_SIZE' },
    maxDevices: { doc: 'Devices served at once; frames from more are answered too-many-devices.', format: int(1, 1_000_000), default: 1000, env: 'DEFER_SERVE_MAX_DEVICES' },
    maxFrameBytes: { doc: 'Largest frame message accepted from a device.', format: int(64, 268_435_455), default: 16 * 1024 * 1024, env: 'DEFER_SERVE_MAX_FRAME_BYTES' },
    maxPixels: { doc: 'Largest image (width x height) decoded; larger ones are refused before decoding.', format: int(1, 1_000_000_000), default: 40_000_000, env: 'DEFER_SERVE_MAX_PIXELS' },
    compactFirstHop: {
      doc: "Image frames go to the first stage's node as the device sent them (JPEG, PNG, ...) and that node decodes and normalises them, with the same code and so the same floats: a 30 KB JPEG travels instead of 588 KB of float32 pixels. The dispatcher checks each image's header first. false: the dispatcher decodes.",
      format: Boolean,
      default: true,
      env: 'DEFER_SERVE_COMPACT_FIRST_HOP',
    },
    topK: { doc: 'Labels with scores in each JSON result.', format: int(1, 1000), default: 5, env: 'DEFER_SERVE_TOP_K' },
    reply: {
      doc: 'Result format when the frame does not ask: json (top-k, latency per hop) or cbor (the same and the full output tensor).',
      format: ['json', 'cbor'],
      default: 'json',
      env: 'DEFER_SERVE_REPLY',
    },
    range: {
      doc: 'Value range the model expects for image pixels; auto: -1,1 for a Teachable Machine model (metadata.json), else 0,1. Ignored when serve.mean and serve.std are set.',
      format: ['auto', '0,1', '-1,1', '0,255'],
      default: 'auto',
      env: 'DEFER_SERVE_RANGE',
    },
    mean: { doc: 'Per-channel mean on the 0..1 scale; with serve.std, pixels become (p/255 - mean) / std.', format: 'number-list', default: [] as number[], env: 'DEFER_SERVE_MEAN' },
    std: { doc: 'Per-channel standard deviation on the 0..1 scale (see serve.mean).', format: 'number-list', default: [] as number[], env: 'DEFER_SERVE_STD' },
    channelOrder: { doc: "Channel order of the model's colour input.", format: ['rgb', 'bgr'], default: 'rgb', env: 'DEFER_SERVE_CHANNEL_ORDER' },
    resize: {
      doc: 'How an image of another size is fitted: crop (scale to cover, centre crop), letterbox (scale to fit, pad), stretch; auto: crop.',
      format: ['auto', 'crop', 'letterbox', 'stretch'],
      default: 'auto',
      env: 'DEFER_SERVE_RESIZE',
    },
    labels: {
      doc: 'Labels file (JSON array or one label per line); empty: metadata.json, labels.json or labels.txt beside the model, else class indices.',
      format: String,
      default: '',
      env: 'DEFER_SERVE_LABELS',
    },
    metricsIntervalMs: {
      doc: 'How often the serving dispatcher publishes its counters on defer/<pipeline>/metrics/<dispatcher>; 0: only when it stops.',
      format: int(0, 3_600_000),
      default: 5000,
      env: 'DEFER_SERVE_METRICS_INTERVAL_MS',
    },
  },
  up: {
    serve: {
      doc: "After deploying, serve devices' frames (defer/<pipeline>/frames/<device>) until SIGINT or SIGTERM, instead of streaming synthetic frames.",
      format: Boolean,
      default: false,
      env: 'DEFER_UP_SERVE',
    },
    slowdown: { doc: 'Slow-down factor of each node that defer up starts, in order (see node.slowdown); empty: none.', format: 'number-list', default: [] as number[], env: 'DEFER_UP_SLOWDOWN' },
    nodes: { doc: 'Number of edge-node processes that defer up starts.', format: int(1, 64), default: 3, env: 'DEFER_UP_NODES' },
    standby: { doc: 'Extra edge-node processes that defer up starts as standbys (see dispatcher.standby).', format: int(0, 64), default: 0, env: 'DEFER_UP_STANDBY' },
    nodeMemory: {
      doc: 'Memory limit of each node process that defer up starts, e.g. 256M: each runs in a cgroup of its own (v2, or v1 memory and cpu controllers; root needed), as a small device would. A node the kernel kills for memory stops the run, named as such. Empty: no limit.',
      format: String,
      default: '',
      env: 'DEFER_UP_NODE_MEMORY',
    },
    nodeCpus: {
      doc: 'CPU quota of each node process that defer up starts, in cores (0.5: half of one), in its cgroup as nodeMemory. 0: no quota.',
      format: Number,
      default: 0,
      env: 'DEFER_UP_NODE_CPUS',
    },
    fleet: {
      doc: 'A fleet file (JSON, docs/fleets.md) that defer up emulates: device classes with their cores, memory and link, how many of each, and changes at given times; each device a node process in a cgroup of its own and, where its class has a link, a network namespace of its own with that link shaped (root needed). Sets the number of nodes. Empty: none.',
      format: String,
      default: '',
      env: 'DEFER_UP_FLEET',
    },
    frames: { doc: 'Synthetic frames that defer up and defer dispatch stream through the chain (defer dispatch: 0 deploys only).', format: int(0, 1_000_000), default: 30, env: 'DEFER_UP_FRAMES' },
    pixelFrames: {
      doc: "An image model's synthetic frames are uint8 pixels, as a camera gives them, normalised by the first stage's node as serve.range (or serve.mean and serve.std) says: a quarter of float32's bytes on the first hop; the single-process baseline normalises them too. Only where the first hop is lossless (a lossy or auto precision there keeps float32 frames). false: float32 values in [0, 1).",
      format: Boolean,
      default: true,
      env: 'DEFER_UP_PIXEL_FRAMES',
    },
    baseline: { doc: 'Also run the whole model in one process on the same frames (throughput baseline and maxAbsDiffVsLocal).', format: Boolean, default: true, env: 'DEFER_UP_BASELINE' },
    json: { doc: 'Print the summary as one JSON object on stdout.', format: Boolean, default: false, env: 'DEFER_UP_JSON' },
  },
};

export type DeferConfig = {
  pipeline: string;
  backend: (typeof BACKEND_CHOICES)[number];
  logLevel: 'debug' | 'info' | 'warn' | 'error' | 'silent';
  broker: {
    url: string;
    host: string;
    port: number;
    maxPacketBytes: number;
    users: string;
    tlsCert: string;
    tlsKey: string;
    ca: string;
    username: string;
    password: string;
    authModule: string;
    topicLimits: TopicLimits;
    persistence: string;
  };
  node: {
    id: string;
    maxQueue: number;
    weightCache: string;
    slowdown: number;
    workers: number;
    memoryLimit: string;
    heartbeatThread: boolean;
    cpus: number;
    keepPackedWeights: boolean;
    plainConvolutions: boolean;
    heartbeatMs: number;
  };
  dispatcher: {
    model: string;
    nodes: string[];
    cut: string[];
    balanceBy: 'time' | 'flops' | 'params' | 'memory';
    seed: number;
    chunkBytes: number;
    readyTimeoutMs: number;
    frameTimeoutMs: number;
    maxInFlight: number;
    batch: number;
    maxMessageBytes: number;
    codec: 'lz4' | 'none';
    precision: (Precision | 'auto')[];
    qos: 0 | 1;
    standby: string[];
    heartbeatTimeoutMs: number;
    onNodeFailure: 'merge' | 'replan' | 'off';
    restoreAfterMs: number;
    prefetchStandby: boolean;
  };
  http: { port: number; host: string };
  planner: {
    auto: boolean;
    speeds: number[];
    memoryMb: number[];
    bandwidthMbps: number[];
    latencyMs: number[];
    dispatcherBandwidthMbps: number;
    relayMsPerMB: number;
    relayMsPerMessage: number;
    order: 'best' | 'given';
    shape: 'auto' | 'chain';
    replicas: number[];
    cacheDir: string;
    refresh: boolean;
    replan: boolean;
    maxTop1Loss: number;
    calibrationImages: string;
    calibrationFrames: number;
    onlineTimeoutMs: number;
  };
  serve: {
    policy: 'latest' | 'queue' | 'reject';
    queueSize: number;
    maxDevices: number;
    maxFrameBytes: number;
    maxPixels: number;
    compactFirstHop: boolean;
    topK: number;
    reply: 'json' | 'cbor';
    range: 'auto' | '0,1' | '-1,1' | '0,255';
    mean: number[];
    std: number[];
    channelOrder: 'rgb' | 'bgr';
    resize: 'auto' | 'crop' | 'letterbox' | 'stretch';
    labels: string;
    metricsIntervalMs: number;
  };
  up: {
    serve: boolean;
    slowdown: number[];
    nodes: number;
    standby: number;
    nodeMemory: string;
    nodeCpus: number;
    fleet: string;
    frames: number;
    pixelFrames: boolean;
    baseline: boolean;
    json: boolean;
  };
};

/**
 * Build the configuration: defaults, then `file`, then DEFER_* variables of
 * `env`, then `overrides` (flags, as dotted keys). Throws E_CONFIG naming the
 * offending key.
 */
export function loadConfig(file: string | undefined, overrides: Record<string, unknown> = {}, env: NodeJS.ProcessEnv = process.env): DeferConfig {
  const conf = convict(schema as unknown as convict.Schema<DeferConfig>, { env, args: [] });
  try {
    if (file) {
      if (!existsSync(file)) throw new Error(`config file ${file} does not exist`);
      conf.loadFile(file);
    }
    for (const [k, v] of Object.entries(overrides)) {
      if (v === undefined) continue;
      if (!conf.has(k as never)) throw new Error(`unknown option '${k}'`);
      conf.set(k as never, v as never);
    }
    conf.validate({ allowed: 'strict' });
  } catch (err) {
    throw new DeferError('E_CONFIG', `bad configuration: ${errorMessage(err)}`);
  }
  return conf.getProperties();
}

/** docs/configuration.md, generated from the schema. */
export function configurationDoc(): string {
  const rows: string[] = [];
  const walk = (node: Record<string, unknown>, prefix: string) => {
    for (const [k, v] of Object.entries(node)) {
      const key = prefix ? `${prefix}.${k}` : k;
      const entry = v as { doc?: string; default?: unknown; env?: string; format?: unknown };
      if (entry && typeof entry === 'object' && 'doc' in entry) {
        const fmt = Array.isArray(entry.format)
          ? entry.format.join(' \\| ')
          : typeof entry.format === 'string'
            ? entry.format
            : entry.format === Boolean
              ? 'boolean'
              : entry.format === String
                ? 'string'
                : 'integer';
        // the home folder as ~, so that the generated page is the same on every machine
        const dflt = JSON.stringify(entry.default).replace(JSON.stringify(homedir()).slice(1, -1), '~');
        rows.push(`| \`${key}\` | \`${entry.env}\` | ${fmt} | \`${dflt}\` | ${entry.doc} |`);
      } else walk(v as Record<string, unknown>, key);
    }
  };
  walk(schema as unknown as Record<string, unknown>, '');
  return [
    '# Configuration',
    '',
    '<!-- generated from config/schema.ts by `defer config docs`; a test checks it is current -->',
    '',
    'Every role (`defer broker`, `defer node`, `defer dispatch`, `defer up`, `defer plan`) reads one schema.',
    'Values are taken, each overriding the one before, from: the defaults below, a JSON config file',
    '(`--config file.json`, examples in `config/`), `DEFER_*` environment variables, then command-line flags.',
    'An unknown key or a bad value stops the program with an error that names the key.',
    '',
    '| key | environment | format | default | meaning |',
    '| --- | --- | --- | --- | --- |',
    ...rows,
    '',
  ].join('\n');
}
