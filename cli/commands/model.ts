import { DeferError } from '../../lib/core/errors.js';
import { log } from '../../lib/core/log.js';
import { initEngine } from '../../lib/model/engine.js';
import { saveLayersModel } from '../../lib/model/model-io.js';
import { createZooModel, ZOO_NAMES } from '../../lib/model/zoo.js';
import { parseCommand } from '../args.js';
import type { Command } from '../command.js';
import { SEED } from '../flags.js';

/** `defer model`. */
export const modelCommand: Command = {
  usage: 'defer model create <name> --out <dir>',
  about: `Write a zoo model (${ZOO_NAMES.join(', ')}) with its seeded weights as model.json + weights.bin.`,
  flags: { out: { type: 'string', help: 'output folder' }, seed: SEED },
  async run(argv) {
    const { config, flags, positionals } = parseCommand(argv, this.flags);
    const [verb, name] = positionals;
    if (verb !== 'create' || !name || typeof flags.out !== 'string') throw new DeferError('E_CONFIG', `usage: ${this.usage}`);
    await initEngine(config.backend);
    const model = createZooModel(name, config.dispatcher.seed);
    const path = await saveLayersModel(model, flags.out);
    log.info(`wrote ${path} (${model.countParams().toLocaleString('en')} parameters)`);
    model.dispose();
  },
};
