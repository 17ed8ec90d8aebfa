/**
 * Hand-written SVG charts for the storm report (no chart library): a histogram, a line chart
 * and a bar chart. Each returns a complete, standalone SVG document.
 */

const WIDTH = 720;
const HEIGHT = 360;
const MARGIN = { top: 40, right: 24, bottom: 56, left: 64 };
const PLOT_W = WIDTH - MARGIN.left - MARGIN.right;
const PLOT_H = HEIGHT - MARGIN.top - MARGIN.bottom;
const FONT = 'font-family="system-ui, sans-serif"';

export function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** A "nice" axis maximum and tick step (1, 2 or 5 times a power of ten) covering `max`. */
export function niceScale(max: number, ticks = 5): { max: number; step: number } {
  if (!(max > 0)) return { max: 1, step: 0.2 };
  const raw = max / ticks;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw)!;
  return { max: Math.ceil(max / step) * step, step };
}

function fmt(value: number): string {
  if (value === 0) return '0';
  if (Math.abs(value) >= 1000) return `${Math.round(value)}`;
  if (Math.abs(value) >= 10) return `${Math.round(value * 10) / 10}`;
  return `${Math.round(value * 100) / 100}`;
}

function frame(title: string, body: string[], xLabel: string, yLabel: string): string {
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" role="img">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect x="0" y="0" width="${WIDTH}" height="${HEIGHT}" fill="#ffffff"/>`,
    `<text x="${WIDTH / 2}" y="24" text-anchor="middle" font-size="16" font-weight="600" ${FONT}>${escapeXml(title)}</text>`,
    ...body,
    `<text x="${MARGIN.left + PLOT_W / 2}" y="${HEIGHT - 12}" text-anchor="middle" font-size="12" ${FONT}>${escapeXml(xLabel)}</text>`,
    `<text x="16" y="${MARGIN.top + PLOT_H / 2}" text-anchor="middle" font-size="12" ${FONT} transform="rotate(-90 16 ${MARGIN.top + PLOT_H / 2})">${escapeXml(yLabel)}</text>`,
    `</svg>`,
    '',
  ].join('\n');
}

function yAxis(maxY: number, step: number): string[] {
  const out: string[] = [];
  for (let v = 0; v <= maxY + step / 2; v += step) {
    const y = MARGIN.top + PLOT_H - (v / maxY) * PLOT_H;
    out.push(`<line x1="${MARGIN.left}" y1="${y.toFixed(1)}" x2="${MARGIN.left + PLOT_W}" y2="${y.toFixed(1)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${MARGIN.left - 6}" y="${(y + 4).toFixed(1)}" text-anchor="end" font-size="11" ${FONT}>${fmt(v)}</text>`);
  }
  out.push(`<line x1="${MARGIN.left}" y1="${MARGIN.top}" x2="${MARGIN.left}" y2="${MARGIN.top + PLOT_H}" stroke="#333"/>`);
  out.push(`<line x1="${MARGIN.left}" y1="${MARGIN.top + PLOT_H}" x2="${MARGIN.left + PLOT_W}" y2="${MARGIN.top + PLOT_H}" stroke="#333"/>`);
  return out;
}

function noData(title: string, xLabel: string, yLabel: string): string {
  return frame(
    title,
    [
      ...yAxis(1, 0.2),
      `<text x="${MARGIN.left + PLOT_W / 2}" y="${MARGIN.top + PLOT_H / 2}" text-anchor="middle" font-size="14" fill="#888" ${FONT}>no data</text>`,
    ],
    xLabel,
    yLabel,
  );
}

/**
 * Histogram of `values` in `bins` equal-width bins from 0. When a long tail would squash the
 * chart (largest value over twice the 99th percentile), the bins cover 0..p99 and one last bar,
 * in orange, counts everything above.
 */
export function histogramSvg(title: string, values: readonly number[], xLabel: string, bins = 30): string {
  if (values.length === 0) return noData(title, xLabel, 'connections');
  const sorted = [...values].sort((a, b) => a - b);
  const max = sorted.at(-1)!;
  const p99 = sorted[Math.min(sorted.length - 1, Math.ceil(0.99 * sorted.length) - 1)]!;
  const tail = max > 2 * p99 && p99 > 0;
  const x = niceScale(tail ? p99 : max === 0 ? 1 : max, 6);
  const width = x.max / bins;
  const counts = new Array<number>(bins).fill(0);
  let over = 0;
  for (const v of sorted) {
    if (tail && v >= x.max) over += 1;
    else counts[Math.min(bins - 1, Math.max(0, Math.floor(v / width)))]! += 1;
  }
  const slots = tail ? bins + 3 : bins;
  const y = niceScale(Math.max(over, ...counts));
  const body = yAxis(y.max, y.step);
  const barW = PLOT_W / slots;
  const bar = (i: number, count: number, color: string, label: string) => {
    const h = (count / y.max) * PLOT_H;
    body.push(
      `<rect x="${(MARGIN.left + i * barW + 1).toFixed(1)}" y="${(MARGIN.top + PLOT_H - h).toFixed(1)}" width="${Math.max(1, barW - 2).toFixed(1)}" height="${h.toFixed(1)}" fill="${color}"><title>${escapeXml(label)}: ${count}</title></rect>`,
    );
  };
  counts.forEach((count, i) => {
    if (count > 0) bar(i, count, '#4477aa', `${fmt(i * width)}–${fmt((i + 1) * width)}`);
  });
  for (let v = 0; v <= x.max + x.step / 2; v += x.step) {
    const px = MARGIN.left + (v / x.max) * PLOT_W * (bins / slots);
    body.push(`<text x="${px.toFixed(1)}" y="${MARGIN.top + PLOT_H + 16}" text-anchor="middle" font-size="11" ${FONT}>${fmt(v)}</text>`);
  }
  if (tail) {
    bar(bins + 2, over, '#ee7733', `≥ ${fmt(x.max)} (max ${fmt(max)})`);
    body.push(
      `<text x="${(MARGIN.left + (bins + 2.5) * barW).toFixed(1)}" y="${MARGIN.top + PLOT_H + 16}" text-anchor="middle" font-size="11" ${FONT}>more</text>`,
    );
  }
  return frame(title, body, xLabel, 'connections');
}

export interface Series {
  name: string;
  color: string;
  points: readonly (readonly [number, number])[];
}

/** Line chart of one or more series over a shared numeric x axis, with a legend. */
export function lineChartSvg(title: string, series: readonly Series[], xLabel: string, yLabel: string): string {
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return noData(title, xLabel, yLabel);
  const xMaxRaw = Math.max(...all.map((p) => p[0]));
  const x = niceScale(xMaxRaw === 0 ? 1 : xMaxRaw, 8);
  const y = niceScale(Math.max(...all.map((p) => p[1])));
  const body = yAxis(y.max, y.step);
  const px = (v: number) => MARGIN.left + (v / x.max) * PLOT_W;
  const py = (v: number) => MARGIN.top + PLOT_H - (v / y.max) * PLOT_H;
  for (let v = 0; v <= x.max + x.step / 2; v += x.step) {
    body.push(`<text x="${px(v).toFixed(1)}" y="${MARGIN.top + PLOT_H + 16}" text-anchor="middle" font-size="11" ${FONT}>${fmt(v)}</text>`);
  }
  series.forEach((s, i) => {
    if (s.points.length > 0) {
      const d = s.points.map((p, j) => `${j === 0 ? 'M' : 'L'}${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(' ');
      body.push(`<path d="${d}" fill="none" stroke="${escapeXml(s.color)}" stroke-width="2"/>`);
      for (const p of s.points) {
        body.push(
          `<circle cx="${px(p[0]).toFixed(1)}" cy="${py(p[1]).toFixed(1)}" r="2.5" fill="${escapeXml(s.color)}"><title>${escapeXml(s.name)} at ${fmt(p[0])}: ${fmt(p[1])}</title></circle>`,
        );
      }
    }
    const lx = MARGIN.left + PLOT_W - (series.length - i) * 80;
    body.push(`<rect x="${lx}" y="${MARGIN.top + 6}" width="14" height="4" fill="${escapeXml(s.color)}"/>`);
    body.push(`<text x="${lx + 18}" y="${MARGIN.top + 12}" font-size="11" ${FONT}>${escapeXml(s.name)}</text>`);
  });
  return frame(title, body, xLabel, yLabel);
}

/** Vertical bar chart; bars for which `highlight(label)` is true are drawn in red. */
export function barChartSvg(
  title: string,
  entries: readonly (readonly [string, number])[],
  xLabel: string,
  yLabel: string,
  highlight: (label: string) => boolean = () => false,
): string {
  if (entries.length === 0) return noData(title, xLabel, yLabel);
  const y = niceScale(Math.max(...entries.map((e) => e[1])));
  const body = yAxis(y.max, y.step);
  const slot = PLOT_W / entries.length;
  const barW = Math.min(80, slot * 0.7);
  entries.forEach(([label, value], i) => {
    const h = (value / y.max) * PLOT_H;
    const cx = MARGIN.left + slot * i + slot / 2;
    const color = highlight(label) ? '#cc3311' : '#4477aa';
    body.push(
      `<rect x="${(cx - barW / 2).toFixed(1)}" y="${(MARGIN.top + PLOT_H - h).toFixed(1)}" width="${barW.toFixed(1)}" height="${h.toFixed(1)}" fill="${color}"><title>${escapeXml(label)}: ${value}</title></rect>`,
    );
    body.push(`<text x="${cx.toFixed(1)}" y="${(MARGIN.top + PLOT_H - h - 4).toFixed(1)}" text-anchor="middle" font-size="11" ${FONT}>${value}</text>`);
    body.push(`<text x="${cx.toFixed(1)}" y="${MARGIN.top + PLOT_H + 16}" text-anchor="middle" font-size="11" ${FONT}>${escapeXml(label)}</text>`);
  });
  return frame(title, body, xLabel, yLabel);
}
