/**
 * The layer DAG of a model, from its Keras-style JSON: nested Sequential and
 * functional models flattened into one list of layers in topological order,
 * each layer with the names of the layers that feed it. Also: the valid
 * single-tensor cut points, and the errors for invalid ones.
 */
import { CutError, DeferError } from '../core/errors.js';

type Json = Record<string, unknown>;

export interface FlatLayer {
  name: string;
  className: string;
  /** the layer's Keras config (name included), copied */
  config: Json;
  /** names of the layers whose (single) output feeds this layer, in call order */
  inputs: string[];
}

export interface FlatGraph {
  name: string;
  /** what its entries are called in messages: 'layer' (default) or 'node' */
  unit?: 'layer' | 'node';
  /** topological order; layers[0] is the InputLayer */
  layers: FlatLayer[];
  output: string;
}

const MODEL_CLASSES = new Set(['Sequential', 'Model', 'Functional']);

function layerList(model: Json): Json[] {
  const cfg = model.config;
  if (Array.isArray(cfg)) return cfg as Json[]; // very old Sequential layout
  const layers = (cfg as Json | undefined)?.layers;
  if (!Array.isArray(layers)) throw new DeferError('E_MODEL', `model '${String((cfg as Json)?.name)}' has no layer list`);
  return layers as Json[];
}

function layerName(l: Json): string {
  const n = (l.name ?? (l.config as Json | undefined)?.name) as unknown;
  if (typeof n !== 'string' || !n) throw new DeferError('E_MODEL', `a layer of class ${String(l.class_name)} has no name`);
  return n;
}

class Flattener {
  readonly layers: FlatLayer[] = [];
  private readonly names = new Set<string>();

  add(name: string, className: string, config: Json, inputs: string[]): void {
    if (this.names.has(name)) {
      throw new DeferError('E_MODEL', `layer name '${name}' occurs twice once nested models are flattened; rename one of them before partitioning`);
    }
    this.names.add(name);
    const cfg = structuredClone(config);
    cfg.name = name;
    if (inputs.length > 0) {
      // an explicit input exists: a shape hint on an inner layer is redundant
      delete cfg.batch_input_shape;
      delete cfg.input_shape;
      delete cfg.batch_size;
    }
    this.layers.push({ name, className, config: cfg, inputs });
  }

  addInput(name: string, batchInputShape: unknown, dtype: unknown): string {
    if (!Array.isArray(batchInputShape)) throw new DeferError('E_MODEL', `cannot find the input shape of the model at layer '${name}'`);
    this.add(name, 'InputLayer', { batch_input_shape: batchInputShape, dtype: dtype ?? 'float32', sparse: false, name }, []);
    return name;
  }

  /** Flatten `model` fed by `input` (null: the model brings its own input). Returns the name of its output layer. */
  model(model: Json, input: string | null): string {
    return model.class_name === 'Sequential' ? this.sequential(model, input) : this.functional(model, input);
  }

  private sequential(model: Json, input: string | null): string {
    let current = input;
    for (const l of layerList(model)) {
      const cls = String(l.class_name);
      const name = layerName(l);
      const cfg = (l.config ?? {}) as Json;
      if (cls === 'InputLayer') {
        if (current === null) current = this.addInput(name, cfg.batch_input_shape, cfg.dtype);
        continue;
      }
      if (MODEL_CLASSES.has(cls)) {
        current = this.model(l, current); // a nested model with no input before it brings its own
        continue;
      }
      if (current === null) current = this.addInput(`${name}_input`, cfg.batch_input_shape, cfg.dtype);
      this.add(name, cls, cfg, [current]);
      current = name;
    }
    if (current === null) throw new DeferError('E_MODEL', 'the model has no layers');
    return current;
  }

  private functional(model: Json, input: string | null): string {
    const cfg = model.config as Json;
    const ins = cfg.input_layers as unknown[][];
    const outs = cfg.output_layers as unknown[][];
    if (!Array.isArray(ins) || !Array.isArray(outs)) throw new DeferError('E_MODEL', `functional model '${String(cfg.name)}' lacks input_layers or output_layers`);
    if (ins.length !== 1 || outs.length !== 1) {
      throw new DeferError('E_MODEL', `model '${String(cfg.name)}' has ${ins.length} inputs and ${outs.length} outputs; only single-input, single-output models can be partitioned`);
    }
    const alias = new Map<string, string>();
    const resolveRef = (ref: unknown, at: string): string => {
      const n = Array.isArray(ref) ? ref[0] : undefined;
      const a = typeof n === 'string' ? alias.get(n) : undefined;
      if (a === undefined) throw new DeferError('E_MODEL', `layer '${at}' refers to unknown or later layer '${String(n)}'`);
      return a;
    };
    for (const l of layerList(model)) {
      const cls = String(l.class_name);
      const name = layerName(l);
      const lcfg = (l.config ?? {}) as Json;
      const nodes = (l.inbound_nodes ?? []) as unknown[][];
      if (cls === 'InputLayer') {
        alias.set(name, input ?? this.addInput(name, lcfg.batch_input_shape, lcfg.dtype));
        continue;
      }
      if (nodes.length !== 1) {
        throw new DeferError('E_MODEL', `layer '${name}' is called ${nodes.length} times (a shared layer); only layers called once can be partitioned`);
      }
      const inputs = (nodes[0] as unknown[]).map((ref) => resolveRef(ref, name));
      if (MODEL_CLASSES.has(cls)) {
        if (inputs.length !== 1) throw new DeferError('E_MODEL', `nested model '${name}' takes ${inputs.length} inputs; only one is supported`);
        alias.set(name, this.model(l, inputs[0]));
        continue;
      }
      this.add(name, cls, lcfg, inputs);
      alias.set(name, name);
    }
    return resolveRef(outs[0], String(cfg.name));
  }
}

/**
 * Flatten a model's Keras JSON (`{class_name, config}` as `model.toJSON(null, false)`
 * gives, or the `modelTopology` / `model_config` of a model.json).
 */
export function flattenTopology(topology: Json): FlatGraph {
  const model = (topology.model_config ?? topology) as Json;
  if (typeof model.class_name !== 'string' || !MODEL_CLASSES.has(model.class_name)) {
    throw new DeferError('E_MODEL', `the topology is a '${String(model.class_name)}', not a Sequential or functional model`);
  }
  const f = new Flattener();
  const output = f.model(model, null);
  const layers = topoSort(f.layers);
  const name = String((model.config as Json)?.name ?? 'model');
  return { name, layers, output };
}

/** Kahn's algorithm that keeps the given order wherever it is already valid. */
function topoSort(layers: FlatLayer[]): FlatLayer[] {
  const byName = new Map(layers.map((l) => [l.name, l]));
  const done = new Set<string>();
  const out: FlatLayer[] = [];
  const visit = (l: FlatLayer, stack: Set<string>): void => {
    if (done.has(l.name)) return;
    if (stack.has(l.name)) throw new DeferError('E_MODEL', `the layer graph has a cycle through '${l.name}'`);
    stack.add(l.name);
    for (const i of l.inputs) visit(byName.get(i)!, stack);
    stack.delete(l.name);
    done.add(l.name);
    out.push(l);
  };
  for (const l of layers) visit(l, new Set());
  return out;
}

/** Keras-style JSON for a functional model made of `layers`, reading `input`, producing `output`. */
export function toModelTopology(name: string, layers: FlatLayer[], input: string, output: string): Json {
  return {
    class_name: 'Model',
    config: {
      name,
      layers: layers.map((l) => ({
        name: l.name,
        class_name: l.className,
        config: l.config,
        inbound_nodes: l.inputs.length === 0 ? [] : [l.inputs.map((i) => [i, 0, 0, {}])],
      })),
      input_layers: [[input, 0, 0]],
      output_layers: [[output, 0, 0]],
    },
    keras_version: 'tfjs-layers',
    backend: 'tensor_flow.js',
  };
}

export interface CutAnalysis {
  /** index in graph.layers of every layer after which a cut is valid */
  valid: number[];
  /** for each layer index, the names of the tensors that cross a cut after it */
  crossing: string[][];
  /** layers after which no cut can be made for a reason of their own (not float32, a second output used), with that reason */
  blocked?: Map<string, string>;
}

/** Which cuts are valid: exactly one tensor crosses, neither side is empty, and the layer is not `blocked`. */
export function analyseCuts(g: FlatGraph, blocked?: Map<string, string>): CutAnalysis {
  const n = g.layers.length;
  const index = new Map(g.layers.map((l, i) => [l.name, i]));
  const lastUse = new Array<number>(n).fill(-1);
  g.layers.forEach((l, i) => {
    for (const src of l.inputs) lastUse[index.get(src)!] = Math.max(lastUse[index.get(src)!], i);
  });
  lastUse[index.get(g.output)!] = n; // the model output crosses every cut after it
  const crossing: string[][] = [];
  const valid: number[] = [];
  const live = new Set<number>();
  for (let i = 0; i < n; i++) {
    if (lastUse[i] > i) live.add(i);
    for (const j of [...live]) if (lastUse[j] <= i) live.delete(j);
    crossing.push([...live].map((j) => g.layers[j].name));
    const isInput = g.layers[i].inputs.length === 0;
    if (i < n - 1 && !isInput && live.size === 1 && live.has(i) && !blocked?.has(g.layers[i].name)) valid.push(i);
  }
  return { valid, crossing, ...(blocked ? { blocked } : {}) };
}

/**
 * The shortest unique '/'-separated suffix of each name (graph nodes have long
 * scoped names: `.../MobilenetV2/expanded_conv_8/add` becomes `expanded_conv_8/add`).
 */
export function shortNames(names: string[]): string[] {
  const count = new Map<string, number>();
  const suffixes = names.map((n) => {
    const parts = n.split('/');
    return parts.map((_, i) => parts.slice(parts.length - 1 - i).join('/'));
  });
  for (const ss of suffixes) for (const s of ss) count.set(s, (count.get(s) ?? 0) + 1);
  return suffixes.map((ss, i) => ss.find((s) => count.get(s) === 1) ?? names[i]);
}

/** Each layer's full name to its shortest unique suffix. */
export function shortNameMap(g: FlatGraph): Map<string, string> {
  const names = g.layers.map((l) => l.name);
  return new Map(shortNames(names).map((s, i) => [names[i], s]));
}

/** The full name that `name` means: itself, or the one layer whose name ends with `/name`; undefined when none. */
function fullName(g: FlatGraph, index: Map<string, number>, name: string, short: (names: string[]) => string): string | undefined {
  if (index.has(name)) return name;
  const matches = g.layers.filter((l) => l.name.endsWith(`/${name}`)).map((l) => l.name);
  if (matches.length > 1) {
    throw new CutError(
      name,
      `cut '${name}' is ambiguous: ${matches.length} ${g.unit ?? 'layer'} names end with it (${short(matches.slice(0, 4))}${matches.length > 4 ? ', ...' : ''}); give more of the name`,
      matches.slice(0, 4),
    );
  }
  return matches[0];
}

function nearest(valid: number[], at: number, g: FlatGraph): string[] {
  const before = valid.filter((v) => v < at).slice(-2);
  const after = valid.filter((v) => v > at).slice(0, 2);
  return [...before, ...after].map((v) => g.layers[v].name);
}

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const t = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = t;
    }
  }
  return d[b.length];
}

/**
 * Check cut layer names against the graph and return their indices, or throw
 * a CutError that names the layer, says why, and lists valid cuts near it.
 */
export function resolveCuts(g: FlatGraph, cuts: string[], analysis = analyseCuts(g)): number[] {
  const index = new Map(g.layers.map((l, i) => [l.name, i]));
  const validSet = new Set(analysis.valid);
  const seen = new Set<string>();
  const out: number[] = [];
  const unit = g.unit ?? 'layer';
  let shorts: Map<string, string> | undefined;
  const short = (names: string[]) => {
    shorts ??= shortNameMap(g);
    return names.map((n) => shorts!.get(n) ?? n).join(', ');
  };
  for (const given of cuts) {
    const cut = fullName(g, index, given, short) ?? given;
    const i = index.get(cut);
    if (i === undefined) {
      const tail = (n: string) => n.split('/').slice(-cut.split('/').length).join('/');
      const similar = analysis.valid
        .map((v) => g.layers[v].name)
        .sort((a, b) => editDistance(cut, tail(a)) - editDistance(cut, tail(b)))
        .slice(0, 4);
      throw new CutError(cut, `unknown ${unit} '${cut}': the model has no ${unit} of that name. Valid cuts with similar names: ${short(similar)}`, similar);
    }
    if (seen.has(cut)) throw new CutError(cut, `${unit} '${given}' is given twice as a cut`, nearest(analysis.valid, i, g));
    seen.add(cut);
    if (!validSet.has(i)) {
      const near = nearest(analysis.valid, i, g);
      const cls = g.layers[i].className;
      let why: string;
      if (g.layers[i].inputs.length === 0) why = `it is the model's input (${cls}), so the first stage would be empty`;
      else if (i === g.layers.length - 1) why = `it is the model's last ${unit}, so the last stage would be empty`;
      else if (analysis.blocked?.has(cut)) why = analysis.blocked.get(cut)!;
      else {
        const cross = analysis.crossing[i];
        why = `${cross.length} tensors cross this point (${short(cross)}): it lies inside a block with a skip connection`;
      }
      throw new CutError(cut, `cannot cut after ${unit} '${given}': ${why}. Valid cuts near it: ${short(near) || '(none)'}`, near);
    }
    if (out.length > 0 && i < out[out.length - 1]) {
      const prev = g.layers[out[out.length - 1]].name;
      throw new CutError(cut, `cuts must follow the model's layer order: '${cut}' comes before '${prev}'`, [prev, cut]);
    }
    out.push(i);
  }
  return out;
}
