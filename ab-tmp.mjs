// A/B: does running the whole model in the dispatcher process slow the chain's run that follows?
import { withLocalDeployment } from './dist/cli/up.js';
import { loadConfig } from './dist/config/schema.js';
import { runChain, runLocal } from './dist/dispatcher/run/measure-run.js';
import { setLogLevel } from './dist/lib/core/log.js';
import { syntheticFrames } from './dist/lib/model/synthetic-frames.js';

setLogLevel('warn');
const model = process.argv[2];
const config = loadConfig(undefined, { 'dispatcher.model': model, 'up.nodes': 2, 'up.frames': 100, 'planner.shape': 'chain', 'broker.port': 0, logLevel: 'warn' }, {});
await withLocalDeployment(config, { progress: () => {} }, async (l) => {
  await l.dispatcher.nodes.waitCapabilities(l.ids, 60000);
  const cuts = (await import('./dist/lib/planning/auto-plan.js')).defaultCuts;
  const c = await cuts(l.flat, config, l.backend, 2);
  const d = await l.dispatcher.deploy(l.flat, l.ids, c);
  const frames = syntheticFrames(l.flat.inputShape, 100, 1);
  const once = async (label) => {
    const r = await runChain(d, frames);
    console.log(label, (100 / (r.wallMs / 1000)).toFixed(2), 'fps', (r.cpuMs / 100).toFixed(1), 'ms CPU/frame');
  };
  await once('before local A');
  await once('before local B');
  const loc = await runLocal(l.flat, frames);
  console.log('local', (100 / (loc.wallMs / 1000)).toFixed(2));
  await once('after local A');
  await once('after local B');
});
process.exit(0);
