/**
 * Charts as SVG, rendered to PNG by sharp (librsvg): no chart library, no
 * browser. One panel per model for throughput against nodes, and bars of
 * payload per codec.
 */
import sharp from 'sharp';
import type { CodecRow } from './codecs.js';
import type { PipelineRow } from './pipeline.js';

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const FONT = 'font-family="DejaVu Sans, Arial, sans-serif"';

function niceMax(x: number): number {
  const p = 10 ** Math.floor(Math.log10(x || 1));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

/** Throughput against nodes, a panel per model: the planned shape and the chain, single process, the chain's ideal bound. */
export function throughputSvg(rows: PipelineRow[], title: string): string {
  const models = [...new Set(rows.map((r) => r.model))];
  const pw = 330;
  const ph = 260;
  const m = { l: 50, r: 15, t: 40, b: 45 };
  const width = Math.max(models.length * pw + 20, 1100);
  const height = ph + 70;
  const panels = models.map((model, i) => {
    const all = rows.filter((r) => r.model === model).sort((a, b) => a.nodes - b.nodes);
    const rs = all.filter((r) => r.deployment === 'chain');
    const planned = all.filter((r) => r.deployment === 'planned');
    const x0 = 10 + i * pw;
    const w = pw - m.l - m.r;
    const h = ph - m.t - m.b;
    const maxN = Math.max(...all.map((r) => r.nodes));
    const maxY = niceMax(Math.max(...all.flatMap((r) => [r.throughputFps, r.singleProcessFps, r.idealFps])));
    const X = (n: number) => x0 + m.l + (maxN === 1 ? w / 2 : ((n - 1) / (maxN - 1)) * w);
    const Y = (v: number) => 30 + m.t + h - (v / maxY) * h;
    const line = (f: (r: PipelineRow) => number, style: string, colour: string, of: PipelineRow[] = rs) =>
      `<polyline fill="none" stroke="${colour}" stroke-width="2" ${style} points="${of.map((r) => `${X(r.nodes).toFixed(1)},${Y(f(r)).toFixed(1)}`).join(' ')}"/>` +
      of.map((r) => `<circle cx="${X(r.nodes).toFixed(1)}" cy="${Y(f(r)).toFixed(1)}" r="3" fill="${colour}"/>`).join('');
    const ticks = [0, 0.25, 0.5, 0.75, 1].map(
      (f) =>
        `<line x1="${x0 + m.l}" x2="${x0 + m.l + w}" y1="${Y(f * maxY)}" y2="${Y(f * maxY)}" stroke="#ddd"/><text x="${x0 + m.l - 6}" y="${Y(f * maxY) + 4}" text-anchor="end" font-size="11" ${FONT}>${+(f * maxY).toFixed(2)}</text>`,
    );
    const xt = [...new Map(all.map((r) => [r.nodes, r])).values()].map((r) => `<text x="${X(r.nodes)}" y="${30 + m.t + h + 16}" text-anchor="middle" font-size="11" ${FONT}>${r.nodes}</text>`);
    return [
      `<text x="${x0 + m.l + w / 2}" y="${30 + m.t - 14}" text-anchor="middle" font-size="14" font-weight="bold" ${FONT}>${esc(model)}</text>`,
      ...ticks,
      ...xt,
      `<text x="${x0 + m.l + w / 2}" y="${30 + m.t + h + 34}" text-anchor="middle" font-size="11" ${FONT}>node processes</text>`,
      `<text transform="translate(${x0 + 12},${30 + m.t + h / 2}) rotate(-90)" text-anchor="middle" font-size="11" ${FONT}>frames/s</text>`,
      line((r) => r.idealFps, 'stroke-dasharray="2,3"', '#7a7a7a'),
      line((r) => r.singleProcessFps, 'stroke-dasharray="6,4"', '#c0392b'),
      line((r) => r.throughputFps, '', '#2471a3'),
      planned.length ? line((r) => r.throughputFps, '', '#1e8449', planned) : '',
    ].join('\n');
  });
  const legend = [
    ['#1e8449', '', 'planned shape (replicas, workers)'],
    ['#2471a3', '', 'chain (one node per stage)'],
    ['#c0392b', 'stroke-dasharray="6,4"', 'single process (same run)'],
    ['#7a7a7a', 'stroke-dasharray="2,3"', 'ideal chain: single ms / slowest stage ms'],
  ]
    .map(
      ([c, st, label], i) =>
        `<line x1="${20 + i * 262}" x2="${50 + i * 262}" y1="${height - 12}" y2="${height - 12}" stroke="${c}" stroke-width="2" ${st}/><text x="${56 + i * 262}" y="${height - 8}" font-size="12" ${FONT}>${esc(label)}</text>`,
    )
    .join('');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}"><rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="15" font-weight="bold" ${FONT}>${esc(title)}</text>${panels.join('\n')}${legend}</svg>`;
}

/** Bytes on the wire per codec for one activation, with how many times smaller than JSON. */
export function payloadSvg(rows: CodecRow[], title: string): string {
  const bar = 26;
  const gap = 10;
  const left = 230;
  const w = 430;
  const height = 50 + rows.length * (bar + gap) + 10;
  const max = Math.max(...rows.map((r) => r.bytes));
  const bars = rows.map((r, i) => {
    const y = 40 + i * (bar + gap);
    const len = (r.bytes / max) * w;
    return `<text x="${left - 8}" y="${y + bar / 2 + 4}" text-anchor="end" font-size="12" ${FONT}>${esc(r.codec)}</text><rect x="${left}" y="${y}" width="${len.toFixed(1)}" height="${bar}" fill="${r.lossy ? '#d68910' : '#2471a3'}"/><text x="${left + len + 6}" y="${y + bar / 2 + 4}" font-size="12" ${FONT}>${(r.bytes / 1e6).toFixed(2)} MB, ${r.vsJson}x smaller than JSON</text>`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${left + w + 260}" height="${height}"><rect width="100%" height="100%" fill="white"/><text x="10" y="22" font-size="15" font-weight="bold" ${FONT}>${esc(title)}</text>${bars.join('\n')}</svg>`;
}

export async function writePng(svg: string, file: string): Promise<void> {
  await sharp(Buffer.from(svg)).png().toFile(file);
}
