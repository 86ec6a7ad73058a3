/**
 * Broker security: users with salted password hashes (scrypt) in a JSON file,
 * and per-role topic ACLs. Roles:
 *  - dispatcher: everything under defer/ (assignments, weights, frames in, results out);
 *  - node <id>: reads its assignment, its weights and stage inputs; writes its status, stage inputs
 *    (its output), results to a dispatcher, and errors;
 *  - sensor <id>: writes defer/<p>/frames/<id>, reads defer/<p>/results/<id>;
 *  - admin: everything (monitoring, tools).
 * The file: { "users": [{ "username", "role", "id"?, "salt", "hash" }] }, written by `defer user add`.
 * An external check (broker.authModule) may answer for users the file does not know.
 */
import { randomBytes, scryptSync, timingSafeEqual } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { DeferError, errorMessage } from '../lib/core/errors.js';
import { log } from '../lib/core/log.js';
import { ALL_TOPICS, ANY_PIPELINE, filterWithin } from '../lib/protocol/index.js';
import { isName, NAME_RULE } from '../lib/protocol/names.js';

export type Role = 'dispatcher' | 'node' | 'sensor' | 'admin';
export const ROLES: readonly Role[] = ['dispatcher', 'node', 'sensor', 'admin'];

export interface UserRecord {
  username: string;
  role: Role;
  /** node or device id the user stands for (default: the username) */
  id?: string;
  salt: string;
  hash: string;
}

export interface Principal {
  username: string;
  role: Role;
  id: string;
}

const T = ANY_PIPELINE;
const KEYLEN = 32;

export function hashPassword(password: string, salt = randomBytes(16).toString('hex')): { salt: string; hash: string } {
  return { salt, hash: scryptSync(password, salt, KEYLEN).toString('hex') };
}

export function verifyPassword(password: string, u: Pick<UserRecord, 'salt' | 'hash'>): boolean {
  const want = Buffer.from(u.hash, 'hex');
  const got = scryptSync(password, u.salt, KEYLEN);
  return want.length === got.length && timingSafeEqual(want, got);
}

export async function readUsers(file: string): Promise<UserRecord[]> {
  let j: unknown;
  try {
    j = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new DeferError('E_CONFIG', `cannot read the users file ${file} (broker.users): ${errorMessage(err)}`);
  }
  const users = (j as { users?: unknown }).users;
  if (!Array.isArray(users)) throw new DeferError('E_CONFIG', `users file ${file}: expected {"users": [...]}`);
  users.forEach((u: Partial<UserRecord>, i) => {
    if (!u || typeof u.username !== 'string' || !ROLES.includes(u.role as Role) || typeof u.salt !== 'string' || !/^[0-9a-f]{64}$/.test(String(u.hash)) || (u.id !== undefined && !isName(u.id))) {
      throw new DeferError('E_CONFIG', `users file ${file}: user ${i} needs username, role (${ROLES.join(', ')}), salt, hash (64 hex), and an optional id of letters, digits, _ . -`);
    }
  });
  return users as UserRecord[];
}

/** Add or replace a user in the file (created if missing). */
export async function addUser(file: string, username: string, role: Role, password: string, id?: string): Promise<void> {
  if (!isName(username)) throw new DeferError('E_CONFIG', `username '${username}' must be ${NAME_RULE}`);
  if (!ROLES.includes(role)) throw new DeferError('E_CONFIG', `role must be one of ${ROLES.join(', ')}, not '${role}'`);
  if (id !== undefined && !isName(id)) throw new DeferError('E_CONFIG', `id '${id}' must be ${NAME_RULE}`);
  if (password.length < 8) throw new DeferError('E_CONFIG', 'the password must have at least 8 characters');
  let users: UserRecord[] = [];
  try {
    users = await readUsers(file);
  } catch (err) {
    if (!/ENOENT/.test(errorMessage(err))) throw err;
  }
  users = users.filter((u) => u.username !== username);
  users.push({ username, role, ...(id ? { id } : {}), ...hashPassword(password) });
  await writeFile(file, JSON.stringify({ users }, null, 2) + '\n', { mode: 0o600 });
}

/** Topic filters a principal may publish to and subscribe to. */
export function aclFor(p: Principal): { publish: string[]; subscribe: string[] } {
  switch (p.role) {
    case 'admin':
    case 'dispatcher':
      return { publish: [ALL_TOPICS], subscribe: [ALL_TOPICS] };
    case 'node':
      return {
        publish: [T.nodeStatus(p.id), T.nodeAlive(p.id), T.nodeProbe(p.id), T.stageIn('+'), T.stageIn('+', '+'), T.results('+'), T.errors],
        // any node's weight chunks: a standby reads the retained chunks of the node it replaces (each is checked against the manifest's sha256)
        subscribe: [T.nodeAssign(p.id), T.nodePrefetch(p.id), T.nodeProbe(p.id), T.nodeWeightsAll('+'), T.stageIn('+'), T.stageIn('+', p.id)],
      };
    case 'sensor':
      return { publish: [T.frames(p.id)], subscribe: [T.deviceResults(p.id)] };
  }
}

export function mayPublish(p: Principal, topic: string): boolean {
  return aclFor(p).publish.some((f) => filterWithin(topic, f));
}

export function maySubscribe(p: Principal, filter: string): boolean {
  return aclFor(p).subscribe.some((f) => filterWithin(filter, f));
}

/** The principal for a username and password, or null. */
export function authenticateUser(users: UserRecord[], username: string | undefined, password: Buffer | undefined): Principal | null {
  const u = users.find((x) => x.username === username);
  if (!u || !password || !verifyPassword(password.toString('utf8'), u)) return null;
  return { username: u.username, role: u.role, id: u.id ?? u.username };
}

/** What an external auth hook answers: the role (and id) of a valid user, or null / false to refuse. */
export type AuthResult = { role: Role; id?: string } | null | false;

/** An external check of a connecting client's credentials (an LDAP or HTTP lookup, a token check). */
export type AuthHook = (req: { username: string; password: string; clientId: string }) => AuthResult | Promise<AuthResult>;

/**
 * Load broker.authModule: an ES module whose default export (or `authenticate`
 * export) is an AuthHook. Its answers are checked: an unknown role refuses.
 */
export async function loadAuthHook(file: string): Promise<AuthHook> {
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(resolve(file)).href)) as Record<string, unknown>;
  } catch (err) {
    throw new DeferError('E_CONFIG', `cannot load the auth module ${file} (broker.authModule): ${errorMessage(err)}`);
  }
  const fn = (typeof mod.authenticate === 'function' ? mod.authenticate : mod.default) as unknown;
  if (typeof fn !== 'function')
    throw new DeferError(
      'E_CONFIG',
      `the auth module ${file} (broker.authModule) must export a function: export default async ({ username, password, clientId }) => ({ role: 'node', id: 'n1' }) or null`,
    );
  return async (req) => {
    const r = (await (fn as AuthHook)(req)) as unknown;
    if (!r) return null;
    const { role, id } = r as { role?: unknown; id?: unknown };
    if (!ROLES.includes(role as Role) || (id !== undefined && !isName(id))) {
      log.warn(`broker: the auth module answered ${JSON.stringify(r)} for '${req.username}': not a role of ${ROLES.join(', ')} with an optional id; refused`);
      return null;
    }
    return { role: role as Role, ...(id ? { id: id as string } : {}) };
  };
}
