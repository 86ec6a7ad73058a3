/**
 * Node-RED as people use it: the package installed into a Node-RED user directory, the editor driven in headless
 * Chromium. Each example is imported through the editor's Import dialog (Examples tab) with no warning and no red
 * triangle, deployed with the Deploy button without the "not properly configured" dialog, and its first result is
 * in the debug sidebar within 5 s of the click. With the broker's port taken by a Mosquitto: every DEFER node says
 * so in a short, whole status; then, as docs/node-red.md tells users, the DEFER broker node is set to external on
 * that Mosquitto, and the flow works. The tips in the flows (mosquitto_pub / mosquitto_sub) work, and the
 * predictions carry labels.
 *
 * With DEFER_SCREENSHOTS=<folder> (scripts/screenshot-node-red.sh), it saves the editor's pictures there.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import type { Browser, Page } from 'puppeteer-core';
import sharp from 'sharp';
import { freePort, ROOT } from '../helpers/common.js';
import { CHROMIUM, MOSQUITTO, PKG, type RunningNodeRed, startMosquitto, startNodeRed } from '../helpers/node-red-process.js';

const EXAMPLES = readdirSync(join(ROOT, 'examples'))
  .filter((f) => f.endsWith('.json'))
  .map((f) => f.slice(0, -'.json'.length))
  .sort();
const EMBEDDED = 'DEFER - camera frames to predictions';
const EXISTING = 'DEFER - with an existing MQTT broker';
const SHOTS = process.env.DEFER_SCREENSHOTS;
const CLIENTS = ['/usr/bin/mosquitto_pub', '/usr/bin/mosquitto_sub'].every((f) => existsSync(f));
const missing = !CHROMIUM
  ? 'chromium is not installed (apt-get install -y chromium; .ci/run installs it)'
  : !existsSync(MOSQUITTO) || !CLIENTS
    ? 'mosquitto is not installed (apt-get install -y mosquitto mosquitto-clients; .ci/run installs it)'
    : false;

/** The editor's globals, as far as this test uses them (the functions below run in the page). */
interface EdNode {
  id: string;
  type: string;
  z?: string;
  valid?: boolean;
  validationErrors?: string[];
  [key: string]: unknown;
}
interface EdRed {
  nodes: { eachNode(cb: (n: EdNode) => void): void; eachConfig(cb: (n: EdNode) => void): void; node(id: string): EdNode | null; workspace(id: string): EdNode | null };
  editor: { validateNode(n: EdNode): void; edit(n: EdNode): void };
  sidebar: { show(id: string): void };
  workspaces: { show(id: string): void };
}
type EdWindow = { RED: EdRed; $: (s: string) => { is(s: string): boolean; length: number } };

let red: RunningNodeRed | undefined;
let browser: Browser | undefined;
let page: Page;
const pageErrors: string[] = [];

before(async () => {
  if (missing) return;
  red = await startNodeRed();
  const { default: puppeteer } = await import('puppeteer-core');
  browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  if (SHOTS) mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  await red?.stop();
});

/** A fresh editor on an empty workspace: the flows of the case before removed, the page loaded again. */
async function freshEditor(): Promise<void> {
  await red!.setFlows([]);
  // a new page: the one before may hold undeployed changes, and leaving it would ask to confirm
  await page?.close({ runBeforeUnload: false });
  page = await browser!.newPage();
  page.setDefaultTimeout(60_000);
  await page.setViewport({ width: 1400, height: 760 });
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(`${red!.api}/`, { waitUntil: 'domcontentloaded' });
  await page.waitForFunction(
    () => {
      const w = window as unknown as Partial<EdWindow>;
      return Boolean(w.RED?.nodes && w.$?.('#red-ui-palette-container-DEFER').length && !w.$('#red-ui-loading').is(':visible'));
    },
    { timeout: 120_000 },
  );
  // the palette and the workspace settle (fonts, the first tab) before the first click
  await new Promise((r) => setTimeout(r, 500));
}

async function clickText(selector: string, text: string): Promise<void> {
  const handles = await page.$$(selector);
  for (const h of handles) {
    if ((await h.evaluate((e) => e.textContent?.replace(/\s+/g, ' ').trim())) === text && (await h.isVisible())) {
      await h.scrollIntoView();
      await h.click();
      return;
    }
  }
  const seen = await page.$$eval(selector, (es) => es.map((e) => `${e.textContent?.trim()}${(e as HTMLElement).offsetParent === null ? ' (hidden)' : ''}`));
  await page.screenshot({ path: join(red!.userDir, '..', 'defer-nr-editor-failure.png') }).catch(() => undefined);
  throw new Error(`no visible ${selector} with the text '${text}' (there are: ${seen.join(', ')})`);
}

/** Fail with what the page shows: its notifications, and a picture of it in the temporary folder. */
async function failure(what: string, err: unknown): Promise<never> {
  const shot = join(tmpdir(), `defer-nr-editor-failure-${Date.now()}.png`);
  await page.screenshot({ path: shot }).catch(() => undefined);
  throw new Error(`${what} (${String(err)}); notifications: ${(await notifications().catch(() => [])).join(' | ')}; picture: ${shot}`);
}

/** What a user does: menu > Import, the Examples tab, our module's folder, the example, Import. */
async function importExample(name: string): Promise<void> {
  await page.click('#red-ui-header-button-sidemenu');
  await page.waitForSelector('#menu-item-import', { visible: true });
  await page.click('#menu-item-import');
  await page.waitForSelector('#red-ui-clipboard-dialog-import-tabs', { visible: true });
  await clickText('#red-ui-clipboard-dialog-import-tabs li', 'Examples');
  // the library tree: Examples > flows > our module > the example; a folder is opened with a click where it is closed
  const label = '.red-ui-clipboard-dialog-tab-library .red-ui-treeList-label';
  const visible = (text: string) => page.$$eval(label, (es, t) => es.some((e) => e.textContent?.replace(/\s+/g, ' ').trim() === t && (e as HTMLElement).offsetParent !== null), text);
  const path = ['flows', PKG, name];
  await page.waitForFunction((sel) => document.querySelectorAll(sel).length > 1, {}, label);
  for (let i = 0; i < path.length; i++) {
    for (const end = Date.now() + 30_000; !(await visible(path[i])) && Date.now() < end; ) await new Promise((r) => setTimeout(r, 100));
    if (i < path.length - 1 && !(await visible(path[i + 1]))) await clickText(label, path[i]);
    await new Promise((r) => setTimeout(r, 400)); // the folder slides open
  }
  // the example selected: Import is enabled (a click during the tree's animation can miss: click again)
  const ok = '#red-ui-clipboard-dialog-ok:not(.ui-state-disabled):not([disabled])';
  for (let i = 0; i < 5 && !(await page.$(ok)); i++) {
    await clickText(label, name);
    await page.waitForSelector(ok, { timeout: 2000 }).catch(() => undefined);
  }
  await page.waitForSelector(ok, { timeout: 5000 });
  if (SHOTS && name === EMBEDDED) await page.screenshot({ path: join(SHOTS, 'node-red-import-example.png') });
  await page.click('#red-ui-clipboard-dialog-ok');
  await page.waitForFunction((tab) => Boolean((window as unknown as EdWindow).RED.nodes.workspace(tab)), {}, tabOf(name));
  await page.waitForSelector('#red-ui-clipboard-dialog', { hidden: true });
}

/** The editor's own check, as the Deploy button runs it: every node and config node valid; and no red triangle drawn. */
async function invalidNodes(): Promise<string[]> {
  return page.evaluate(() => {
    const RED = (window as unknown as EdWindow).RED;
    const bad: string[] = [];
    const check = (n: EdNode) => {
      RED.editor.validateNode(n);
      if (n.valid === false) bad.push(`${n.type} ${n.id}: ${(n.validationErrors ?? []).join(', ')}`);
    };
    RED.nodes.eachConfig(check);
    RED.nodes.eachNode(check);
    const triangles = [...document.querySelectorAll('.red-ui-flow-node-error')].filter((e) => !e.classList.contains('hide') && getComputedStyle(e).display !== 'none');
    if (triangles.length) bad.push(`${triangles.length} red triangle(s) drawn`);
    return bad;
  });
}

/** The notifications shown now, with their kind (warning, error, or plain). */
async function notifications(): Promise<string[]> {
  return page.$$eval('.red-ui-notification', (ns) => ns.filter((n) => (n as HTMLElement).offsetParent !== null).map((n) => `${n.className}: ${n.textContent?.trim()}`));
}

/** Open the edit dialog of the flow's node of `type`; each input of the form shown, with its value and whether it is red. */
async function editNode(type: string): Promise<{ id: string; value: string; error: boolean }[]> {
  await page.evaluate((t) => {
    const RED = (window as unknown as EdWindow).RED;
    let found: EdNode | undefined;
    RED.nodes.eachNode((n) => {
      if (n.type === t && !found) found = n;
    });
    RED.editor.edit(found!);
  }, type);
  await page.waitForSelector('#node-dialog-ok', { visible: true }).catch(async (err: unknown) => failure(`the edit dialog of ${type} did not open`, err));
  await new Promise((r) => setTimeout(r, 400));
  return page.$$eval('.red-ui-tray input[id^="node-input-"], .red-ui-tray select[id^="node-input-"]', (es) =>
    es.filter((e) => (e as HTMLElement).offsetParent !== null).map((e) => ({ id: e.id, value: (e as HTMLInputElement).value, error: e.classList.contains('input-error') })),
  );
}

/** From the open dispatcher dialog, the pencil beside its broker: set the DEFER broker node's fields, Update, Done. */
async function setBroker(fields: Record<string, string>): Promise<void> {
  await page.click('#node-input-btn-broker-edit');
  await page.waitForSelector('#node-config-dialog-ok', { visible: true });
  await new Promise((r) => setTimeout(r, 400));
  for (const [k, v] of Object.entries(fields)) {
    const sel = `#node-config-input-${k}`;
    if (await page.$eval(sel, (e) => e.tagName === 'SELECT')) await page.select(sel, v);
    else {
      await page.click(sel, { count: 3 });
      await page.$eval(sel, (e) => {
        (e as HTMLInputElement).value = '';
      });
      await page.type(sel, v);
    }
  }
  const red = await page.$$eval('.red-ui-tray input.input-error', (es) => es.filter((e) => (e as HTMLElement).offsetParent !== null).map((e) => e.id));
  assert.deepEqual(red, [], 'no field of the broker node is red');
  await page.click('#node-config-dialog-ok');
  await page.waitForSelector('#node-config-dialog-ok', { hidden: true });
  // Done, once the broker's tray has slid away (a click during the animation can miss: click again)
  for (let i = 0; i < 5 && (await page.$('#node-dialog-ok')) && (await page.$eval('#node-dialog-ok', (e) => (e as HTMLElement).offsetParent !== null).catch(() => false)); i++) {
    await new Promise((r) => setTimeout(r, 500));
    await page.click('#node-dialog-ok').catch(() => undefined);
  }
  await page.waitForSelector('#node-dialog-ok', { hidden: true, timeout: 5000 }).catch(async (err: unknown) => failure('the edit dialog did not close', err));
}

/** Click Deploy; the time of the click. Fails on the editor's "not properly configured" (or any other) confirmation. */
async function deploy(): Promise<number> {
  await page.evaluate(() => (window as unknown as EdWindow).RED.sidebar.show('debug'));
  await page.$$eval('.red-ui-debug-msg', (ms) => {
    for (const m of ms) m.remove();
  });
  const t0 = performance.now();
  await page.click('#red-ui-header-button-deploy');
  await page.waitForFunction(() => [...document.querySelectorAll('.red-ui-notification')].some((n) => /Successfully deployed|not properly configured|unknown|Cancel/.test(n.textContent ?? '')), {
    timeout: 60_000,
  });
  const shown = await notifications();
  assert.ok(
    shown.some((n) => /Successfully deployed/.test(n)),
    `deployed without a confirmation dialog: ${shown.join(' | ')}`,
  );
  assert.ok(!shown.some((n) => /not properly configured|unknown/.test(n)), shown.join(' | '));
  return t0;
}

interface DebugEntry {
  name: string;
  text: string;
  error: boolean;
}
async function debugEntries(): Promise<DebugEntry[]> {
  return page.$$eval('.red-ui-debug-msg', (ms) =>
    ms.map((m) => ({
      name: m.querySelector('.red-ui-debug-msg-name')?.textContent?.trim() ?? '',
      text: m.querySelector('.red-ui-debug-msg-payload')?.textContent?.trim() ?? '',
      error: m.classList.contains('red-ui-debug-msg-level-20'),
    })),
  );
}

/** The first prediction in the debug sidebar: how long after `t0` it came, and its text (the top-k with labels). */
async function firstPrediction(t0: number, timeoutMs = 60_000): Promise<{ ms: number; text: string }> {
  await page
    .waitForFunction(
      () =>
        [...document.querySelectorAll('.red-ui-debug-msg')].some(
          (m) => /prediction$/.test(m.querySelector('.red-ui-debug-msg-name')?.textContent?.trim() ?? '') && /label: "[^"]+"/.test(m.querySelector('.red-ui-debug-msg-payload')?.textContent ?? ''),
        ),
      { timeout: timeoutMs, polling: 50 },
    )
    .catch(async (err: unknown) => {
      throw new Error(`no prediction in the debug sidebar (${String(err)}); it shows: ${JSON.stringify(await debugEntries())}\nNode-RED's log:\n${red!.log().slice(-3000)}`);
    });
  const ms = performance.now() - t0;
  const entry = (await debugEntries()).find((e) => /prediction$/.test(e.name))!;
  return { ms, text: entry.text };
}

/** The status text under each node of `type` now. */
async function statuses(type: string): Promise<string[]> {
  return page.evaluate((t) => {
    const out: string[] = [];
    (window as unknown as EdWindow).RED.nodes.eachNode((n) => {
      if (n.type === t) out.push(String((n.status as { text?: string } | undefined)?.text ?? ''));
    });
    return out;
  }, type);
}

/** Put `flowId`'s tab in front (an imported example opens in its own tab). */
async function showTab(flowId: string): Promise<void> {
  await page.evaluate((id) => (window as unknown as EdWindow).RED.workspaces.show(id), flowId);
  await new Promise((r) => setTimeout(r, 300));
}

const tabOf = (name: string) => (name === EMBEDDED ? 'd3f3a0000000001' : 'd3f3b0000000001');

/** The tip in the flow's comment: mosquitto_pub a photo, mosquitto_sub the prediction. Its JSON. */
async function tipRoundTrip(port: number): Promise<{ label: string; score: number; topk: { label: string; index: number; score: number }[] }> {
  const photo = join(red!.userDir, 'photo.jpg');
  await sharp({ create: { width: 64, height: 48, channels: 3, background: { r: 200, g: 100, b: 50 } } })
    .jpeg()
    .toFile(photo);
  let out = '';
  const sub = spawn('/usr/bin/mosquitto_sub', ['-h', '127.0.0.1', '-p', String(port), '-t', 'cameras/+/prediction', '-C', '1', '-W', '60', '-v'], { stdio: ['ignore', 'pipe', 'inherit'] });
  sub.stdout!.on('data', (d) => (out += d));
  const done = new Promise<number | null>((r) => sub.once('exit', (code) => r(code)));
  await new Promise((r) => setTimeout(r, 500)); // mosquitto_sub subscribed
  await promisify(execFile)('/usr/bin/mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '-t', 'cameras/cam1/image', '-f', photo]);
  assert.equal(await done, 0, `mosquitto_sub got a prediction: ${out}`);
  const [topic, ...json] = out.trim().split(' ');
  assert.equal(topic, 'cameras/cam1/prediction');
  return JSON.parse(json.join(' '));
}

test('the examples are those the editor lists', { skip: missing }, async () => {
  await freshEditor();
  assert.deepEqual(EXAMPLES, [EMBEDDED, EXISTING].sort());
  // the palette: DEFER after "network" (not at the bottom); no palette name of a core node
  const cats = await page.$$eval('#red-ui-palette-container .red-ui-palette-category', (cs) =>
    cs.filter((c) => (c as HTMLElement).offsetParent !== null).map((c) => c.id.replace('red-ui-palette-container-', '')),
  );
  assert.equal(cats[cats.indexOf('network') + 1], 'DEFER', `palette categories: ${cats.join(', ')}`);
  const labels = await page.$$eval('#red-ui-palette-container-DEFER .red-ui-palette-label', (ls) => ls.map((l) => l.textContent?.replace(/\s+/g, ' ').trim()));
  assert.deepEqual(labels.sort(), ['DEFER dispatcher', 'DEFER edge node', 'DEFER status']);
  if (SHOTS) {
    // the palette scrolled down to DEFER, under "network" (the MQTT nodes)
    await page.$eval('#red-ui-palette-container-DEFER', (e) => e.scrollIntoView({ block: 'end' }));
    await page.screenshot({ path: join(SHOTS, 'node-red-palette.png'), clip: { x: 0, y: 40, width: 400, height: 700 } });
  }
});

test('each example through Import > Examples: no warning, no red triangle, the dispatcher dialog filled; Deploy with no dialog; a labelled prediction in the debug sidebar within 5 s; the tip works', {
  timeout: 600_000,
  skip: missing,
}, async () => {
  const mosquitto = await startMosquitto();
  try {
    for (const name of [EMBEDDED, EXISTING]) {
      await freshEditor();
      await importExample(name);
      await showTab(tabOf(name));
      assert.deepEqual(await invalidNodes(), [], `${name}: every node valid after the import`);
      const shown = await notifications();
      assert.ok(!shown.some((n) => /warning|error/.test(n.split(':')[0]) || /not properly configured|unrecognised|unknown/i.test(n)), `${name}: no warning on import: ${shown.join(' | ')}`);
      const fields = await editNode('defer-dispatcher');
      assert.deepEqual(
        fields.filter((f) => f.error),
        [],
        `${name}: no red field in the dispatcher's dialog`,
      );
      const byId = Object.fromEntries(fields.map((f) => [f.id, f.value]));
      assert.deepEqual([byId['node-input-workers'], byId['node-input-batch'], byId['node-input-topic'], byId['node-input-replyTopic']], ['1', '1', 'cameras/+/image', 'cameras/+/prediction']);
      if (SHOTS && name === EMBEDDED) await page.screenshot({ path: join(SHOTS, 'node-red-dispatcher-dialog.png') });
      // never port 1883 itself: the embedded broker on a free port; the existing-broker example on our Mosquitto
      const port = name === EMBEDDED ? await freePort() : mosquitto.port;
      await setBroker(name === EMBEDDED ? { port: String(port) } : { url: `mqtt://127.0.0.1:${port}` });
      assert.deepEqual(await invalidNodes(), [], `${name}: still valid after the edit`);
      const t0 = await deploy();
      const first = await firstPrediction(t0);
      process.stderr.write(`${name}: the first prediction in the debug sidebar ${first.ms.toFixed(0)} ms after the Deploy click\n`);
      assert.match(first.text, /^\{ label: "[^"]+", score: [\d.e-]+, topk: array\[3\]/);
      assert.ok(first.ms <= 5000, `${name}: a result in the debug sidebar within 5 s of deploy, not ${first.ms.toFixed(0)} ms`);
      // the tip in the flow: a photo with mosquitto_pub, its prediction (labelled) with mosquitto_sub
      const p = await tipRoundTrip(port);
      assert.equal(typeof p.label, 'string');
      assert.equal(p.topk.length, 3);
      assert.equal(p.topk[0].label, p.label);
      assert.ok(p.topk.every((k) => typeof k.label === 'string' && Number.isInteger(k.index) && typeof k.score === 'number'));
      // the edge nodes count what they served (the sample frame and the photo went through both)
      await page
        .waitForFunction(
          () => {
            const out: string[] = [];
            (window as unknown as EdWindow).RED.nodes.eachNode((n) => {
              if (n.type === 'defer-edge-node') out.push(String((n.status as { text?: string } | undefined)?.text ?? ''));
            });
            return out.length === 2 && out.every((t) => /^n\d: stage \d of 2, [2-9]\d* frames served/.test(t));
          },
          { timeout: 30_000 },
        )
        .catch(() => undefined);
      const served = await statuses('defer-edge-node');
      assert.deepEqual(
        served.map((s) => s.replace(/, [\d.]+\/s$/, '')),
        ['n1: stage 1 of 2, 2 frames served', 'n2: stage 2 of 2, 2 frames served'],
      );
      if (SHOTS) await page.screenshot({ path: join(SHOTS, name === EMBEDDED ? 'node-red-example.png' : 'node-red-existing-broker.png') });
    }
  } finally {
    await mosquitto.stop();
  }
  assert.deepEqual(pageErrors, [], 'no error in the page');
});

test("port 1883 taken by a Mosquitto: every DEFER node says so in a short, whole status, a frame's error is one line; then, as the docs say, the broker node set to external on that Mosquitto: a prediction within 5 s of deploy", {
  timeout: 600_000,
  skip: missing,
}, async () => {
  const mosquitto = await startMosquitto(); // stands for the Mosquitto on 1883 of most Node-RED hosts
  try {
    await freshEditor();
    await importExample(EMBEDDED);
    await showTab(tabOf(EMBEDDED));
    await editNode('defer-dispatcher');
    await setBroker({ port: String(mosquitto.port) }); // the embedded broker on the port Mosquitto holds, as 1883 is held
    await deploy();
    const want = `port ${mosquitto.port} in use: set the DEFER broker to external`;
    await page.waitForFunction(
      (w) => {
        let n = 0;
        let ok = 0;
        (window as unknown as EdWindow).RED.nodes.eachNode((x) => {
          if (!String(x.type).startsWith('defer-')) return;
          n++;
          if ((x.status as { text?: string } | undefined)?.text === w) ok++;
        });
        return n === 4 && ok === 4;
      },
      { timeout: 60_000 },
      want,
    );
    for (const t of ['defer-dispatcher', 'defer-edge-node', 'defer-status']) for (const s of await statuses(t)) assert.equal(s, want, `${t}: '${s}'`);
    assert.ok(want.length <= 60 && !want.includes('…'));
    // the sample frame's error in the debug sidebar: one line, no stack; and the broker node's advice, once
    await page.waitForFunction(() => [...document.querySelectorAll('.red-ui-debug-msg-level-20')].length >= 2, { timeout: 30_000 }).catch(() => undefined);
    const errors = (await debugEntries()).filter((e) => e.error);
    const frameError = errors.find((e) => /d3f3a0000000005$/.test(e.name) && /^"not started: port \d+ in use: set the DEFER broker to external"$/.test(e.text));
    assert.ok(frameError, `the sample frame's error: ${JSON.stringify(errors)}`);
    assert.ok(!/\n|\bat \S+:\d+/.test(frameError.text), `no stack: ${frameError.text}`);
    // the broker node's advice, once, what to do first (the sidebar shows a long message's start)
    assert.equal(errors.length, 2, `two errors in the sidebar, the advice and the frame's: ${JSON.stringify(errors)}`);
    const advice = errors.filter((e) => /DEFER embedded broker$/.test(e.name) && /^"127\.0\.0\.1:\d+ is taken: set Broker to "external", URL mqtt:\/\/127\.0\.0\.1:\d+/.test(e.text));
    assert.equal(advice.length, 1, `the broker node's advice, once: ${JSON.stringify(errors)}`);
    assert.equal(red!.log().split('is taken: set Broker to "external"').length - 1, 1, `the advice once in the log:\n${red!.log().slice(-2500)}`);
    await showTab(tabOf(EMBEDDED));
    if (SHOTS) await page.screenshot({ path: join(SHOTS, 'node-red-port-taken.png') });
    // the docs' advice: open the DEFER broker node, Broker external, URL mqtt://127.0.0.1:<the port>, deploy
    await editNode('defer-dispatcher');
    await setBroker({ mode: 'external', url: `mqtt://127.0.0.1:${mosquitto.port}` });
    assert.deepEqual(await invalidNodes(), []);
    const t0 = await deploy();
    const first = await firstPrediction(t0);
    process.stderr.write(`port taken, broker node set to external: the first prediction ${first.ms.toFixed(0)} ms after the Deploy click\n`);
    assert.ok(first.ms <= 5000, `a result within 5 s of deploy, not ${first.ms.toFixed(0)} ms`);
    const p = await tipRoundTrip(mosquitto.port);
    assert.equal(p.topk[0].label, p.label);
    if (SHOTS) await page.screenshot({ path: join(SHOTS, 'node-red-port-taken-fixed.png') });
  } finally {
    await mosquitto.stop();
  }
});
