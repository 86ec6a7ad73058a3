/**
 * A fleet file: the devices `defer up --fleet` emulates on this machine. Device classes (CPU cores, memory, the
 * link to the broker), how many of each, and changes at given times (a device slowed by another program or by
 * heat, a link that narrows). Each device becomes a node process in a cgroup of its own (its cores as a CPU quota,
 * its memory as a limit) and, where the class has a link, in a network namespace of its own whose veth to the
 * broker is shaped with tc (cli/node-network.ts). Validated here, every error naming the field and the file.
 * Format: docs/fleets.md.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DeferError } from '../lib/core/errors.js';
import { PACKAGE_ROOT } from '../lib/model/shipped.js';
import { checkLimits, type NodeLimits, parseBytes } from './node-cgroups.js';

export interface DeviceLink {
  /** bandwidth each way, Mbit/s */
  mbit: number;
  /** one-way delay, ms: only where the kernel has netem (tbf shapes bandwidth alone) */
  latencyMs?: number;
}

export interface FleetDevice {
  /** the node id: n1, n2, ... in the file's order */
  id: string;
  class: string;
  limits: NodeLimits;
  link?: DeviceLink;
}

/** A change to one device while the deployment runs, `atMs` after its frames start. */
export interface FleetChange {
  atMs: number;
  device: string;
  cpus?: number;
  link?: DeviceLink;
}

export interface Fleet {
  name: string;
  file: string;
  devices: FleetDevice[];
  changes: FleetChange[];
}

type Obj = Record<string, unknown>;

const isObj = (x: unknown): x is Obj => typeof x === 'object' && x !== null && !Array.isArray(x);

function only(o: Obj, keys: string[], where: string, file: string): void {
  const extra = Object.keys(o).filter((k) => !keys.includes(k));
  if (extra.length) throw fleetError(file, `${where} has unknown key${extra.length > 1 ? 's' : ''} ${extra.map((k) => `'${k}'`).join(', ')} (known: ${keys.join(', ')})`);
}

function fleetError(file: string, what: string): DeferError {
  return new DeferError('E_CONFIG', `fleet file ${file}: ${what} (format: docs/fleets.md)`);
}

function positive(o: Obj, key: string, where: string, file: string, max = Number.POSITIVE_INFINITY): number {
  const v = o[key];
  if (typeof v !== 'number' || !(v > 0) || v > max) throw fleetError(file, `${where}.${key} must be a number above 0${Number.isFinite(max) ? ` and at most ${max}` : ''}, got ${JSON.stringify(v)}`);
  return v;
}

function linkOf(x: unknown, where: string, file: string): DeviceLink {
  if (!isObj(x)) throw fleetError(file, `${where} must be an object such as {"mbit": 20}`);
  only(x, ['mbit', 'latencyMs'], where, file);
  const link: DeviceLink = { mbit: positive(x, 'mbit', where, file, 100_000) };
  if (x.latencyMs !== undefined) {
    if (typeof x.latencyMs !== 'number' || !(x.latencyMs >= 0)) throw fleetError(file, `${where}.latencyMs must be a number of ms >= 0, got ${JSON.stringify(x.latencyMs)}`);
    link.latencyMs = x.latencyMs;
  }
  return link;
}

/** Parse and check a fleet given as a value (the file's JSON); `file` names it in errors. */
export function parseFleet(json: unknown, file: string): Fleet {
  if (!isObj(json)) throw fleetError(file, 'must be a JSON object with "classes" and "devices"');
  only(json, ['name', 'description', 'classes', 'devices', 'changes'], 'the file', file);
  if (!isObj(json.classes) || Object.keys(json.classes).length === 0) throw fleetError(file, '"classes" must be an object of device classes, e.g. {"pi": {"cpus": 0.5, "memory": "512M"}}');
  const classes = new Map<string, { limits: NodeLimits; link?: DeviceLink }>();
  for (const [name, c] of Object.entries(json.classes)) {
    const where = `classes.${name}`;
    if (!isObj(c)) throw fleetError(file, `${where} must be an object`);
    only(c, ['cpus', 'memory', 'link', 'description'], where, file);
    const limits: NodeLimits = {};
    if (c.cpus !== undefined) limits.cpus = positive(c, 'cpus', where, file, 1024);
    if (c.memory !== undefined) {
      if (typeof c.memory !== 'string' && typeof c.memory !== 'number') throw fleetError(file, `${where}.memory must be a size such as "256M"`);
      limits.memoryBytes = parseBytes(String(c.memory), `fleet file ${file}: ${where}.memory`);
    }
    try {
      checkLimits(limits, { memory: `fleet file ${file}: ${where}.memory`, cpus: `fleet file ${file}: ${where}.cpus` });
    } catch (err) {
      throw new DeferError('E_CONFIG', `${(err as Error).message} (format: docs/fleets.md)`);
    }
    classes.set(name, { limits, ...(c.link !== undefined ? { link: linkOf(c.link, `${where}.link`, file) } : {}) });
  }
  if (!Array.isArray(json.devices) || json.devices.length === 0) throw fleetError(file, '"devices" must be a list such as [{"class": "pi", "count": 4}]');
  const devices: FleetDevice[] = [];
  json.devices.forEach((d, i) => {
    const where = `devices[${i}]`;
    if (!isObj(d)) throw fleetError(file, `${where} must be an object such as {"class": "pi", "count": 4}`);
    only(d, ['class', 'count'], where, file);
    const cls = typeof d.class === 'string' ? classes.get(d.class) : undefined;
    if (!cls) throw fleetError(file, `${where}.class is ${JSON.stringify(d.class)}, not one of the classes (${[...classes.keys()].join(', ')})`);
    const count = d.count === undefined ? 1 : d.count;
    if (!Number.isInteger(count) || (count as number) < 1) throw fleetError(file, `${where}.count must be a whole number >= 1, got ${JSON.stringify(d.count)}`);
    // each device its own copies: a change to one device's cores or link is not its class's
    for (let k = 0; k < (count as number); k++) devices.push({ id: `n${devices.length + 1}`, class: d.class as string, limits: { ...cls.limits }, ...(cls.link ? { link: { ...cls.link } } : {}) });
  });
  if (devices.length > 64) throw fleetError(file, `${devices.length} devices: at most 64 (up.nodes)`);
  const changes: FleetChange[] = [];
  if (json.changes !== undefined && !Array.isArray(json.changes)) throw fleetError(file, '"changes" must be a list such as [{"atS": 60, "device": "n2", "cpus": 0.1}]');
  for (const [i, c] of ((json.changes as unknown[]) ?? []).entries()) {
    const where = `changes[${i}]`;
    if (!isObj(c)) throw fleetError(file, `${where} must be an object`);
    only(c, ['atS', 'device', 'cpus', 'link'], where, file);
    if (typeof c.atS !== 'number' || !(c.atS >= 0)) throw fleetError(file, `${where}.atS must be seconds >= 0 after the frames start, got ${JSON.stringify(c.atS)}`);
    const dev = devices.find((d) => d.id === c.device);
    if (!dev) throw fleetError(file, `${where}.device is ${JSON.stringify(c.device)}, not one of the devices (n1..n${devices.length})`);
    if (c.cpus === undefined && c.link === undefined) throw fleetError(file, `${where} changes nothing: give cpus, link or both`);
    if (c.cpus !== undefined && dev.limits.cpus === undefined) throw fleetError(file, `${where}: ${dev.id} (class ${dev.class}) has no cpus to change; give its class a cpus`);
    if (c.link !== undefined && dev.link === undefined) throw fleetError(file, `${where}: ${dev.id} (class ${dev.class}) has no link to change; give its class a link`);
    changes.push({
      atMs: c.atS * 1000,
      device: dev.id,
      ...(c.cpus !== undefined ? { cpus: positive(c, 'cpus', where, file, 1024) } : {}),
      ...(c.link !== undefined ? { link: linkOf(c.link, `${where}.link`, file) } : {}),
    });
  }
  changes.sort((a, b) => a.atMs - b.atMs);
  return { name: typeof json.name === 'string' ? json.name : file, file, devices, changes };
}

/** The example fleets shipped in config/fleets/, by name (`--fleet raspberry-pi`). */
export const SHIPPED_FLEETS_DIR = join(PACKAGE_ROOT, 'config', 'fleets');

/** Read and check a fleet file (JSON): a path, or the name of a shipped example (raspberry-pi, mixed-wifi). */
export function loadFleet(spec: string): Fleet {
  const shipped = join(SHIPPED_FLEETS_DIR, `${spec}.json`);
  const file = !existsSync(spec) && /^[\w-]+$/.test(spec) && existsSync(shipped) ? shipped : spec;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new DeferError('E_CONFIG', `cannot read the fleet file ${file}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new DeferError('E_CONFIG', `fleet file ${file} is not JSON: ${(err as Error).message}`);
  }
  return parseFleet(json, file);
}

/** One line per class: what the fleet emulates. */
export function describeFleet(f: Fleet): string {
  const byClass = new Map<string, FleetDevice[]>();
  for (const d of f.devices) byClass.set(d.class, [...(byClass.get(d.class) ?? []), d]);
  const parts = [...byClass].map(([cls, ds]) => {
    const d = ds[0];
    const what = [
      d.limits.cpus !== undefined ? `${d.limits.cpus} cores` : 'the host cores',
      d.limits.memoryBytes !== undefined ? `${(d.limits.memoryBytes / 2 ** 20).toFixed(0)} MiB` : 'no memory limit',
      d.link ? `${d.link.mbit} Mbit/s${d.link.latencyMs ? `, ${d.link.latencyMs} ms` : ''}` : 'loopback',
    ];
    return `${ds.length} x ${cls} (${ds.map((x) => x.id).join(', ')}: ${what.join(', ')})`;
  });
  return `fleet ${f.name}: ${parts.join('; ')}`;
}
