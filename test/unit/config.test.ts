import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseCommand } from '../../cli/args.js';
import { LEAN_V8_FLAGS, NODE_V8_FLAGS, nodeEnv, nodeV8Flags } from '../../cli/node-processes.js';
import { configurationDoc, loadConfig } from '../../config/schema.js';
import { ROOT } from '../helpers/common.js';

const dir = mkdtempSync(join(tmpdir(), 'defer-config-'));

test('precedence: defaults < config file < DEFER_* environment < flags', () => {
  const file = join(dir, 'c.json');
  writeFileSync(file, JSON.stringify({ pipeline: 'fromfile', dispatcher: { model: 'tiny', chunkBytes: 4096 }, up: { nodes: 4 } }));
  const d = loadConfig(undefined, {}, {});
  assert.equal(d.pipeline, 'default');
  assert.equal(d.up.nodes, 3);
  const c = loadConfig(file, {}, { DEFER_PIPELINE: 'fromenv', DEFER_UP_NODES: '5' });
  assert.equal(c.pipeline, 'fromenv');
  assert.equal(c.up.nodes, 5);
  assert.equal(c.dispatcher.model, 'tiny');
  assert.equal(c.dispatcher.chunkBytes, 4096);
  const p = parseCommand(
    ['--config', file, '--nodes', '6', '--cut', 'a,b', '--no-baseline'],
    {
      nodes: { key: 'up.nodes', type: 'string', number: true, help: '' },
      cut: { key: 'dispatcher.cut', type: 'string', list: true, help: '' },
      'no-baseline': { key: 'up.baseline', type: 'boolean', negate: true, help: '' },
    },
    { DEFER_UP_NODES: '5' },
  );
  assert.equal(p.config.up.nodes, 6);
  assert.deepEqual(p.config.dispatcher.cut, ['a', 'b']);
  assert.equal(p.config.up.baseline, false);
});

test('unknown keys and bad values are rejected with the key named', () => {
  const file = join(dir, 'bad.json');
  writeFileSync(file, JSON.stringify({ dispatcher: { modle: 'tiny' } }));
  assert.throws(() => loadConfig(file, {}, {}), /dispatcher\.modle/);
  assert.throws(() => loadConfig(undefined, { 'up.nodes': 0 }, {}), /up\.nodes: must be an integer from 1 to 64/);
  assert.throws(() => loadConfig(undefined, {}, { DEFER_BACKEND: 'gpu' }), /backend: must be one of/);
  assert.throws(() => loadConfig(undefined, {}, { DEFER_BROKER_URL: 'http://x' }), /broker\.url/);
  assert.throws(() => loadConfig(undefined, {}, { DEFER_PIPELINE: 'a/b' }), /pipeline/);
  assert.throws(() => loadConfig(undefined, { 'up.frames': Number('many') }, {}), /up\.frames/);
  assert.throws(() => loadConfig(join(dir, 'missing.json'), {}, {}), /does not exist/);
  assert.throws(() => loadConfig(undefined, {}, { DEFER_ON_NODE_FAILURE: 'panic' }), /dispatcher\.onNodeFailure: must be one of/);
  assert.throws(() => loadConfig(undefined, {}, { DEFER_STANDBY: 'n1,bad/id' }), /dispatcher\.standby/);
  assert.throws(() => loadConfig(undefined, {}, { DEFER_BROKER_TOPIC_LIMITS: '{"frames/+": -5}' }), /broker\.topicLimits: .*limit of 'frames\/\+' must be an integer/);
  assert.throws(() => loadConfig(undefined, {}, { DEFER_BROKER_TOPIC_LIMITS: 'not json' }), /broker\.topicLimits/);
  assert.deepEqual(loadConfig(undefined, {}, { DEFER_BROKER_TOPIC_LIMITS: '{"frames/+": 1024}' }).broker.topicLimits, { 'frames/+': 1024 });
  assert.throws(() => parseCommand(['--nodez', '3'], {}, {}), /Unknown option '--nodez'/);
});

test('every example file in config/ is valid', () => {
  for (const f of ['up-resnet50.json', 'node.json', 'dispatch-tiny.json']) {
    assert.doesNotThrow(() => loadConfig(join(ROOT, 'config', f), {}, {}), f);
  }
});

test('docs/configuration.md is generated from the schema and current', () => {
  const doc = readFileSync(join(ROOT, 'docs', 'configuration.md'), 'utf8');
  assert.equal(doc, configurationDoc(), "docs/configuration.md is stale: run 'node dist/cli/defer.js config docs --out docs/configuration.md'");
});

test('node processes: V8 young generation flags, unless NODE_OPTIONS sizes it already', () => {
  assert.deepEqual(nodeV8Flags(NODE_V8_FLAGS, {}), ['--max-semi-space-size=4']);
  assert.deepEqual(nodeV8Flags(LEAN_V8_FLAGS, {}), ['--max-semi-space-size=1']);
  assert.deepEqual(nodeV8Flags(NODE_V8_FLAGS, { NODE_OPTIONS: '--max-old-space-size=512' }), ['--max-semi-space-size=4'], 'other options leave it');
  assert.deepEqual(nodeV8Flags(LEAN_V8_FLAGS, { NODE_OPTIONS: '--max-old-space-size=512 --max-semi-space-size=8' }), [], "the user's own size stands");
});

test('node processes: glibc maps buffers of 1 MB or more on their own, unless the environment says otherwise', () => {
  assert.equal(nodeEnv({ PATH: '/bin' }).MALLOC_MMAP_THRESHOLD_, String(1 << 20));
  assert.equal(nodeEnv({ PATH: '/bin' }).PATH, '/bin');
  assert.equal(nodeEnv({ MALLOC_MMAP_THRESHOLD_: '65536' }).MALLOC_MMAP_THRESHOLD_, '65536', "the user's own setting stands");
});
