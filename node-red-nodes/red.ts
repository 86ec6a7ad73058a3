/**
 * The small part of Node-RED's runtime API that the DEFER nodes use, typed
 * here (Node-RED ships no types of its own), and helpers shared by the nodes.
 */

export interface NodeStatusSpec {
  fill?: 'red' | 'green' | 'yellow' | 'blue' | 'grey';
  shape?: 'ring' | 'dot';
  text?: string;
}

export interface NodeMessage {
  _msgid?: string;
  topic?: string;
  payload?: unknown;
  [key: string]: unknown;
}

export interface RedNode {
  id: string;
  type: string;
  name?: string;
  credentials?: Record<string, string | undefined>;
  status(s: NodeStatusSpec | Record<string, never>): void;
  log(msg: string): void;
  warn(msg: string): void;
  error(msg: string | Error, m?: NodeMessage): void;
  send(msg: NodeMessage | NodeMessage[] | null): void;
  on(event: 'input', cb: (msg: NodeMessage, send: (m: NodeMessage) => void, done: (err?: Error) => void) => void): void;
  on(event: 'close', cb: (removed: boolean, done: () => void) => void): void;
}

export interface NodeAPI {
  util?: { generateId(): string };
  nodes: {
    createNode(node: object, config: object): void;
    registerType(type: string, ctor: (this: never, config: never) => void, opts?: { credentials?: Record<string, { type: 'text' | 'password' }> }): void;
    getNode(id: string): unknown;
  };
}

/** Comma- or space-separated names. */
export function nameList(s: unknown): string[] {
  return String(s ?? '')
    .split(/[\s,]+/)
    .map((x) => x.trim())
    .filter(Boolean);
}

export function positiveInt(v: unknown, dflt: number): number {
  if (v === undefined || v === null || v === '') return dflt;
  const n = Number(v);
  return Number.isInteger(n) && n > 0 ? n : NaN;
}

/** A message for the user that fits under a node (Node-RED cuts long status text). */
export function short(s: string, max = 60): string {
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** What is wrong with an MQTT topic filter (levels, + and # as whole levels, # last); null when it is good. */
export function filterProblem(filter: string): string | null {
  if (!filter || filter.length > 65535 || filter.includes('\u0000')) return `'${filter}' is not an MQTT topic filter`;
  const levels = filter.split('/');
  for (const [i, l] of levels.entries()) {
    if (l.includes('#') && (l !== '#' || i !== levels.length - 1)) return `in '${filter}', # must be a whole level and the last one`;
    if (l.includes('+') && l !== '+') return `in '${filter}', + must be a whole level`;
  }
  return null;
}

/** What is wrong with a reply topic for frames from `filter` (no #; each + is filled from the frame's topic); null when good. */
export function replyProblem(reply: string, filter: string): string | null {
  if (reply.includes('#')) return `predictions topic '${reply}' cannot hold #`;
  const bad = filterProblem(reply);
  if (bad) return bad.replace(/^'/, "predictions topic '");
  const want = reply.split('/').filter((l) => l === '+').length;
  const have = filter ? filter.split('/').filter((l) => l === '+').length : 0;
  if (want > have) return `predictions topic '${reply}' has ${want} +, but the frames topic '${filter}' has ${have} to fill them from`;
  return null;
}

/** The topic a prediction for a frame on `topic` goes to: each + of `reply` filled, in order, by the frame topic's level under a + of `filter`; null when `topic` does not match `filter` (and `reply` needs it). */
export function replyTopicFor(reply: string, filter: string, topic: string | undefined): string | null {
  if (!reply.includes('+')) return reply;
  if (!filter || typeof topic !== 'string') return null;
  const f = filter.split('/');
  const t = topic.split('/');
  const filled: string[] = [];
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') break;
    if (i >= t.length) return null;
    if (f[i] === '+') filled.push(t[i]);
    else if (f[i] !== t[i]) return null;
  }
  if (!f.includes('#') && t.length !== f.length) return null;
  let k = 0;
  return reply
    .split('/')
    .map((l) => (l === '+' ? filled[k++] : l))
    .join('/');
}
