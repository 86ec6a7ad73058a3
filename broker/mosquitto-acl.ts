/**
 * The same per-role topic ACLs for Mosquitto: an acl_file made from a users
 * file (`defer user acl`). Mosquitto keeps its own password file
 * (mosquitto_passwd); the usernames must match.
 */

import { DeferError } from '../lib/core/errors.js';
import { aclFor, type UserRecord } from './auth.js';

/** A Mosquitto acl_file granting each user its role's topics (docs/reliability-and-security.md). */
export function mosquittoAcl(users: UserRecord[]): string {
  const lines = ['# Made by `defer user acl` from a DEFER users file: one block per user, the topics of its role.', '# Mosquitto denies every topic not granted here.', ''];
  for (const u of users) {
    if (/\s/.test(u.username)) throw new DeferError('E_CONFIG', `user '${u.username}': Mosquitto's acl_file cannot name a user with white space`);
    const acl = aclFor({ username: u.username, role: u.role, id: u.id ?? u.username });
    lines.push(`# ${u.role}${u.id && u.id !== u.username ? ` ${u.id}` : ''}`, `user ${u.username}`);
    const both = acl.publish.filter((f) => acl.subscribe.includes(f));
    for (const f of both) lines.push(`topic readwrite ${f}`);
    for (const f of acl.publish.filter((x) => !both.includes(x))) lines.push(`topic write ${f}`);
    for (const f of acl.subscribe.filter((x) => !both.includes(x))) lines.push(`topic read ${f}`);
    lines.push('');
  }
  return lines.join('\n');
}
