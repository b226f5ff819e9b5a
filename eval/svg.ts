/**
 * Tiny dependency-free SVG charts for docs/img/: a line chart (series of
 * points with markers) and a grouped bar chart, both with axes, ticks, axis
 * labels and a legend. Output is deterministic text (fixed decimals), so a
 * rerun with the same numbers produces the same file.
 */

/** One line of a line chart. */
export interface Series {
  name: string;
  /** [x, y] pairs; a null y leaves a gap. */
  points: readonly (readonly [number, number | null])[];
  dashed?: boolean;
}

/** Shared chart options. */
interface ChartBase {
  title: string;
  yLabel: string;
  width?: number;
  height?: number;
  /** Y axis range; default: from the data, widened to nice ticks. */
  yMin?: number;
  yMax?: number;
  /** Tick label format (default: up to 3 significant digits). */
  yFormat?: (v: number) => string;
  /** Horizontal reference lines (e.g. chance level), drawn dotted and labelled. */
  refLines?: readonly { y: number; label: string }[];
}

/** Line chart options. */
export interface LineChartOptions extends ChartBase {
  xLabel: string;
  series: readonly Series[];
  /** X tick positions; default: every distinct x in the data. */
  xTicks?: readonly number[];
  xFormat?: (v: number) => string;
  /** Logarithmic x axis (all x must be > 0). */
  xLog?: boolean;
}

/** Grouped bar chart options: one group of bars per category, one bar per series. */
export interface BarChartOptions extends ChartBase {
  categories: readonly string[];
  /** values[i] belongs to categories[i]; null draws no bar. */
  series: readonly { name: string; values: readonly (number | null)[] }[];
}

/** Colour-blind-safe palette (Okabe–Ito), then greys. */
const COLORS = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#777777', '#AAAAAA'];
const MARKERS = ['circle', 'square', 'triangle', 'diamond', 'cross'] as const;
const FONT = 'font-family="Helvetica, Arial, sans-serif"';

/** Escapes text for SVG element content and attributes. */
export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const n2 = (v: number): string => (Math.round(v * 100) / 100).toString();

/** Default tick label: integers as is, else 3 significant digits without trailing zeros. */
export function fmtTick(v: number): string {
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(3)));
}

/** About `count` evenly spaced round ticks covering [min, max]. */
export function niceTicks(min: number, max: number, count = 5): number[] {
  if (!(max > min)) { max = min + 1; }
  const raw = (max - min) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const lo = Math.floor(min / step + 1e-9) * step;
  const hi = Math.ceil(max / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let v = lo; v <= hi + step * 1e-6; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function marker(kind: (typeof MARKERS)[number], x: number, y: number, color: string): string {
  const r = 4;
  switch (kind) {
    case 'circle': return `<circle cx="${n2(x)}" cy="${n2(y)}" r="${r}" fill="${color}"/>`;
    case 'square': return `<rect x="${n2(x - r)}" y="${n2(y - r)}" width="${2 * r}" height="${2 * r}" fill="${color}"/>`;
    case 'triangle': return `<path d="M${n2(x)},${n2(y - r - 1)}L${n2(x + r + 1)},${n2(y + r)}L${n2(x - r - 1)},${n2(y + r)}Z" fill="${color}"/>`;
    case 'diamond': return `<path d="M${n2(x)},${n2(y - r - 1)}L${n2(x + r + 1)},${n2(y)}L${n2(x)},${n2(y + r + 1)}L${n2(x - r - 1)},${n2(y)}Z" fill="${color}"/>`;
    case 'cross': return `<path d="M${n2(x - r)},${n2(y - r)}L${n2(x + r)},${n2(y + r)}M${n2(x + r)},${n2(y - r)}L${n2(x - r)},${n2(y + r)}" stroke="${color}" stroke-width="2"/>`;
  }
}

interface Frame {
  w: number; h: number; left: number; right: number; top: number; bottom: number;
  yTicks: number[]; y: (v: number) => number; yFmt: (v: number) => string;
}

function frame(o: ChartBase, values: number[], legendNames: readonly string[], bottom = 56): Frame {
  const w = o.width ?? 720;
  const h = (o.height ?? 400) + bottom - 56;
  const longest = Math.max(0, ...legendNames.map((s) => s.length));
  const right = Math.min(260, 40 + longest * 7);
  const finite = values.filter((v) => Number.isFinite(v));
  const dataMin = Math.min(...finite, ...(o.refLines ?? []).map((r) => r.y));
  const dataMax = Math.max(...finite, ...(o.refLines ?? []).map((r) => r.y));
  const yTicks = niceTicks(o.yMin ?? (Number.isFinite(dataMin) ? dataMin : 0), o.yMax ?? (Number.isFinite(dataMax) ? dataMax : 1));
  const lo = o.yMin ?? yTicks[0];
  const hi = o.yMax ?? yTicks[yTicks.length - 1];
  const top = 40, left = 64;
  const y = (v: number): number => top + (h - top - bottom) * (1 - (Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo || 1));
  return { w, h, left, right, top, bottom, yTicks: yTicks.filter((t) => t >= lo - 1e-9 && t <= hi + 1e-9), y, yFmt: o.yFormat ?? fmtTick };
}

function axes(f: Frame, o: ChartBase, xLabel: string): string[] {
  const out: string[] = [];
  const x0 = f.left, x1 = f.w - f.right, yb = f.h - f.bottom;
  out.push(`<text x="${n2(f.w / 2)}" y="22" text-anchor="middle" font-size="16" font-weight="bold" ${FONT}>${esc(o.title)}</text>`);
  for (const t of f.yTicks) {
    const y = f.y(t);
    out.push(`<line x1="${x0}" y1="${n2(y)}" x2="${x1}" y2="${n2(y)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${x0 - 6}" y="${n2(y + 4)}" text-anchor="end" font-size="12" ${FONT}>${esc(f.yFmt(t))}</text>`);
  }
  for (const r of o.refLines ?? []) {
    const y = f.y(r.y);
    out.push(`<line x1="${x0}" y1="${n2(y)}" x2="${x1}" y2="${n2(y)}" stroke="#555" stroke-dasharray="2,3"/>`);
    out.push(`<text x="${x1 + 4}" y="${n2(y + 4)}" font-size="11" fill="#555" ${FONT}>${esc(r.label)}</text>`);
  }
  out.push(`<line x1="${x0}" y1="${f.top}" x2="${x0}" y2="${yb}" stroke="#000"/>`);
  out.push(`<line x1="${x0}" y1="${yb}" x2="${x1}" y2="${yb}" stroke="#000"/>`);
  out.push(`<text x="${n2((x0 + x1) / 2)}" y="${f.h - 12}" text-anchor="middle" font-size="13" ${FONT}>${esc(xLabel)}</text>`);
  const my = (f.top + yb) / 2;
  out.push(`<text x="16" y="${n2(my)}" text-anchor="middle" font-size="13" transform="rotate(-90 16 ${n2(my)})" ${FONT}>${esc(o.yLabel)}</text>`);
  return out;
}

function legend(f: Frame, items: readonly { name: string; color: string; mark?: (typeof MARKERS)[number]; dashed?: boolean; bar?: boolean }[]): string[] {
  const out: string[] = [];
  const x = f.w - f.right + 16;
  items.forEach((it, i) => {
    const y = f.top + 8 + i * 20;
    if (it.bar) out.push(`<rect x="${x}" y="${y - 6}" width="18" height="12" fill="${it.color}"/>`);
    else {
      out.push(`<line x1="${x}" y1="${y}" x2="${x + 22}" y2="${y}" stroke="${it.color}" stroke-width="2"${it.dashed ? ' stroke-dasharray="6,4"' : ''}/>`);
      if (it.mark) out.push(marker(it.mark, x + 11, y, it.color));
    }
    out.push(`<text x="${x + 28}" y="${y + 4}" font-size="12" ${FONT}>${esc(it.name)}</text>`);
  });
  return out;
}

function wrap(f: Frame, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${f.w}" height="${f.h}" viewBox="0 0 ${f.w} ${f.h}">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}

/** A line chart with markers at every point. */
export function lineChart(o: LineChartOptions): string {
  const ys = o.series.flatMap((s) => s.points.map((p) => p[1]).filter((v): v is number => v !== null));
  const xs = o.series.flatMap((s) => s.points.map((p) => p[0]));
  if (o.xLog && xs.some((x) => !(x > 0))) throw new RangeError('lineChart: a log x axis needs every x > 0');
  const f = frame(o, ys, o.series.map((s) => s.name));
  const xTicks = [...(o.xTicks ?? [...new Set(xs)])].sort((a, b) => a - b);
  const tx = (v: number): number => (o.xLog ? Math.log10(v) : v);
  const xlo = Math.min(...xTicks.map(tx), ...xs.map(tx));
  const xhi = Math.max(...xTicks.map(tx), ...xs.map(tx));
  const pad = 16;
  const x = (v: number): number => f.left + pad + (f.w - f.right - f.left - 2 * pad) * ((tx(v) - xlo) / (xhi - xlo || 1));
  const body = axes(f, o, o.xLabel);
  const xFmt = o.xFormat ?? fmtTick;
  for (const t of xTicks) {
    const px = x(t);
    body.push(`<line x1="${n2(px)}" y1="${f.h - f.bottom}" x2="${n2(px)}" y2="${f.h - f.bottom + 5}" stroke="#000"/>`);
    body.push(`<text x="${n2(px)}" y="${f.h - f.bottom + 19}" text-anchor="middle" font-size="12" ${FONT}>${esc(xFmt(t))}</text>`);
  }
  o.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const mark = MARKERS[i % MARKERS.length];
    const pts = [...s.points].sort((a, b) => a[0] - b[0]);
    let d = '';
    let pen = false;
    for (const [px, py] of pts) {
      if (py === null || !Number.isFinite(py)) { pen = false; continue; }
      d += `${pen ? 'L' : 'M'}${n2(x(px))},${n2(f.y(py))}`;
      pen = true;
    }
    if (d) body.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6,4"' : ''}/>`);
    for (const [px, py] of pts) if (py !== null && Number.isFinite(py)) body.push(marker(mark, x(px), f.y(py), color));
  });
  body.push(...legend(f, o.series.map((s, i) => ({ name: s.name, color: COLORS[i % COLORS.length], mark: MARKERS[i % MARKERS.length], dashed: s.dashed }))));
  return wrap(f, body);
}

/** A grouped bar chart. */
export function barChart(o: BarChartOptions): string {
  const ys = o.series.flatMap((s) => s.values.filter((v): v is number => v !== null));
  // Long category names are drawn slanted, with room made below the axis.
  const width = o.width ?? 720;
  const approxGroup = (width - 64 - 200) / Math.max(1, o.categories.length);
  const longest = Math.max(0, ...o.categories.map((c) => c.length));
  const slant = longest * 6.5 > approxGroup;
  const f = frame({ ...o, yMin: o.yMin ?? Math.min(0, ...ys) }, ys, o.series.map((s) => s.name), slant ? 40 + Math.ceil(longest * 4.8) : 56);
  const body = axes(f, o, '');
  const inner = f.w - f.right - f.left;
  const groupW = inner / Math.max(1, o.categories.length);
  const barW = (groupW * 0.8) / Math.max(1, o.series.length);
  const base = f.y(Math.max(f.yTicks[0], 0));
  o.categories.forEach((c, ci) => {
    const gx = f.left + ci * groupW + groupW * 0.1;
    o.series.forEach((s, si) => {
      const v = s.values[ci];
      if (v === null || v === undefined || !Number.isFinite(v)) return;
      const y = f.y(v);
      body.push(`<rect x="${n2(gx + si * barW)}" y="${n2(Math.min(y, base))}" width="${n2(Math.max(1, barW - 1))}" height="${n2(Math.abs(base - y))}" fill="${COLORS[si % COLORS.length]}"/>`);
    });
    const cx = f.left + ci * groupW + groupW / 2;
    const ty = f.h - f.bottom + 16;
    body.push(slant
      ? `<text x="${n2(cx)}" y="${ty}" text-anchor="end" font-size="12" transform="rotate(-40 ${n2(cx)} ${ty})" ${FONT}>${esc(c)}</text>`
      : `<text x="${n2(cx)}" y="${ty + 2}" text-anchor="middle" font-size="12" ${FONT}>${esc(c)}</text>`);
  });
  body.push(...legend(f, o.series.map((s, i) => ({ name: s.name, color: COLORS[i % COLORS.length], bar: true }))));
  return wrap(f, body);
}
