// The live page: draws the chain from the dispatcher's /events stream (server-sent events, one JSON
// snapshot per message). Plain DOM, no dependencies; text is set with textContent only.
'use strict';

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
};
const fmt = (x, digits = 1) => (x === null || x === undefined ? '-' : Number(x).toFixed(digits));
const mb = (b) => (b === null || b === undefined ? '-' : `${(b / 1e6).toFixed(1)} MB`);
const kb = (b) => (b >= 1e6 ? `${(b / 1e6).toFixed(2)} MB` : `${(b / 1e3).toFixed(1)} KB`);

function box(title, role, rows, attrs = {}) {
  const dl = el('dl');
  for (const [k, v] of rows) dl.append(el('dt', {}, k), el('dd', {}, v));
  return el('div', { class: 'box', ...attrs }, el('h3', {}, title), el('div', { class: 'role' }, role), dl);
}

function nodeBox(n) {
  const b = box(n.node, n.stage === null ? 'standby' : `stage ${n.stage + 1}`, [
    ['state', n.state],
    ['frames/s', fmt(n.fps)],
    ['ms/frame', fmt(n.msPerFrame)],
    ['queue', n.queue ?? '-'],
    ['memory', mb(n.rssBytes)],
  ], { class: 'box node', 'data-node': n.node, 'data-state': n.state });
  b.querySelector('dd').classList.add('state');
  return b;
}

function link(l) {
  return el('div', { class: 'link', 'data-from': l.from, 'data-to': l.to }, l.bytesPerFrame ? `${kb(l.bytesPerFrame)}/frame` : '');
}

function draw(s) {
  $('pipeline').textContent = s.pipeline;
  $('state').textContent = s.state;
  $('state').dataset.state = s.state;
  $('deployment').textContent = s.deployment ?? '-';
  $('throughput').textContent = fmt(s.throughputFps);
  $('frames').textContent = s.frames;
  $('failed').textContent = s.failedFrames;

  const chain = $('chain');
  const served = s.devices.reduce((t, d) => t + d.served, 0);
  const parts = [box('devices', 'frames in, results out', [['devices', s.devices.length], ['served', served]], { class: 'box devices' })];
  parts.push(el('div', { class: 'link' }, ''));
  parts.push(box('dispatcher', 'sends frames, reads results', [['frames', s.frames], ['failed', s.failedFrames]], { class: 'box dispatcher' }));
  s.chain.forEach((n, k) => {
    parts.push(link(s.links[k] ?? { from: '', to: n.node, bytesPerFrame: 0 }));
    parts.push(nodeBox(n));
  });
  if (s.links.length) parts.push(link(s.links[s.links.length - 1]), box('results', 'to the devices', [['frames/s', fmt(s.throughputFps)]], { class: 'box results' }));
  chain.replaceChildren(...parts);

  $('standbys-title').hidden = s.standbys.length === 0;
  $('standbys').replaceChildren(...s.standbys.map(nodeBox));

  $('devices-section').hidden = s.devices.length === 0;
  $('devices').tBodies[0].replaceChildren(
    ...s.devices.map((d) => el('tr', {}, ...[d.device, d.received, d.served, d.dropped, d.rejected, d.bad, d.failed, d.waiting].map((v) => el('td', {}, String(v))))),
  );
  $('events').replaceChildren(...[...s.events].reverse().map((e) => el('li', { 'data-type': e.type }, el('time', {}, new Date(e.at).toLocaleTimeString()), e.text)));
}

function connect() {
  const source = new EventSource('events');
  source.onmessage = (m) => draw(JSON.parse(m.data));
  source.onerror = () => {
    $('state').textContent = 'disconnected';
    $('state').dataset.state = 'broken';
  };
}

connect();
