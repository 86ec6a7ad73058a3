/**
 * Fleet files: the devices `defer up --fleet` emulates, parsed into one node per device with its class's limits
 * and link; every mistake refused with the field named.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import test from 'node:test';
import { describeFleet, loadFleet, parseFleet } from '../../cli/fleet.js';
import { ROOT } from '../helpers/common.js';

const classes = { pi: { cpus: 0.2, memory: '256M', link: { mbit: 20 } }, big: { cpus: 1 } };

test('a fleet: one node per device in order, with its class limits and link; changes sorted by time', () => {
  const f = parseFleet(
    {
      name: 'lab',
      classes,
      devices: [{ class: 'big' }, { class: 'pi', count: 3 }],
      changes: [
        { atS: 60, device: 'n3', cpus: 0.2 },
        { atS: 30, device: 'n3', cpus: 0.07, link: { mbit: 5 } },
      ],
    },
    'lab.json',
  );
  assert.deepEqual(
    f.devices.map((d) => [d.id, d.class, d.limits.cpus, d.limits.memoryBytes, d.link?.mbit]),
    [
      ['n1', 'big', 1, undefined, undefined],
      ['n2', 'pi', 0.2, 256 * 2 ** 20, 20],
      ['n3', 'pi', 0.2, 256 * 2 ** 20, 20],
      ['n4', 'pi', 0.2, 256 * 2 ** 20, 20],
    ],
  );
  // each device its own limits and link: changing one device's changes no other's
  assert.notEqual(f.devices[1].limits, f.devices[2].limits);
  assert.notEqual(f.devices[1].link, f.devices[2].link);
  assert.deepEqual(f.changes, [
    { atMs: 30_000, device: 'n3', cpus: 0.07, link: { mbit: 5 } },
    { atMs: 60_000, device: 'n3', cpus: 0.2 },
  ]);
  assert.equal(describeFleet(f), 'fleet lab: 1 x big (n1: 1 cores, no memory limit, loopback); 3 x pi (n2, n3, n4: 0.2 cores, 256 MiB, 20 Mbit/s)');
});

test('fleet mistakes are refused, naming the file and the field', () => {
  const bad = (json: unknown, re: RegExp) =>
    assert.throws(
      () => parseFleet(json, 'f.json'),
      (e: Error) => /^fleet file f\.json: /.test(e.message) && re.test(e.message),
    );
  bad([], /must be a JSON object/);
  bad({ classes, devices: [{ class: 'pi' }], extra: 1 }, /the file has unknown key 'extra'/);
  bad({ classes: {}, devices: [] }, /"classes" must be an object of device classes/);
  bad({ classes: { pi: { cpus: 0 } }, devices: [{ class: 'pi' }] }, /classes\.pi\.cpus must be a number above 0/);
  bad({ classes: { pi: { memory: '64M' } }, devices: [{ class: 'pi' }] }, /classes\.pi\.memory 64 MiB is below what an idle node needs/);
  bad({ classes: { pi: { memory: 'lots' } }, devices: [{ class: 'pi' }] }, /classes\.pi\.memory must be a size such as 256M/);
  bad({ classes: { pi: { link: { mbit: -1 } } }, devices: [{ class: 'pi' }] }, /classes\.pi\.link\.mbit must be a number above 0/);
  bad({ classes: { pi: { cores: 1 } }, devices: [{ class: 'pi' }] }, /classes\.pi has unknown key 'cores' \(known: cpus, memory, link, description\)/);
  bad({ classes, devices: [] }, /"devices" must be a list/);
  bad({ classes, devices: [{ class: 'nano' }] }, /devices\[0\]\.class is "nano", not one of the classes \(pi, big\)/);
  bad({ classes, devices: [{ class: 'pi', count: 1.5 }] }, /devices\[0\]\.count must be a whole number >= 1/);
  bad({ classes, devices: [{ class: 'pi', count: 65 }] }, /65 devices: at most 64/);
  bad({ classes, devices: [{ class: 'pi' }], changes: [{ atS: 1, device: 'n2', cpus: 1 }] }, /changes\[0\]\.device is "n2", not one of the devices \(n1\.\.n1\)/);
  bad({ classes, devices: [{ class: 'pi' }], changes: [{ atS: -1, device: 'n1', cpus: 1 }] }, /changes\[0\]\.atS must be seconds >= 0/);
  bad({ classes, devices: [{ class: 'pi' }], changes: [{ atS: 1, device: 'n1' }] }, /changes\[0\] changes nothing/);
  bad({ classes, devices: [{ class: 'big' }], changes: [{ atS: 1, device: 'n1', link: { mbit: 5 } }] }, /n1 \(class big\) has no link to change/);
});

test('the example fleets in config/fleets/ are valid', () => {
  const dir = join(ROOT, 'config', 'fleets');
  const files = readdirSync(dir).filter((f) => f.endsWith('.json'));
  assert.ok(files.length >= 2, files.join(', '));
  for (const f of files) assert.ok(loadFleet(join(dir, f)).devices.length > 0, f);
  assert.throws(() => loadFleet(join(dir, 'missing.json')), /cannot read the fleet file .*missing\.json/);
  // a shipped example by name, from any directory
  assert.equal(loadFleet('raspberry-pi').name, 'raspberry-pi');
  assert.throws(() => loadFleet('no-such-fleet'), /cannot read the fleet file no-such-fleet/);
});
