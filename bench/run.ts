/**
 * `npm run bench`: DEFER's evaluation on our stack. Quick mode (default, for
 * CI): the tiny CNN and MobileNet on 1-2 node processes, the codecs on one
 * ResNet50 activation, broker throughput. `--full` (the published figures):
 * ResNet50, MobileNet and the Teachable Machine MobileNetV2 on 1..N nodes
 * (N = --max-nodes, default 4), each as the planner's shape (replicas,
 * workers) and as a chain, the codecs at three cuts, deployment of
 * ResNet50. Writes <out>/<date>-<host>[-quick].json and .md, and PNG charts.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, hostname, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createLinks, netemCheck, type Shape } from '../cli/node-network.js';
import { loadConfig } from '../config/schema.js';
import { setLogLevel } from '../lib/core/log.js';
import { initEngine } from '../lib/model/engine.js';
import { loadFlatModel } from '../lib/model/model-source.js';
import { type BrokerRow, brokerBench } from './broker.js';
import { payloadSvg, throughputSvg, writePng } from './charts.js';
import { type CodecRow, codecBench } from './codecs.js';
import { measurePipeline, type PipelineRow, raplMicrojoules } from './pipeline.js';
import { zfpCodecs } from './zfp.js';

/** the real models kept with the tests (bench runs from dist/bench) */
const REAL_MODELS = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'test', 'fixtures', 'models');

interface Plan {
  pipeline: { model: string; label: string; frames: number; maxNodes: number }[];
  codecCuts: string[];
  codecFrames: number;
  codecReps: number;
  brokerSizes: number[];
  brokerMessages: number;
  /**
   * memory: a node with the smallest stage (the idle figure), ResNet50 chains of `nodes` (cuts balanced by time),
   * and a fleet of small devices: `fleet.nodes` nodes in cgroups of `fleet.memory`, on shaped links where the
   * machine allows (full mode)
   */
  memory: { idleModel: string; model: string; nodes: number[]; frames: number; fleet: { nodes: number; memory: string; frames: number; link: Shape } | null };
  /** network emulation runs (full mode, where the machine allows) */
  emulate: { model: string; nodes: number; frames: number; shapes: Shape[]; precisions: string[] } | null;
}

function plan(full: boolean, maxNodes: number): Plan {
  return full
    ? {
        pipeline: [
          { model: 'resnet50', label: 'resnet50', frames: 30, maxNodes },
          // light models: enough frames that pipeline fill and drain do not weigh (a 40-frame run measured 30% less)
          { model: 'mobilenet', label: 'mobilenet', frames: 120, maxNodes },
          { model: join(REAL_MODELS, 'tm-aircraft'), label: 'tm-aircraft (MobileNetV2)', frames: 200, maxNodes },
        ],
        codecCuts: ['conv2_block3_out', 'conv3_block4_out', 'conv4_block6_out'],
        codecFrames: 10,
        codecReps: 10,
        brokerSizes: [4_000, 600_000, 1_600_000, 3_200_000],
        brokerMessages: 200,
        memory: { idleModel: 'tiny', model: 'resnet50', nodes: [1, 2, 4, 8], frames: 10, fleet: { nodes: 4, memory: '256M', frames: 30, link: { label: '100 Mbit/s, 5 ms', mbit: 100, delayMs: 5 } } },
        emulate: {
          model: 'resnet50',
          nodes: 2,
          frames: 20,
          shapes: [
            { label: '100 Mbit/s, 5 ms', mbit: 100, delayMs: 5 },
            { label: '20 Mbit/s, 20 ms', mbit: 20, delayMs: 20 },
          ],
          precisions: ['lossless', 'int8', 'auto'],
        },
      }
    : {
        pipeline: [
          { model: 'tiny', label: 'tiny', frames: 60, maxNodes: 2 },
          { model: 'mobilenet', label: 'mobilenet', frames: 12, maxNodes: 1 },
        ],
        codecCuts: ['conv3_block4_out'],
        codecFrames: 2,
        codecReps: 3,
        brokerSizes: [4_000, 1_600_000],
        brokerMessages: 40,
        memory: { idleModel: 'tiny', model: 'tiny', nodes: [2], frames: 4, fleet: null },
        emulate: null,
      };
}

const f = (x: number | null, d = 1) => (x === null ? 'n/a' : x.toFixed(d));

/** A model as the tables and --models name it: a zoo name, or a model folder's last part. */
const shortModel = (model: string) => model.replace(/^.*\//, '');

/** A markdown table cell: its pipes escaped (shapes separate stages with |). */
const cell = (x: string) => x.replace(/\|/g, '\\|');

/** The planned shape against the chain and against the best measured, per model and number of nodes. */
function plannedVsChain(rows: PipelineRow[]): string[] {
  const planned = rows.filter((p) => p.deployment === 'planned');
  if (!planned.length) return [];
  const out = planned.map((p) => {
    const chain = rows.find((c) => c.deployment === 'chain' && c.model === p.model && c.nodes === p.nodes);
    const best = Math.max(...rows.filter((c) => c.model === p.model && c.nodes === p.nodes).map((c) => c.throughputFps));
    return `| ${shortModel(p.model)} | ${p.nodes} | ${cell(p.shape)} | ${p.batches ?? '-'} | ${p.speedup}x | ${chain ? `${chain.speedup}x (${cell(chain.shape)})` : '-'} | ${chain ? f(p.throughputFps / chain.throughputFps, 2) : '-'}x | ${f(p.throughputFps / best, 2)} |`;
  });
  return [
    '## Planned shape against the chain',
    '',
    'Speed-ups against the single process of the same run; "of best": the planned throughput over the best measured for that model and N; batches: the most frames an engine of the planned shape computed in one call, and how many it took on average (the chains take one frame a call).',
    '',
    '| model | nodes | planned shape | batches | planned speed-up | chain speed-up (shape) | planned / chain | of best |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
    ...out,
    '',
  ];
}

const mb = (b: number | null) => (b === null ? 'n/a' : (b / 1e6).toFixed(0));

/** The memory runs: per stage, the weights, the prediction (an idle node plus the model's estimate) and the measured peaks. */
function memorySection(r: BenchResult): string[] {
  if (!r.memory.length) return [];
  const idle = r.memoryIdleRssBytes;
  const lean = r.memory.find((x) => x.idleRssBytes !== idle)?.idleRssBytes;
  return [
    '## Memory per node',
    '',
    `Each stage's node: its weights, the planner's prediction (an idle node, ${mb(idle)} MB: the peak RSS of a node running the ${r.memoryIdleModel} model's one stage in this session, plus the memory model's estimate for the stage: lib/planning/cost-model.ts), its process's peak resident set (its own high-water mark, VmHWM, from its last heartbeat) and wasm heap, and in a cgroup, the most the kernel charged it against its limit. Stage 0 first.${lean !== undefined ? ` Nodes in a memory cgroup run V8's small young generation (cli/node-processes.ts), so their idle node is measured the same way: ${mb(lean)} MB.` : ''}`,
    '',
    '| run | shape | per stage: weights MB / predicted peak MB / measured peak RSS MB (wasm heap MB)[, cgroup peak / limit MB] | predicted / measured |',
    '| --- | --- | --- | --- |',
    ...r.memory.map(({ label, row, idleRssBytes: idle }) => {
      const cells = row.memory.map(
        (m) =>
          `${(m.weightBytes / 1e6).toFixed(1)} / ${idle === null ? 'n/a' : mb(idle + m.predictedBytes)} / ${mb(m.peakRssBytes)} (${mb(m.engineHeapBytes)})${m.memoryLimitBytes !== null ? `, ${mb(m.memoryPeakBytes)} / ${mb(m.memoryLimitBytes)}` : ''}`,
      );
      const ratios = row.memory.map((m) => (idle !== null && m.peakRssBytes ? ((idle + m.predictedBytes) / m.peakRssBytes).toFixed(2) : 'n/a'));
      return `| ${label} | ${cell(row.shape)} | ${cells.join('; ')} | ${ratios.join(' / ')} |`;
    }),
    '',
  ];
}

/** The codec table (a run that measured codecs). */
function codecLines(r: BenchResult): string[] {
  return [
    '## Payload per inference by codec (ResNet50 activations)',
    '',
    '| cut | shape | codec | bytes | smaller than JSON | smaller than raw | encode MB/s | decode MB/s | max output diff | top-1 agreement |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...r.codecs.map(
      (c) =>
        `| ${c.cut} | ${c.shape.join('x')} | ${c.codec} | ${c.bytes.toLocaleString('en')} | ${c.vsJson}x | ${c.vsRaw}x | ${c.encodeMBps} | ${c.decodeMBps} | ${c.maxOutputDiff ?? 'lossless'} | ${c.top1Agreement === null ? 'lossless' : `${(c.top1Agreement * 100).toFixed(0)}% of ${r.codecFrames}`} |`,
    ),
    '',
  ];
}

/** The broker table (a run that measured the broker). */
function brokerLines(r: BenchResult): string[] {
  return [
    '## Broker throughput (embedded Aedes, QoS 1, 8 messages in flight, publisher and subscriber in one process)',
    '',
    '| message bytes | messages/s | MB/s |',
    '| --- | --- | --- |',
    ...r.broker.map((b) => `| ${b.messageBytes.toLocaleString('en')} | ${b.messagesPerSecond} | ${b.MBps} |`),
    '',
  ];
}

function markdown(r: BenchResult): string {
  const m = r.machine;
  const lines = [
    `# DEFER benchmark, ${r.mode} mode: ${r.date} on ${m.host}`,
    '',
    `Machine: ${m.cpus} x ${m.cpu}, ${(m.memoryBytes / 2 ** 30).toFixed(0)} GiB, Node ${m.node}, TensorFlow.js backend ${m.backend}. Every node is a process on this machine, with the broker and dispatcher.`,
    'Speed-up is against the whole model run in one process on the same frames in the same run; the ideal is single-process ms per frame over the slowest stage.',
    '',
    '## Throughput and latency against nodes',
    '',
    'Planned: the shape the planner chose for N node processes (stages separated by |, replicas by +, worker threads as xW; nodes not named stay idle). Chain: one node per stage, one engine each, cuts balanced by time.',
    '',
    '| model | nodes | deployment | shape | cuts | frames/s | single process | speed-up | ideal speed-up | p50 / p95 ms | stage compute ms | node CPU ms/frame | broker+dispatcher CPU ms/frame | energy J/frame |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...r.pipeline.map(
      (p) =>
        `| ${shortModel(p.model)} | ${p.nodes} | ${p.deployment} | ${cell(p.shape)} | ${p.cuts.join(', ') || '-'} | ${p.throughputFps} | ${p.singleProcessFps} | ${p.speedup}x | ${p.idealSpeedup}x | ${p.p50Ms} / ${p.p95Ms} | ${p.stageComputeMs.join(' / ')} | ${p.nodeCpuMsPerFrame.map((x) => f(x)).join(' / ')} | ${p.brokerDispatcherCpuMsPerFrame} | ${p.joulesPerFrame ?? 'n/a'} |`,
    ),
    '',
    ...plannedVsChain(r.pipeline),
    ...memorySection(r),
    `Energy: ${r.energy}`,
    '',
    '## Overhead per hop',
    '',
    "Per node, ms per frame: decode + encode against compute (the codec's share of the node's busy time), and transfer: from the sender's publish to this node's receipt, which includes the broker, the sockets, and the time a message waits in the socket while the node (single-threaded) computes the frame before it. The broker's own cost is in the broker table below and in the broker+dispatcher CPU above.",
    '',
    '| model | nodes | per node: decode + encode / compute ms (codec share); transfer ms |',
    '| --- | --- | --- |',
    ...r.pipeline.map(
      (p) =>
        `| ${shortModel(p.model)} | ${p.nodes} | ${p.overhead.map((o) => `${o.node}: ${o.decodeMs} + ${o.encodeMs} / ${o.computeMs} (${(o.codecShare * 100).toFixed(1)}%); ${o.transferMs}`).join('; ')} |`,
    ),
    '',
    ...(r.codecs.length ? codecLines(r) : []),
    ...(r.zfp ? [r.zfp, ''] : []),
    ...(r.broker.length ? brokerLines(r) : []),
    '## Deployment (weights retained on the broker, chunks sha256-checked by each node)',
    '',
    '| model | nodes | weights MB | first deployment s | redeployment s |',
    '| --- | --- | --- | --- | --- |',
    ...r.pipeline.map(
      (p) => `| ${shortModel(p.model)} | ${p.nodes} | ${(p.weightBytes / 1e6).toFixed(1)} | ${(p.deployMs / 1000).toFixed(2)} | ${p.redeployMs === null ? '-' : (p.redeployMs / 1000).toFixed(2)} |`,
    ),
    '',
    // (a report of earlier pipeline rows has no emulation part: no reason)
    ...(r.netem.reason
      ? ['## Network emulation', '', r.netem.available ? `Each node in a network namespace of its own, its veth link to the broker shaped: ${r.netem.reason}.` : `Skipped: ${r.netem.reason}.`, '']
      : []),
    ...(r.emulated.length
      ? [
          '| model | nodes | link | applied | precision | frames/s | single process | p50 / p95 ms | bytes per hop | top-1 agreement | deployment s |',
          '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
          ...r.emulated.map(
            (e) =>
              `| ${e.row.model} | ${e.row.nodes} | ${e.shape} | ${e.applied} | ${e.asked === 'auto' ? `auto: ${e.row.precision.join(', ')}` : e.asked} | ${e.row.throughputFps} | ${e.row.singleProcessFps} | ${e.row.p50Ms} / ${e.row.p95Ms} | ${e.row.bytesPerHop.map((b) => b.toLocaleString('en')).join(' / ')} | ${(100 * e.row.top1AgreementVsLocal).toFixed(0)}% | ${(e.row.deployMs / 1000).toFixed(1)} |`,
          ),
          '',
        ]
      : []),
  ];
  return lines.join('\n');
}

interface BenchResult {
  date: string;
  mode: 'quick' | 'full';
  machine: { host: string; cpus: number; cpu: string; memoryBytes: number; node: string; backend: string };
  pipeline: PipelineRow[];
  codecs: CodecRow[];
  codecFrames: number;
  broker: BrokerRow[];
  energy: string;
  netem: { available: boolean; netem: boolean; reason: string };
  /** `asked`: the precision requested (auto: chosen per hop, `row.precision` says what) */
  /** how ZFP was measured, or why not */
  zfp: string;
  emulated: { shape: string; applied: string; asked: string; row: PipelineRow }[];
  /**
   * the memory runs, each with the peak RSS of an idle node started as its nodes were (null: not measured), and
   * the peak RSS of a node of the idle model started by default
   */
  memory: { label: string; row: PipelineRow; idleRssBytes: number | null }[];
  memoryIdleModel: string;
  memoryIdleRssBytes: number | null;
  charts: string[];
}

/** Bad options: the message says what to change, no stack. */
class UsageError extends Error {}

const USAGE = `npm run bench -- [options]    (or: node dist/bench/run.js [options])

  --full             the published figures (default: quick mode, what CI runs)
  --only PARTS       some of: pipeline, memory, codecs, broker, emulation (separated by commas)
  --max-nodes N      pipeline runs at 1..N node processes (full mode; default 4)
  --nodes LIST       pipeline runs at these node counts only, e.g. 1,2,4,8 (instead of 1..N)
  --models LIST      pipeline runs of these models only: resnet50, mobilenet, tm-aircraft (full mode)
  --out DIR          where the results go (default bench/results)
  --host NAME        the machine's name in the result files (default: this host's name)
  --no-redeploy      pipeline runs deploy once (the redeployment time is not measured; faster)
  --report FILES     measure nothing: the report (json, md, chart) of the pipeline rows in these result files
                     (separated by commas; a run cut short leaves <name>.partial.json), named by --host and --out
  -h, --help         this text

Writes <out>/<date>-<host>[-quick][-<parts>].json and .md, and PNG charts.
`;

/** `--report`: the pipeline rows of earlier result files (full or partial) in one report, measuring nothing. */
async function report(files: string[], out: string, host: string, date: string): Promise<void> {
  const pipeline: PipelineRow[] = [];
  let machine: BenchResult['machine'] | undefined;
  for (const file of files) {
    let r: Partial<BenchResult>;
    try {
      r = JSON.parse(await readFile(file, 'utf8')) as Partial<BenchResult>;
    } catch (err) {
      throw new UsageError(`--report: cannot read ${file}: ${(err as Error).message}`);
    }
    if (!Array.isArray(r.pipeline)) throw new UsageError(`--report: ${file} holds no pipeline rows (a bench result file is <date>-<host>[...].json or .partial.json)`);
    if (!r.machine) throw new UsageError(`--report: ${file} does not say which machine measured it (no "machine")`);
    if (machine && (machine.cpus !== r.machine.cpus || machine.cpu !== r.machine.cpu))
      throw new UsageError(`--report: ${file} was measured on another machine (${r.machine.cpus} x ${r.machine.cpu}, not ${machine.cpus} x ${machine.cpu})`);
    machine ??= { ...r.machine, host };
    pipeline.push(...r.pipeline);
  }
  if (!machine) throw new UsageError('--report takes result files, separated by commas');
  const base = join(out, `${date}-${host}-pipeline`);
  const result: BenchResult = {
    date,
    mode: 'full',
    machine,
    pipeline,
    codecs: [],
    codecFrames: 0,
    zfp: '',
    broker: [],
    energy: `not measured in these runs (the pipeline rows of ${files.join(', ')}).`,
    netem: { available: false, netem: false, reason: '' },
    emulated: [],
    memory: [],
    memoryIdleModel: '',
    memoryIdleRssBytes: null,
    charts: [`${base}-throughput.png`],
  };
  await mkdir(out, { recursive: true });
  await writePng(throughputSvg(pipeline, `DEFER over MQTT: throughput against node processes (${machine.cpus} cores, ${host}, ${machine.backend})`), result.charts[0]);
  await writeFile(`${base}.json`, JSON.stringify(result, null, 2) + '\n');
  await writeFile(`${base}.md`, markdown(result));
  process.stderr.write(`bench: wrote ${base}.json, ${base}.md, ${result.charts[0]} from ${pipeline.length} rows of ${files.join(', ')}\n`);
}

async function main(): Promise<void> {
  const options = {
    full: { type: 'boolean' },
    'max-nodes': { type: 'string' },
    nodes: { type: 'string' },
    models: { type: 'string' },
    out: { type: 'string' },
    host: { type: 'string' },
    only: { type: 'string' },
    'no-redeploy': { type: 'boolean' },
    report: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  } as const;
  let values: ReturnType<typeof parseArgs<{ options: typeof options }>>['values'];
  try {
    values = parseArgs({ options }).values;
  } catch (err) {
    throw new UsageError(`${(err as Error).message}; see --help`);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const PARTS = ['pipeline', 'memory', 'codecs', 'broker', 'emulation'];
  const only = values.only ? values.only.split(',') : PARTS;
  const bad = only.filter((x) => !PARTS.includes(x));
  if (bad.length) throw new UsageError(`--only takes ${PARTS.join(', ')}; not ${bad.join(', ')}`);
  setLogLevel('warn');
  const full = values.full === true;
  const maxNodes = Number(values['max-nodes'] ?? 4);
  if (!Number.isInteger(maxNodes) || maxNodes < 1) throw new UsageError(`--max-nodes must be a positive integer, got ${values['max-nodes']}`);
  const nodeCounts = values.nodes === undefined ? null : values.nodes.split(',').map(Number);
  if (nodeCounts && (!nodeCounts.length || nodeCounts.some((n) => !Number.isInteger(n) || n < 1))) throw new UsageError(`--nodes takes node counts separated by commas (1,2,4,8), got ${values.nodes}`);
  const out = values.out ?? join('bench', 'results');
  const host = values.host ?? hostname();
  if (!/^[\w.-]+$/.test(host)) throw new UsageError(`--host names the result files: letters, digits, '.', '_' and '-' only, got ${host}`);
  const p = plan(full, nodeCounts ? Math.max(...nodeCounts) : maxNodes);
  if (values.models !== undefined) {
    const wanted = values.models.split(',');
    const unknown = wanted.filter((m) => !p.pipeline.some((r) => shortModel(r.model) === m));
    if (unknown.length) throw new UsageError(`--models takes ${p.pipeline.map((r) => shortModel(r.model)).join(', ')} in this mode; not ${unknown.join(', ')}`);
    p.pipeline = wanted.map((m) => p.pipeline.find((r) => shortModel(r.model) === m)!);
  }
  const date = new Date().toISOString().slice(0, 10);
  if (values.report !== undefined) {
    await report(values.report.split(','), out, host, date);
    return;
  }
  const base = join(out, `${date}-${host}${full ? '' : '-quick'}${values.only ? `-${only.join('-')}` : ''}`);
  const partial = `${base}.partial.json`;
  const backend = await initEngine('auto');
  const machine: BenchResult['machine'] = { host, cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', memoryBytes: totalmem(), node: process.version, backend };
  const say = (l: string) => process.stderr.write(`bench: ${l}\n`);
  const pipeline: PipelineRow[] = [];
  for (const run of only.includes('pipeline') ? p.pipeline : []) {
    for (const n of nodeCounts ?? Array.from({ length: run.maxNodes }, (_, i) => i + 1)) {
      // the planner's shape (stages, replicas, workers), then the chain of one node per stage beside it
      // (quick mode: the planned shape at the most nodes only)
      for (const shape of full || n === Math.max(...(nodeCounts ?? [run.maxNodes])) ? (['auto', 'chain'] as const) : (['chain'] as const)) {
        say(`${run.label} on ${n} node(s), ${shape === 'auto' ? 'planned shape' : 'chain'}, ${run.frames} frames`);
        const config = loadConfig(undefined, { 'dispatcher.model': run.model, 'up.nodes': n, 'up.frames': run.frames, 'planner.shape': shape, 'broker.port': 0, logLevel: 'warn' }, {});
        pipeline.push({ ...(await measurePipeline(config, say, { redeploy: values['no-redeploy'] !== true })), model: run.label });
        // a long run cut short keeps what it measured
        await mkdir(out, { recursive: true });
        await writeFile(partial, JSON.stringify({ date, mode: full ? 'full' : 'quick', machine, pipeline }, null, 2) + '\n');
      }
    }
  }
  const memory: BenchResult['memory'] = [];
  let memoryIdleRssBytes: number | null = null;
  if (only.includes('memory')) {
    const m = p.memory;
    const chain = (model: string, nodes: number, frames: number, extra: Record<string, unknown> = {}) =>
      loadConfig(undefined, { 'dispatcher.model': model, 'up.nodes': nodes, 'up.frames': frames, 'planner.shape': 'chain', 'broker.port': 0, logLevel: 'warn', ...extra }, {});
    say(`memory: an idle node (the ${m.idleModel} model on 1 node)`);
    memoryIdleRssBytes = (await measurePipeline(chain(m.idleModel, 1, m.frames), say, { redeploy: false })).memory[0]?.peakRssBytes ?? null;
    for (const n of m.nodes) {
      say(`memory: ${m.model} on ${n} node(s), cuts balanced by time, ${m.frames} frames`);
      memory.push({
        label: `${m.model}, ${n} node${n > 1 ? 's' : ''}`,
        row: { ...(await measurePipeline(chain(m.model, n, m.frames), say, { redeploy: false })), model: m.model },
        idleRssBytes: memoryIdleRssBytes,
      });
    }
    if (m.fleet) {
      const fl = m.fleet;
      const netem = await netemCheck();
      const ids = Array.from({ length: fl.nodes }, (_, i) => `n${i + 1}`);
      say(`memory: a fleet of ${fl.nodes} devices of ${fl.memory}${netem.available ? ` on links of ${fl.link.label}` : ' (no network emulation here)'}, ${m.model}, ${fl.frames} frames`);
      // its nodes run with a memory limit, and so with V8's small young generation: an idle node the same way
      say(`memory: an idle node of ${fl.memory} (the ${m.idleModel} model on 1 node)`);
      const idle = (await measurePipeline(chain(m.idleModel, 1, m.frames, { 'up.nodeMemory': fl.memory }), say, { redeploy: false })).memory[0]?.peakRssBytes ?? null;
      const links = netem.available ? await createLinks(ids, fl.link, netem.netem) : undefined;
      try {
        const config = chain(m.model, fl.nodes, fl.frames, {
          'up.nodeMemory': fl.memory,
          'planner.auto': true,
          ...(links ? { 'broker.host': '0.0.0.0', 'planner.bandwidthMbps': [fl.link.mbit], 'dispatcher.readyTimeoutMs': 600_000 } : {}),
        });
        const row = await measurePipeline(config, say, { redeploy: false, ...(links ? { nodeNetwork: links } : {}) });
        memory.push({ label: `${m.model}, ${fl.nodes} devices of ${fl.memory}${links ? `, ${links.applied}` : ''} (planned cuts)`, row: { ...row, model: m.model }, idleRssBytes: idle });
      } finally {
        await links?.close();
      }
    }
  }
  let codecs: CodecRow[] = [];
  let zfpNote = '';
  if (only.includes('codecs')) {
    say(`codecs on ResNet50 at ${p.codecCuts.join(', ')}`);
    const resnet = await loadFlatModel('resnet50');
    const zfp = full ? zfpCodecs() : { codecs: [], note: 'ZFP: measured in full mode only' };
    zfpNote = zfp.note;
    say(zfp.note);
    codecs = await codecBench(resnet, p.codecCuts, p.codecFrames, p.codecReps, zfp.codecs);
    resnet.dispose();
  }
  let broker: BrokerRow[] = [];
  if (only.includes('broker')) {
    say('broker throughput');
    broker = await brokerBench(p.brokerSizes, p.brokerMessages);
  }
  const energy =
    (await raplMicrojoules()) === null
      ? "not measured: this machine exposes no RAPL counters (/sys/class/powercap/intel-rapl:*; typical of VMs). CPU ms per frame per node, from each process's own accounting, is the proxy."
      : 'RAPL package counters over the streamed frames (all packages; nodes, broker and dispatcher together).';
  const netem = await netemCheck();
  say(`network emulation: ${netem.available ? netem.reason : `skipped: ${netem.reason}`}`);
  const emulated: BenchResult['emulated'] = [];
  if (p.emulate && netem.available && only.includes('emulation')) {
    const e = p.emulate;
    const ids = Array.from({ length: e.nodes }, (_, i) => `n${i + 1}`);
    say(`${e.model} on ${e.nodes} nodes on loopback, for comparison`);
    const loopback = loadConfig(undefined, { 'dispatcher.model': e.model, 'up.nodes': e.nodes, 'up.frames': e.frames, 'planner.shape': 'chain', 'broker.port': 0, logLevel: 'warn' }, {});
    emulated.push({ shape: 'loopback (no namespaces)', applied: 'none', asked: 'lossless', row: await measurePipeline(loopback, say) });
    for (const shape of e.shapes) {
      for (const precision of e.precisions) {
        say(`${e.model} on ${e.nodes} nodes in network namespaces, links ${shape.label}, activations ${precision}`);
        const links = await createLinks(ids, shape, netem.netem);
        try {
          const config = loadConfig(
            undefined,
            {
              'dispatcher.model': e.model,
              'dispatcher.precision': [precision],
              ...(precision === 'auto' ? { 'planner.bandwidthMbps': [shape.mbit] } : {}),
              'up.nodes': e.nodes,
              'up.frames': e.frames,
              'planner.shape': 'chain',
              'broker.port': 0,
              'broker.host': '0.0.0.0',
              'dispatcher.readyTimeoutMs': 600_000,
              logLevel: 'warn',
            },
            {},
          );
          const row = await measurePipeline(config, say, { nodeNetwork: links, redeploy: false });
          emulated.push({ shape: shape.label, applied: links.applied, asked: precision, row });
        } finally {
          await links.close();
        }
      }
    }
  }
  await mkdir(out, { recursive: true });
  const charts: string[] = [];
  if (pipeline.length) {
    charts.push(`${base}-throughput.png`);
    await writePng(throughputSvg(pipeline, `DEFER over MQTT: throughput against node processes (${cpus().length} cores, ${host}, ${backend})`), charts.at(-1)!);
  }
  if (codecs.length) {
    const cut = p.codecCuts[p.codecCuts.length > 1 ? 1 : 0];
    charts.push(`${base}-payload.png`);
    await writePng(
      payloadSvg(
        codecs.filter((c) => c.cut === cut),
        `Payload per inference: ResNet50 ${cut} activation`,
      ),
      charts.at(-1)!,
    );
  }
  const result: BenchResult = {
    date,
    mode: full ? 'full' : 'quick',
    machine,
    pipeline,
    codecs,
    codecFrames: p.codecFrames,
    zfp: zfpNote,
    broker,
    energy,
    netem,
    emulated,
    memory,
    memoryIdleModel: p.memory.idleModel,
    memoryIdleRssBytes,
    charts,
  };
  await writeFile(`${base}.json`, JSON.stringify(result, null, 2) + '\n');
  const md = markdown(result);
  await writeFile(`${base}.md`, md);
  await rm(partial, { force: true });
  process.stdout.write(md);
  say(`wrote ${base}.json, ${base}.md, ${charts.join(', ')}`);
}

main().then(
  () => setImmediate(() => process.exit(0)),
  (err: unknown) => {
    // a usage error says what to change; anything else keeps its stack
    process.stderr.write(`bench failed: ${err instanceof UsageError ? err.message : ((err as Error).stack ?? String(err))}\n`);
    process.exit(1);
  },
);
