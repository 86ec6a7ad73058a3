import { writeFile } from 'node:fs/promises';
import { addUser, ROLES, type Role, readUsers } from '../../broker/auth.js';
import { mosquittoAcl } from '../../broker/mosquitto-acl.js';
import { DeferError } from '../../lib/core/errors.js';
import { log } from '../../lib/core/log.js';
import { parseCommand } from '../args.js';
import type { Command } from '../command.js';
import { readStdinLine } from '../process-input.js';

/** `defer user`. */
export const userCommand: Command = {
  usage:
    'defer user add --file users.json --user NAME --role dispatcher|node|sensor|admin [--id ID]   (password from DEFER_PASSWORD or stdin)\n       defer user acl --file users.json [--out acl]   (the same ACLs as a Mosquitto acl_file)',
  about: "Add or replace a broker user: a salted password hash (scrypt) and a role whose topics it may use; or write the users' ACLs for Mosquitto.",
  flags: {
    file: { type: 'string', help: 'users file (created if missing; mode 600)' },
    user: { type: 'string', help: 'username' },
    role: { type: 'string', help: ROLES.join(' | ') },
    id: { type: 'string', help: 'node or device id the user stands for (default: the username)' },
    out: { type: 'string', help: 'with acl: the file to write (default: stdout)' },
  },
  async run(argv) {
    const { flags, positionals } = parseCommand(argv, this.flags);
    if (positionals[0] === 'acl' && typeof flags.file === 'string') {
      const acl = mosquittoAcl(await readUsers(flags.file));
      if (typeof flags.out === 'string') {
        await writeFile(flags.out, acl);
        log.info(`Mosquitto acl_file for ${flags.file} written to ${flags.out}`);
      } else process.stdout.write(acl);
      return;
    }
    if (positionals[0] !== 'add' || typeof flags.file !== 'string' || typeof flags.user !== 'string' || typeof flags.role !== 'string') throw new DeferError('E_CONFIG', `usage: ${this.usage}`);
    const password = process.env.DEFER_PASSWORD ?? (await readStdinLine());
    await addUser(flags.file, flags.user, flags.role as Role, password, typeof flags.id === 'string' ? flags.id : undefined);
    log.info(`user ${flags.user} (${flags.role}) written to ${flags.file}`);
  },
};
