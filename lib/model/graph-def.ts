/**
 * The node graph of a TensorFlow.js GraphModel (`model.json` with
 * `format: graph-model`), read for splitting: which nodes carry data (every
 * node that depends on the input) and which are constants (weights, and ops
 * computed from constants only), the data nodes in topological order as a
 * FlatGraph (so that the layers' cut analysis applies unchanged), and the
 * refusals for graphs that cannot be split (control flow, several inputs or
 * outputs, an input of unknown shape).
 */
import { DeferError } from '../core/errors.js';
import type { FlatGraph, FlatLayer } from './graph.js';

type Json = Record<string, unknown>;

export interface GraphNodeDef {
  name: string;
  op: string;
  input?: string[];
  attr?: Record<string, Json>;
  device?: string;
}

export interface GraphDefJson {
  node: GraphNodeDef[];
  versions?: Json;
  library?: { function?: unknown[] };
}

/** A node input as written in a GraphDef: `name`, `name:k` (its k-th output) or `^name` (a control dependency). */
export interface InputRef {
  node: string;
  output: number;
  control: boolean;
}

export function parseInput(s: string): InputRef {
  if (s.startsWith('^')) return { node: s.slice(1), output: 0, control: true };
  const parts = s.split(':');
  const last = Number(parts[parts.length - 1]);
  if (parts.length > 1 && Number.isInteger(last)) return { node: parts[0], output: last, control: false };
  return { node: parts[0], output: 0, control: false };
}

/** Ops that make a graph data-dependent in its structure: tfjs runs them only with executeAsync, and no cut can cross them. */
export const CONTROL_FLOW_OPS = new Set(['Switch', 'Merge', 'Enter', 'Exit', 'NextIteration', 'LoopCond', 'If', 'StatelessIf', 'While', 'StatelessWhile']);

export interface GraphStructure {
  /** the data nodes in topological order: layers[0] is the Placeholder, the last is the output */
  graph: FlatGraph;
  nodes: Map<string, GraphNodeDef>;
  placeholder: GraphNodeDef;
  /** the input's shape without the batch dimension (every dimension known) */
  inputShape: number[];
  inputDtype: 'float32' | 'int32';
  /** for each data node, the constant nodes it needs (transitively), in graph order */
  constInputs: Map<string, string[]>;
  /** data nodes whose second or later output another node reads: no cut after them */
  multiOutput: Map<string, string>;
  /** every constant node, in topological order */
  constOrder: string[];
}

const TF_DTYPES: Record<string, 'float32' | 'int32'> = { DT_FLOAT: 'float32', DT_INT32: 'int32' };

function dimsOf(attr: Json | undefined): number[] | null {
  const shape = (attr?.shape as Json | undefined) ?? undefined;
  if (!shape || shape.unknownRank) return null;
  const dims = (shape.dim as { size?: string | number }[] | undefined) ?? [];
  return dims.map((d) => Number(d.size ?? -1));
}

/** The output node names a model.json's signature gives (either place the converter writes it), or null. */
function signatureOutputs(modelJson: Json): string[] | null {
  const sig = (modelJson.signature ?? (modelJson.userDefinedMetadata as Json | undefined)?.signature) as Json | undefined;
  const outputs = sig?.outputs as Record<string, { name?: string }> | undefined;
  if (!outputs) return null;
  return Object.entries(outputs).map(([k, v]) => parseInput(v.name ?? k).node);
}

/** Read a graph model's topology for splitting, or refuse it with the reason. `where` names the model in messages. */
export function analyseGraphDef(modelJson: Json, where: string): GraphStructure {
  const def = modelJson.modelTopology as GraphDefJson | undefined;
  if (!def || !Array.isArray(def.node)) throw new DeferError('E_MODEL', `${where}: the graph model has no node list`);
  const nodes = new Map<string, GraphNodeDef>();
  for (const n of def.node) {
    if (typeof n?.name !== 'string' || typeof n.op !== 'string') throw new DeferError('E_MODEL', `${where}: a graph node lacks a name or an op`);
    if (nodes.has(n.name)) throw new DeferError('E_MODEL', `${where}: node name '${n.name}' occurs twice`);
    nodes.set(n.name, n);
  }
  const fns = def.library?.function ?? [];
  if (fns.length > 0) {
    throw new DeferError(
      'E_MODEL',
      `${where}: the graph has ${fns.length} function(s) in its library (control flow: If/While bodies); such graphs run only with executeAsync and cannot be split. Convert the model without control flow, or run it unsplit`,
    );
  }
  const flow = def.node.find((n) => CONTROL_FLOW_OPS.has(n.op));
  if (flow) {
    throw new DeferError('E_MODEL', `${where}: node '${flow.name}' is a '${flow.op}' (control flow); graphs with control flow run only with executeAsync and cannot be split`);
  }
  const placeholders = def.node.filter((n) => n.op === 'Placeholder' || n.op === 'PlaceholderWithDefault');
  if (placeholders.length !== 1) {
    throw new DeferError('E_MODEL', `${where}: the graph has ${placeholders.length} inputs (${placeholders.map((p) => p.name).join(', ') || 'none'}); only single-input graphs can be split`);
  }
  const placeholder = placeholders[0];
  const refs = new Map<string, InputRef[]>();
  for (const n of def.node) {
    const rs = (n.input ?? []).map(parseInput);
    for (const r of rs) if (!nodes.has(r.node)) throw new DeferError('E_MODEL', `${where}: node '${n.name}' reads unknown node '${r.node}'`);
    refs.set(n.name, rs);
  }

  // topological order of every node, keeping the file's order where it is valid
  const order: string[] = [];
  const state = new Map<string, 1 | 2>();
  const visit = (name: string) => {
    const st = state.get(name);
    if (st === 2) return;
    if (st === 1) throw new DeferError('E_MODEL', `${where}: the graph has a cycle through '${name}'`);
    state.set(name, 1);
    for (const r of refs.get(name)!) visit(r.node);
    state.set(name, 2);
    order.push(name);
  };
  for (const n of def.node) visit(n.name);

  // constants: Const nodes, and nodes computed from constants only
  const isConst = new Set<string>();
  for (const name of order) {
    const n = nodes.get(name)!;
    const rs = refs.get(name)!;
    if (n.op === 'Const' || (n !== placeholder && rs.length > 0 && rs.every((r) => isConst.has(r.node)))) isConst.add(name);
  }

  // the output: the signature's, or the one data node nothing reads
  let outputs = signatureOutputs(modelJson);
  if (!outputs) {
    const read = new Set<string>();
    for (const rs of refs.values()) for (const r of rs) read.add(r.node);
    outputs = order.filter((n) => !isConst.has(n) && !read.has(n) && n !== placeholder.name);
  }
  if (outputs.length !== 1) {
    throw new DeferError('E_MODEL', `${where}: the graph has ${outputs.length} outputs (${outputs.join(', ') || 'none'}); only single-output graphs can be split`);
  }
  const output = outputs[0];
  if (!nodes.has(output)) throw new DeferError('E_MODEL', `${where}: the signature's output '${output}' is not a node of the graph`);

  // the data nodes the output needs, in order; the placeholder must be among them
  const needed = new Set<string>();
  const stack = [output];
  while (stack.length) {
    const name = stack.pop()!;
    if (needed.has(name) || isConst.has(name)) continue;
    needed.add(name);
    for (const r of refs.get(name)!) stack.push(r.node);
  }
  if (!needed.has(placeholder.name)) throw new DeferError('E_MODEL', `${where}: the output '${output}' does not depend on the input '${placeholder.name}'`);
  const dataOrder = order.filter((n) => needed.has(n));

  const shape = dimsOf(placeholder.attr?.shape as Json | undefined);
  if (!shape || shape.length < 1 || shape.slice(1).some((d) => !(d > 0))) {
    throw new DeferError(
      'E_MODEL',
      `${where}: the input '${placeholder.name}' has shape [${shape ?? 'unknown'}]; a graph can be split only when every dimension but the batch is known (activations' shapes follow from it)`,
    );
  }
  const dtype = TF_DTYPES[String((placeholder.attr?.dtype as Json | undefined)?.type)];
  if (!dtype)
    throw new DeferError('E_MODEL', `${where}: the input '${placeholder.name}' is of type ${String((placeholder.attr?.dtype as Json | undefined)?.type)}; supported are DT_FLOAT and DT_INT32`);

  const constInputs = new Map<string, string[]>();
  const constPosition = new Map(order.filter((n) => isConst.has(n)).map((n, i) => [n, i]));
  const multiOutput = new Map<string, string>();
  const layers: FlatLayer[] = dataOrder.map((name) => {
    const rs = refs.get(name)!;
    const consts = new Set<string>();
    const pending = rs.filter((r) => isConst.has(r.node)).map((r) => r.node);
    while (pending.length) {
      const c = pending.pop()!;
      if (consts.has(c)) continue;
      consts.add(c);
      for (const r of refs.get(c)!) pending.push(r.node);
    }
    constInputs.set(
      name,
      [...consts].sort((a, b) => constPosition.get(a)! - constPosition.get(b)!),
    );
    for (const r of rs) {
      if (!r.control && r.output > 0 && !isConst.has(r.node)) multiOutput.set(r.node, `node '${name}' reads its output ${r.output}, and only a node's first output can cross a cut`);
    }
    const inputs = [...new Set(rs.filter((r) => !isConst.has(r.node)).map((r) => r.node))];
    return { name, className: nodes.get(name)!.op, config: {}, inputs };
  });
  return {
    graph: { name: String(modelJson.name ?? 'graph'), unit: 'node', layers, output },
    nodes,
    placeholder,
    inputShape: shape.slice(1),
    inputDtype: dtype,
    constInputs,
    multiOutput,
    constOrder: order.filter((n) => isConst.has(n)),
  };
}
