// One picture of a failover: throughput over time, the events (failure,
// detection, recovery steps, resumption) as labelled markers, the stall and
// the recovery steps as shaded spans, and — because a takeover of ~100 ms is
// invisible at a 20 s scale — a second panel that magnifies the few hundred
// milliseconds around the failure. A pure function from data to a
// self-contained SVG 1.1 document (no fonts, scripts or links to fetch);
// `writeTimelineSvg` is the only I/O.
//
// Times are milliseconds on any one clock (all inputs on the same clock). The
// main panel's axis shows seconds after the first throughput point, the zoom
// panel's axis milliseconds after the failure. Byte units are the project's:
// 1 kB = 1024 B, 1 MB = 1024 kB.
import fs from 'node:fs';

export interface ThroughputSeries { label: string; points: Array<{ tMs: number; bytesPerS: number }> }
export interface TimelineEvent { tMs: number; label: string; kind: 'failure' | 'detection' | 'step' | 'resumed' | 'info' }
export interface TimelineSpan { fromMs: number; toMs: number; label: string }
export interface TimelineInput { title: string; subtitle?: string; series: ThroughputSeries[]; events: TimelineEvent[]; spans?: TimelineSpan[]; footer?: string[] }
export interface TimelineOptions {
  /** Default 1000, at least 480. */
  width?: number;
  /** Default 600, at least 320; made taller if the labels and span bars leave the plots less than 70 px each. */
  height?: number;
  /** The zoom panel's window (absolute ms); `false`: no zoom panel. Default: around the first 'failure' event. */
  zoom?: { fromMs: number; toMs: number } | false;
}

// ---------------------------------------------------------------- style
const FONT = 'Segoe UI, Helvetica Neue, Helvetica, Arial, DejaVu Sans, sans-serif';
/** Average glyph width / font size, generous (DejaVu Sans is wide), so estimated labels never collide. */
const CHAR_W = 0.6;
/** Okabe–Ito, distinguishable with every common colour-vision deficiency. Vermillion and green are kept for events. */
const SERIES_COLOURS = ['#0072B2', '#E69F00', '#CC79A7', '#56B4E9', '#000000', '#B59A00'];
const EVENT_STYLE: Record<TimelineEvent['kind'], { line: string; text: string; width: number; dash?: string }> = {
  failure: { line: '#D55E00', text: '#A94400', width: 2 },
  detection: { line: '#333333', text: '#222222', width: 1.4, dash: '5 3' },
  step: { line: '#7A7A7A', text: '#444444', width: 1.2, dash: '2 3' },
  resumed: { line: '#009E73', text: '#00704F', width: 2 },
  info: { line: '#9A9A9A', text: '#555555', width: 1, dash: '6 4' },
};
/** Span tints: the stall in vermillion, the others cycling through light blue, green, purple, orange. */
const STALL_TINT = { fill: '#F6CDB4', stroke: '#D55E00', text: '#7A2F00' };
const SPAN_TINTS = [
  { fill: '#CFE3F1', stroke: '#0072B2', text: '#00406A' },
  { fill: '#CBEBDF', stroke: '#009E73', text: '#005A41' },
  { fill: '#F0D6E5', stroke: '#CC79A7', text: '#6E2F55' },
  { fill: '#F8E6BD', stroke: '#E69F00', text: '#6B4A00' },
];
const STALL_RE = /stall|outage|downtime|unavailab|blackout|no service/i;
const INK = '#222222';
const MUTED = '#666666';
const GRID = '#E6E6E6';
const AXIS = '#9A9A9A';

// ---------------------------------------------------------------- text
/** XML-safe text: the five special characters escaped, characters XML 1.0 forbids dropped, lone surrogates replaced. */
export function escapeXml(s: string): string {
  return s
    .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/g, '')
    .replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD')
    .replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);
}

function oneLine(s: string): string {
  return String(s).replace(/\s+/g, ' ').trim();
}

/** At most `max` characters (code points), the cut marked with an ellipsis. */
export function truncate(s: string, max: number): string {
  const cps = Array.from(oneLine(s));
  if (cps.length <= max) return cps.join('');
  if (max <= 1) return '…';
  return cps.slice(0, max - 1).join('').trimEnd() + '…';
}

function textWidth(s: string, size: number): number {
  return Array.from(s).length * size * CHAR_W;
}

function fitWidth(s: string, px: number, size: number): string {
  return truncate(s, Math.max(1, Math.floor(px / (size * CHAR_W))));
}

// ---------------------------------------------------------------- numbers
const f = (n: number): string => String(Math.round(n * 10) / 10);

function niceStep(span: number, count: number): number {
  const raw = span / Math.max(1, count);
  if (!(raw > 0) || !Number.isFinite(raw)) return 1;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const n = raw / mag;
  return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10) * mag;
}

function decimals(step: number): number {
  for (let d = 0; d < 6; d++) {
    const v = step * 10 ** d;
    if (Math.abs(Math.round(v) - v) < 1e-6 * Math.max(1, v)) return d;
  }
  return 6;
}

/** Tidy tick values in [lo, hi] about `count` apart. */
export function niceTicks(lo: number, hi: number, count: number): { step: number; values: number[] } {
  const step = niceStep(hi - lo, count);
  const values: number[] = [];
  for (let i = Math.ceil(lo / step - 1e-9); i <= Math.floor(hi / step + 1e-9); i++) values.push(Number((i * step).toFixed(10)));
  return { step, values };
}

function fmt(v: number, step: number): string {
  const s = v.toFixed(decimals(step));
  return s === '-0' || /^-0\.0*$/.test(s) ? s.slice(1) : s;
}

function fmtMs(ms: number): string {
  if (ms >= 10_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

interface Unit { name: string; div: number }
const UNITS: Unit[] = [
  { name: 'B/s', div: 1 },
  { name: 'kB/s', div: 1024 },
  { name: 'MB/s', div: 1024 ** 2 },
  { name: 'GB/s', div: 1024 ** 3 },
];

/** The unit in which `max` reads as 1 to 1023, its tidy axis top and ticks. */
function yScale(max: number): { unit: Unit; top: number; ticks: number[]; step: number } {
  let unit = UNITS[1]!;
  if (max > 0) for (const u of UNITS) if (max >= u.div * 0.95) unit = u;
  const m = (max / unit.div) * 1.02; // a little headroom: the peak does not sit on the frame
  if (!(m > 0)) return { unit, top: 1, ticks: [0, 0.5, 1], step: 0.5 };
  const step = niceStep(m, 4);
  const top = Math.ceil(m / step - 1e-9) * step;
  return { unit, top, step, ticks: niceTicks(0, top, top / step).values };
}

// ---------------------------------------------------------------- data
interface Pt { t: number; v: number }
interface Series { label: string; colour: string; pts: Pt[] }

function cleanSeries(input: TimelineInput): Series[] {
  return (input.series ?? []).map((s, i) => ({
    label: oneLine(s.label ?? ''),
    colour: SERIES_COLOURS[i % SERIES_COLOURS.length]!,
    pts: (s.points ?? [])
      .filter((p) => Number.isFinite(p.tMs) && Number.isFinite(p.bytesPerS))
      .map((p) => ({ t: p.tMs, v: Math.max(0, p.bytesPerS) }))
      .sort((a, b) => a.t - b.t),
  }));
}

function cleanEvents(input: TimelineInput): TimelineEvent[] {
  return (input.events ?? []).filter((e) => Number.isFinite(e.tMs)).map((e) => ({ ...e, kind: EVENT_STYLE[e.kind] ? e.kind : 'info' })).sort((a, b) => a.tMs - b.tMs);
}

function cleanSpans(input: TimelineInput): TimelineSpan[] {
  return (input.spans ?? [])
    .filter((s) => Number.isFinite(s.fromMs) && Number.isFinite(s.toMs))
    .map((s) => ({ ...s, fromMs: Math.min(s.fromMs, s.toMs), toMs: Math.max(s.fromMs, s.toMs) }))
    .sort((a, b) => a.fromMs - b.fromMs || b.toMs - a.toMs);
}

/**
 * The zoom panel's window (absolute ms) by default: from a little before the
 * first 'failure' event to a little after the last detection/step/resumed
 * event within 5 s after it, and the spans that lie within 0.5 s before and
 * 5 s after it; null without a failure event.
 */
export function zoomWindow(input: TimelineInput): { fromMs: number; toMs: number; failureMs: number } | null {
  const events = cleanEvents(input);
  const failure = events.find((e) => e.kind === 'failure');
  if (!failure) return null;
  const t = failure.tMs;
  const horizon = t + 5000;
  let lo = t;
  let hi = t;
  for (const e of events) if (e.kind !== 'info' && e.tMs >= t && e.tMs <= horizon) hi = Math.max(hi, e.tMs);
  for (const s of cleanSpans(input)) {
    if (s.fromMs < t - 500 || s.toMs > horizon) continue;
    lo = Math.min(lo, s.fromMs);
    hi = Math.max(hi, s.toMs);
  }
  const core = Math.max(hi - lo, 60);
  return { fromMs: lo - Math.max(core * 0.3, 25), toMs: hi + Math.max(core * 0.25, 25), failureMs: t };
}

// ---------------------------------------------------------------- layout helpers
interface Placed { lane: number; x: number; anchor: 'start' | 'end'; text: string; extra: string; ev: TimelineEvent; markerX: number }

/** Space between the label and its `extra` (the delay after the failure), drawn with `dx`. */
const EXTRA_DX = 5;

/**
 * Event labels in lanes above a panel, each joined to its marker by a leader
 * running down through the lanes below it. A label may overlap no other label
 * in its lane, no leader may cross a label, and labels of the same instant
 * stack. Placed right to left, each in the lowest lane that fits, starting just
 * right of its marker — or ending just left of it, when that covers no marker
 * still to be placed — so a cluster of close events becomes a staircase that
 * reads top-down in time order. Past `maxLanes` the label is shortened to fit
 * the lane with the most room.
 */
function placeEventLabels(
  items: Array<{ ev: TimelineEvent; x: number; extra: string }>, left: number, right: number, size: number, maxLanes: number,
): Placed[] {
  const gap = 8;
  const pad = 3;
  const placed: Array<{ a: number; b: number; p: Placed }> = [];
  const maxChars = Math.max(6, Math.floor(((right - left) * 0.45) / (size * CHAR_W)));
  // Right to left; of events at the same instant the later one in the input first (it sits lower).
  const sorted = items.map((it, i) => ({ ...it, i })).sort((a, b) => b.x - a.x || b.i - a.i);
  sorted.forEach((it, idx) => {
    const rest = sorted.slice(idx + 1);
    const text = truncate(it.ev.label, Math.min(48, maxChars));
    // Bold glyphs are wider.
    const w = textWidth(text, bold(it.ev) ? size * 1.1 : size) + (it.extra ? EXTRA_DX + textWidth(it.extra, size) : 0);
    // `covers`: markers still to be placed that the label would lie over; their leaders must stay below it.
    type Cand = { a: number; b: number; anchor: 'start' | 'end'; x: number; covers: number };
    const cands: Cand[] = [];
    if (it.x + 4 + w <= right) cands.push({ a: it.x + 4, b: it.x + 4 + w, anchor: 'start', x: it.x + 4, covers: 0 });
    const ea = it.x - 4 - w;
    if (ea >= left) cands.push({ a: ea, b: it.x - 4, anchor: 'end', x: it.x - 4, covers: rest.filter((r) => r.x >= ea - pad && r.x <= it.x - 4 + pad).length });
    const place = (c: Cand, lane: number): void => {
      placed.push({ a: c.a, b: c.b, p: { lane, x: c.x, anchor: c.anchor, text, extra: it.extra, ev: it.ev, markerX: it.x } });
    };
    const fits = (c: { a: number; b: number }, lane: number): boolean =>
      placed.every(({ a, b, p }) =>
        !(p.lane === lane && c.a < b + gap && a < c.b + gap) &&
        !(p.lane < lane && it.x >= a - pad && it.x <= b + pad) &&
        !(p.lane > lane && p.markerX >= c.a - pad && p.markerX <= c.b + pad));
    // First a label that covers no marker, in the lowest lane; else one above the markers it covers.
    for (let lane = 0; lane < maxLanes; lane++) {
      const c = cands.find((k) => k.covers === 0 && fits(k, lane));
      if (c) return place(c, lane);
    }
    for (const c of cands.filter((k) => k.covers > 0)) {
      for (let lane = c.covers; lane < maxLanes; lane++) if (fits(c, lane)) return place(c, lane);
    }
    // No lane fits: start right of the marker (or at the right edge) in the lane with the most room, shortened to it.
    const x0 = Math.min(it.x + 4, right - size * CHAR_W * 3);
    let best = { lane: 0, room: -Infinity };
    for (let lane = 0; lane < maxLanes; lane++) {
      let lim = right;
      for (const { a, p } of placed) {
        if (p.lane === lane && a > x0) lim = Math.min(lim, a - gap);
        if (p.lane > lane && p.markerX > x0) lim = Math.min(lim, p.markerX - pad);
      }
      if (lim - x0 > best.room) best = { lane, room: lim - x0 };
    }
    const room = Math.max(best.room, size * CHAR_W * 2);
    const withExtra = it.extra && textWidth(text, size) + EXTRA_DX + textWidth(it.extra, size) <= room;
    const p: Placed = {
      lane: best.lane, x: x0, anchor: 'start', text: withExtra ? text : fitWidth(text, room, size), extra: withExtra ? it.extra : '', ev: it.ev, markerX: it.x,
    };
    placed.push({ a: x0, b: x0 + room, p });
  });
  return placed.map((q) => q.p);
}

interface SpanBar { span: TimelineSpan; lane: number; xa: number; xb: number; labelX: number; anchor: 'start' | 'end' | 'middle'; text: string; tint: typeof STALL_TINT }

/**
 * Spans as bars in lanes under a panel (a Gantt chart of the recovery), each
 * labelled with its duration inside its bar or else beside it, right or left,
 * in the first lane where bar and label overlap nothing.
 */
function placeSpanBars(spans: TimelineSpan[], xOf: (t: number) => number, left: number, right: number, size: number, tints: Map<TimelineSpan, typeof STALL_TINT>): SpanBar[] {
  const gap = 6;
  const lanes: Array<Array<{ a: number; b: number }>> = [];
  const out: SpanBar[] = [];
  for (const span of spans) {
    const xa = Math.max(left, Math.min(right - 3, xOf(span.fromMs)));
    const xb = Math.max(xa + 3, Math.min(right, xOf(span.toMs)));
    const label = `${truncate(span.label, 60)} ${fmtMs(span.toMs - span.fromMs)}`;
    const w = textWidth(label, size);
    type Opt = { a: number; b: number; labelX: number; anchor: SpanBar['anchor']; text: string };
    const opts: Opt[] = [];
    if (w + 10 <= xb - xa) opts.push({ a: xa, b: xb, labelX: (xa + xb) / 2, anchor: 'middle', text: label });
    if (xb + 5 + w <= right) opts.push({ a: xa, b: xb + 5 + w, labelX: xb + 5, anchor: 'start', text: label });
    if (xa - 5 - w >= left) opts.push({ a: xa - 5 - w, b: xb, labelX: xa - 5, anchor: 'end', text: label });
    // A label beside its bar is better where no other span's bar is.
    const crowd = (o: Opt): number => spans.filter((q) => q !== span && xOf(q.toMs) > o.a && xOf(q.fromMs) < o.b).length;
    opts.sort((p, q) => crowd(p) - crowd(q));
    if (opts.length === 0) {
      opts.push(right - xb >= xa - left
        ? { a: xa, b: right, labelX: xb + 5, anchor: 'start', text: fitWidth(label, right - xb - 5, size) }
        : { a: left, b: xb, labelX: xa - 5, anchor: 'end', text: fitWidth(label, xa - 5 - left, size) });
    }
    let lane = 0;
    let opt: Opt | undefined;
    for (; lane < lanes.length && !opt; lane++) opt = opts.find((o) => !lanes[lane]!.some((q) => o.a < q.b + gap && q.a < o.b + gap));
    if (opt) lane--;
    else { lanes.push([]); opt = opts[0]!; }
    lanes[lane]!.push({ a: opt.a, b: opt.b });
    out.push({ span, lane, xa, xb, labelX: opt.labelX, anchor: opt.anchor, text: opt.text, tint: tints.get(span) ?? SPAN_TINTS[0]! });
  }
  return out;
}

// ---------------------------------------------------------------- drawing
interface Panel {
  id: string;
  x: number; y: number; w: number; h: number;
  t0: number; t1: number;
  yTop: number; unit: Unit;
}

const px = (p: Panel, t: number): number => p.x + ((t - p.t0) / (p.t1 - p.t0)) * p.w;
const py = (p: Panel, v: number): number => p.y + p.h - (v / p.unit.div / p.yTop) * p.h;

function text(x: number, y: number, s: string, attrs: Record<string, string | number> = {}): string {
  const a = Object.entries(attrs).map(([k, v]) => ` ${k}="${escapeXml(String(v))}"`).join('');
  return `<text x="${f(x)}" y="${f(y)}"${a}>${escapeXml(s)}</text>`;
}

function line(x1: number, y1: number, x2: number, y2: number, stroke: string, width: number, dash?: string): string {
  return `<line x1="${f(x1)}" y1="${f(y1)}" x2="${f(x2)}" y2="${f(y2)}" stroke="${stroke}" stroke-width="${width}"${dash ? ` stroke-dasharray="${dash}"` : ''}/>`;
}

function gridAndAxes(p: Panel, xTicks: Array<{ t: number; label: string }>, yTicks: number[], yStep: number): string[] {
  const o: string[] = [];
  for (const v of yTicks) {
    const y = p.y + p.h - (v / p.yTop) * p.h;
    o.push(line(p.x, y, p.x + p.w, y, v === 0 ? AXIS : GRID, 1));
    o.push(text(p.x - 6, y + 4, fmt(v, yStep), { 'text-anchor': 'end', 'font-size': 11, fill: MUTED }));
  }
  o.push(text(p.x - 6, p.y - 8, p.unit.name, { 'text-anchor': 'end', 'font-size': 11, fill: MUTED, 'font-weight': 'bold' }));
  for (const tk of xTicks) {
    const x = px(p, tk.t);
    o.push(line(x, p.y + p.h, x, p.y + p.h + 4, AXIS, 1));
    o.push(text(x, p.y + p.h + 16, tk.label, { 'text-anchor': 'middle', 'font-size': 11, fill: MUTED }));
  }
  return o;
}

/** The series as lines (with a faint area under each) clipped to the panel; sample dots when they are few. */
function drawSeries(p: Panel, series: Series[], dots: boolean): string[] {
  const o: string[] = [`<g clip-path="url(#clip-${p.id})">`];
  for (const s of series) {
    if (s.pts.length === 0) continue;
    // The points in the window and one on each side, so lines cross the panel's edges.
    let lo = s.pts.findIndex((q) => q.t >= p.t0);
    if (lo < 0) lo = s.pts.length;
    let hi = s.pts.length - 1;
    while (hi >= 0 && s.pts[hi]!.t > p.t1) hi--;
    const pts = s.pts.slice(Math.max(0, lo - 1), Math.min(s.pts.length, hi + 2));
    const d = pts.map((q, i) => `${i ? 'L' : 'M'}${f(px(p, q.t))} ${f(py(p, q.v))}`).join('');
    if (pts.length > 1) {
      const base = f(p.y + p.h);
      o.push(`<path d="${d}L${f(px(p, pts[pts.length - 1]!.t))} ${base}L${f(px(p, pts[0]!.t))} ${base}Z" fill="${s.colour}" fill-opacity="0.07" stroke="none"/>`);
      o.push(`<path d="${d}" fill="none" stroke="${s.colour}" stroke-width="2" stroke-linejoin="round" stroke-linecap="round"/>`);
    }
    const inside = pts.filter((q) => q.t >= p.t0 && q.t <= p.t1);
    if (s.pts.length === 1 || (dots && inside.length <= 90)) {
      for (const q of inside) o.push(`<circle cx="${f(px(p, q.t))}" cy="${f(py(p, q.v))}" r="${s.pts.length === 1 ? 3.5 : 2.2}" fill="${s.colour}" stroke="#ffffff" stroke-width="0.8"/>`);
    }
  }
  o.push('</g>');
  return o;
}

function spanTints(spans: TimelineSpan[]): Map<TimelineSpan, typeof STALL_TINT> {
  const m = new Map<TimelineSpan, typeof STALL_TINT>();
  let i = 0;
  for (const s of spans) m.set(s, STALL_RE.test(s.label) ? STALL_TINT : SPAN_TINTS[i++ % SPAN_TINTS.length]!);
  return m;
}

/** The outermost spans shaded across the panel (the stall, not the steps inside it: those are the bars). */
function drawShading(p: Panel, spans: TimelineSpan[], tints: Map<TimelineSpan, typeof STALL_TINT>): string[] {
  const o: string[] = [`<g clip-path="url(#clip-${p.id})">`];
  const outer = spans.filter((s) => !spans.some((q) => q !== s && q.fromMs <= s.fromMs && q.toMs >= s.toMs && (q.toMs - q.fromMs > s.toMs - s.fromMs || spans.indexOf(q) < spans.indexOf(s))));
  for (const s of outer) {
    if (s.toMs < p.t0 || s.fromMs > p.t1) continue;
    const a = Math.max(p.x, px(p, s.fromMs));
    const b = Math.min(p.x + p.w, px(p, s.toMs));
    const tint = tints.get(s)!;
    o.push(`<rect x="${f(a)}" y="${f(p.y)}" width="${f(Math.max(1.5, b - a))}" height="${f(p.h)}" fill="${tint.fill}" fill-opacity="${tint === STALL_TINT ? 0.5 : 0.4}"/>`);
  }
  o.push('</g>');
  return o;
}

const LANE_H = 14;
const EV_SIZE = 11.5;
const SPAN_SIZE = 10.5;
const BAR_H = 14;
const BAR_GAP = 3;

function drawEventMarkers(p: Panel, events: TimelineEvent[]): string[] {
  const o: string[] = [];
  for (const e of events) {
    if (e.tMs < p.t0 || e.tMs > p.t1) continue;
    const st = EVENT_STYLE[e.kind];
    const x = px(p, e.tMs);
    o.push(line(x, p.y, x, p.y + p.h, st.line, st.width, st.dash));
  }
  return o;
}

const bold = (e: TimelineEvent): boolean => e.kind === 'failure' || e.kind === 'resumed';

function drawEventLabels(p: Panel, placed: Placed[]): string[] {
  const o: string[] = [];
  for (const l of placed) {
    const st = EVENT_STYLE[l.ev.kind];
    const y = p.y - 6 - l.lane * LANE_H;
    // A leader from the label's lane down to the panel, where the marker continues.
    o.push(`<line class="leader" x1="${f(l.markerX)}" y1="${f(y - 9)}" x2="${f(l.markerX)}" y2="${f(p.y)}" stroke="${st.line}" stroke-width="1"${bold(l.ev) ? '' : ' stroke-dasharray="2 2"'}/>`);
    const weight = bold(l.ev) ? ' font-weight="bold"' : '';
    const extra = l.extra ? `<tspan dx="${EXTRA_DX}" fill="${MUTED}" font-weight="normal">${escapeXml(l.extra)}</tspan>` : '';
    o.push(`<text class="event-label" x="${f(l.x)}" y="${f(y)}" font-size="${EV_SIZE}" fill="${st.text}" text-anchor="${l.anchor}"${weight}>${escapeXml(l.text)}${extra}</text>`);
  }
  return o;
}

function drawSpanBars(top: number, bars: SpanBar[]): string[] {
  const o: string[] = [];
  for (const b of bars) {
    const y = top + b.lane * (BAR_H + BAR_GAP);
    o.push(`<rect x="${f(b.xa)}" y="${f(y)}" width="${f(b.xb - b.xa)}" height="${BAR_H}" rx="3" fill="${b.tint.fill}" stroke="${b.tint.stroke}" stroke-width="1"/>`);
    o.push(text(b.labelX, y + BAR_H - 4, b.text, { 'text-anchor': b.anchor, 'font-size': SPAN_SIZE, fill: b.tint.text }));
  }
  return o;
}

function laneCount(items: Array<{ lane: number }>): number {
  return items.reduce((m, i) => Math.max(m, i.lane + 1), 0);
}

// ---------------------------------------------------------------- the picture
export function renderTimelineSvg(input: TimelineInput, opts: TimelineOptions = {}): string {
  const W = Math.max(480, Math.round(opts.width ?? 1000));
  let H = Math.max(320, Math.round(opts.height ?? 600));
  const series = cleanSeries(input);
  const events = cleanEvents(input);
  const spans = cleanSpans(input);
  const tints = spanTints(spans);
  const allPts = series.flatMap((s) => s.pts);

  // Time: seconds after the first throughput point; the domain also takes in every event and span.
  const times = allPts.map((q) => q.t);
  const origin = times.length ? Math.min(...times) : events.length ? events[0]!.tMs : spans.length ? spans[0]!.fromMs : 0;
  let t0 = Math.min(origin, ...events.map((e) => e.tMs), ...spans.map((s) => s.fromMs));
  let t1 = Math.max(origin, ...times, ...events.map((e) => e.tMs), ...spans.map((s) => s.toMs));
  if (t1 - t0 < 1000) { const mid = (t0 + t1) / 2; t0 = Math.min(t0, mid - 500); t1 = t0 + Math.max(1000, t1 - t0); }

  // The zoom window.
  let zoom: { fromMs: number; toMs: number } | null = null;
  let failureMs: number | null = null;
  const auto = zoomWindow(input);
  if (opts.zoom !== false) {
    if (opts.zoom && Number.isFinite(opts.zoom.fromMs) && Number.isFinite(opts.zoom.toMs) && opts.zoom.toMs > opts.zoom.fromMs) zoom = { ...opts.zoom };
    else if (auto) zoom = { fromMs: auto.fromMs, toMs: auto.toMs };
    failureMs = auto?.failureMs ?? null;
  }
  const inZoom = (t: number): boolean => zoom !== null && t >= zoom.fromMs && t <= zoom.toMs;
  // The spans the zoom panel tells (bars and shading): those overlapping its window and not much longer than it.
  const zoomSpans = zoom ? spans.filter((s) => s.toMs >= zoom!.fromMs && s.fromMs <= zoom!.toMs && s.toMs - s.fromMs <= 3 * (zoom!.toMs - zoom!.fromMs)) : [];
  const mainSpans = spans.filter((s) => !zoomSpans.includes(s));

  // Horizontal layout (fixed), so labels can be placed before the vertical layout.
  const padL = 64;
  const padR = 28;
  const plotX = padL;
  const plotW = W - padL - padR;
  const xMain = (t: number): number => plotX + ((t - t0) / (t1 - t0)) * plotW;

  // Main panel labels: the events outside the zoom window, and the failure itself.
  const mainItems = events
    .filter((e) => !inZoom(e.tMs) || (e.kind === 'failure' && e.tMs === failureMs))
    .map((e) => ({ ev: e, x: xMain(e.tMs), extra: '' }));
  const mainLabels = placeEventLabels(mainItems, plotX, plotX + plotW, EV_SIZE, zoom ? 4 : 8);
  const mainBars = placeSpanBars(mainSpans, xMain, plotX, plotX + plotW, SPAN_SIZE, tints);

  let zoomLabels: Placed[] = [];
  let zoomBars: SpanBar[] = [];
  let xZoom: ((t: number) => number) | null = null;
  if (zoom) {
    const z = zoom;
    const fx = (t: number): number => plotX + ((t - z.fromMs) / (z.toMs - z.fromMs)) * plotW;
    xZoom = fx;
    const rel = failureMs ?? z.fromMs;
    const items = events.filter((e) => inZoom(e.tMs)).map((e) => {
      const d = e.tMs - rel;
      return { ev: e, x: fx(e.tMs), extra: e.kind === 'failure' && d === 0 ? '' : `${d >= 0 ? '+' : '−'}${fmtMs(Math.abs(d))}` };
    });
    zoomLabels = placeEventLabels(items, plotX, plotX + plotW, EV_SIZE, 8);
    zoomBars = placeSpanBars(zoomSpans, fx, plotX, plotX + plotW, SPAN_SIZE, tints);
  }

  // Vertical layout.
  const title = fitWidth(input.title ?? '', W - 40, 19);
  const subtitle = input.subtitle ? fitWidth(input.subtitle, W - 40, 12.5) : '';
  const legendItems = series.map((s) => ({ s, text: truncate(s.label, 36) }));
  const legendW = legendItems.reduce((a, i) => a + 26 + textWidth(i.text, 12) + 18, 0);
  // The legend goes right of the title or of the subtitle if it fits there, else on a row of its own.
  let y = 32;
  const titleY = y;
  if (subtitle) y += 20;
  const subtitleY = y;
  let legendY = 0;
  let legendRight = true;
  if (legendW + textWidth(title, 19 * 1.1) + 30 <= W - 40) legendY = titleY - 5;
  else if (subtitle && legendW + textWidth(subtitle, 12.5) + 30 <= W - 40) legendY = subtitleY - 4;
  else if (legendItems.length) { y += 22; legendY = y - 4; legendRight = false; }
  const footer = (input.footer ?? []).slice(0, 6).map((l) => fitWidth(l, W - 48, 12.5));
  const footerH = footer.length ? footer.length * 18 + 14 : 6;
  const mainLanes = Math.max(1, laneCount(mainLabels));
  const mainTrack = laneCount(mainBars);
  const zoomLanes = zoom ? Math.max(1, laneCount(zoomLabels)) : 0;
  const zoomTrack = laneCount(zoomBars);
  const mainAbove = 20 + mainLanes * LANE_H;
  const mainBelow = 36 + (mainTrack ? mainTrack * (BAR_H + BAR_GAP) + (zoom ? 16 : 6) : 0);
  const zoomAbove = zoom ? 26 + zoomLanes * LANE_H + 8 : 0;
  const zoomBelow = zoom ? 36 + (zoomTrack ? zoomTrack * (BAR_H + BAR_GAP) + 6 : 0) : 0;
  // What is left goes to the plots; a height too small for them is made taller rather than drawn over.
  const minPlots = zoom ? 2 * 70 : 90;
  let free = H - y - footerH - mainAbove - mainBelow - zoomAbove - zoomBelow - 10;
  if (free < minPlots) { H += minPlots - free; free = minPlots; }
  const mainH = zoom ? free * 0.5 : free;
  const zoomH = zoom ? free - mainH : 0;

  const ys = yScale(Math.max(0, ...allPts.map((q) => q.v)));
  const main: Panel = { id: 'main', x: plotX, y: y + mainAbove, w: plotW, h: mainH, t0, t1, yTop: ys.top, unit: ys.unit };

  const o: string[] = [];
  o.push('<?xml version="1.0" encoding="UTF-8"?>');
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${FONT}">`);
  o.push(`<title>${escapeXml(oneLine(input.title ?? ''))}</title>`);
  o.push('<defs>');
  o.push(`<clipPath id="clip-main"><rect x="${f(main.x)}" y="${f(main.y - 4)}" width="${f(main.w)}" height="${f(main.h + 8)}"/></clipPath>`);
  o.push('</defs>');
  o.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`);

  // Header: title, subtitle, legend.
  o.push(text(20, titleY, title, { 'font-size': 19, 'font-weight': 'bold', fill: INK }));
  if (subtitle) o.push(text(20, subtitleY, subtitle, { 'font-size': 12.5, fill: MUTED }));
  if (legendItems.length) {
    o.push('<g id="legend">');
    let lx = legendRight ? W - 20 - legendW + 18 : 20;
    for (const i of legendItems) {
      o.push(line(lx, legendY, lx + 20, legendY, i.s.colour, 3));
      o.push(text(lx + 26, legendY + 4, i.text, { 'font-size': 12, fill: INK }));
      lx += 26 + textWidth(i.text, 12) + 18;
    }
    o.push('</g>');
  }

  // Main panel.
  o.push('<g id="overview">');
  const mainXT = niceTicks((t0 - origin) / 1000, (t1 - origin) / 1000, Math.max(4, Math.floor(plotW / 90)));
  o.push(...gridAndAxes(main, mainXT.values.map((s) => ({ t: origin + s * 1000, label: `${fmt(s, mainXT.step).replace('-', '−')} s` })), ys.ticks, ys.step));
  // The zoom panel's spans and events are drawn there (the failure in both panels).
  o.push(...drawShading(main, mainSpans, tints));
  if (zoom) {
    const a = Math.max(main.x, xMain(zoom.fromMs));
    const b = Math.min(main.x + main.w, Math.max(xMain(zoom.toMs), a + 6));
    o.push(`<rect x="${f(a - 1)}" y="${f(main.y)}" width="${f(b - a + 2)}" height="${f(main.h)}" fill="#000000" fill-opacity="0.06" stroke="#555555" stroke-width="1"/>`);
  }
  o.push(...drawSeries(main, series, false));
  o.push(...drawEventMarkers(main, events.filter((e) => !inZoom(e.tMs) || e.tMs === failureMs)));
  o.push(...drawEventLabels(main, mainLabels));
  if (mainBars.length) o.push(...drawSpanBars(main.y + main.h + 24, mainBars));
  if (allPts.length === 0) {
    o.push(text(main.x + main.w / 2, main.y + main.h / 2, 'no throughput samples', { 'text-anchor': 'middle', 'font-size': 13, fill: MUTED, 'font-style': 'italic' }));
  } else if (!allPts.some((q) => q.v > 0)) {
    o.push(text(main.x + main.w / 2, main.y + main.h / 2, 'no bytes moved (throughput 0 throughout)', { 'text-anchor': 'middle', 'font-size': 13, fill: MUTED, 'font-style': 'italic' }));
  }
  o.push('</g>');
  y = main.y + main.h + mainBelow;

  // Zoom panel.
  if (zoom && xZoom) {
    const rel = failureMs ?? zoom.fromMs;
    const zy = y + zoomAbove;
    const near = series.map((s) => {
      const i = s.pts.findIndex((q) => q.t >= zoom!.fromMs);
      const j = s.pts.findIndex((q) => q.t > zoom!.toMs);
      return s.pts.slice(Math.max(0, (i < 0 ? s.pts.length : i) - 1), j < 0 ? s.pts.length : j + 1);
    });
    const zs = yScale(Math.max(0, ...near.flat().map((q) => q.v)));
    const zp: Panel = { id: 'zoom', x: plotX, y: zy, w: plotW, h: zoomH, t0: zoom.fromMs, t1: zoom.toMs, yTop: zs.top, unit: zs.unit };
    o.push(`<g id="zoom">`);
    const sec = (t: number): string => `${fmt((t - origin) / 1000, 0.001).replace('-', '−')} s`;
    o.push(`<title>${escapeXml(failureMs !== null
      ? `zoom: ${fmtMs(Math.abs(rel - zoom.fromMs))} ${zoom.fromMs <= rel ? 'before' : 'after'} to ${fmtMs(Math.abs(zoom.toMs - rel))} ${zoom.toMs >= rel ? 'after' : 'before'} the failure`
      : `zoom: ${sec(zoom.fromMs)} to ${sec(zoom.toMs)}`)}</title>`);
    // Magnifier: the window in the overview joined to this panel.
    const a = Math.max(main.x, xMain(zoom.fromMs));
    const b = Math.min(main.x + main.w, Math.max(xMain(zoom.toMs), a + 6));
    const top = y + 4;
    // From just under the overview's tick labels to the corners of this panel's frame.
    const boxL = 8;
    const boxR = W - 12;
    const from = main.y + main.h + 21 + (mainTrack ? mainTrack * (BAR_H + BAR_GAP) + 2 : 0);
    o.push(`<path d="M${f(a - 1)} ${f(from)}L${f(boxL)} ${f(top)}M${f(b + 1)} ${f(from)}L${f(boxR)} ${f(top)}" stroke="#A0A0A0" stroke-width="1" stroke-dasharray="3 3" fill="none"/>`);
    o.push(`<rect x="${boxL}" y="${f(top)}" width="${f(boxR - boxL)}" height="${f(zy + zoomH + zoomBelow - top - 4)}" rx="6" fill="#FAFAFA" stroke="#D0D0D0" stroke-width="1"/>`);
    const mag = Math.round((t1 - t0) / (zoom.toMs - zoom.fromMs));
    const what = failureMs !== null ? `the ${fmtMs(zoom.toMs - zoom.fromMs)} around the failure` : `${sec(zoom.fromMs)} to ${sec(zoom.toMs)}`;
    o.push(text(zp.x - padL + 18, top + 17, `Zoom${mag > 1 ? ` ×${mag}` : ''}: ${what}`, { 'font-size': 12.5, 'font-weight': 'bold', fill: INK }));
    o.push(`<clipPath id="clip-zoom"><rect x="${f(zp.x)}" y="${f(zp.y - 4)}" width="${f(zp.w)}" height="${f(zp.h + 8)}"/></clipPath>`);
    const zt = niceTicks(zoom.fromMs - rel, zoom.toMs - rel, Math.max(4, Math.floor(plotW / 80)));
    o.push(...gridAndAxes(zp, zt.values.map((v) => ({ t: rel + v, label: `${v > 0 ? '+' : ''}${fmt(v, zt.step).replace('-', '−')} ms` })), zs.ticks, zs.step));
    o.push(...drawShading(zp, zoomSpans, tints));
    o.push(...drawSeries(zp, series, true));
    o.push(...drawEventMarkers(zp, events));
    o.push(...drawEventLabels(zp, zoomLabels));
    // The headline number: failure to the first resumption after it.
    const resumed = failureMs !== null ? events.find((e) => e.kind === 'resumed' && e.tMs >= failureMs!) : undefined;
    if (failureMs !== null && resumed && inZoom(resumed.tMs)) {
      const xa = xZoom(failureMs);
      const xb = xZoom(resumed.tMs);
      const my = zp.y + zp.h * 0.45;
      const label = `${fmtMs(resumed.tMs - failureMs)} from failure to resumed`;
      const lw = textWidth(label, 12) + 12;
      o.push(`<path d="M${f(xa + 1)} ${f(my)}H${f(xb - 1)}M${f(xa + 7)} ${f(my - 4)}L${f(xa + 1)} ${f(my)}L${f(xa + 7)} ${f(my + 4)}M${f(xb - 7)} ${f(my - 4)}L${f(xb - 1)} ${f(my)}L${f(xb - 7)} ${f(my + 4)}" stroke="${INK}" stroke-width="1.3" fill="none"/>`);
      const cx = xb - xa >= lw ? (xa + xb) / 2 : Math.min(zp.x + zp.w - lw / 2, xb + 6 + lw / 2);
      o.push(`<rect x="${f(cx - lw / 2)}" y="${f(my - 24)}" width="${f(lw)}" height="18" rx="3" fill="#ffffff" fill-opacity="0.9"/>`);
      o.push(text(cx, my - 11, label, { 'text-anchor': 'middle', 'font-size': 12, 'font-weight': 'bold', fill: INK }));
    }
    if (zoomBars.length) o.push(...drawSpanBars(zp.y + zp.h + 24, zoomBars));
    o.push('</g>');
  }

  // Footer.
  if (footer.length) {
    o.push('<g id="footer">');
    const fy = H - footerH + 8;
    o.push(line(20, fy - 2, W - 20, fy - 2, GRID, 1));
    footer.forEach((l, i) => o.push(text(24, fy + 14 + i * 18, l, { 'font-size': 12.5, fill: i === 0 ? INK : '#444444', ...(i === 0 ? { 'font-weight': 'bold' } : {}) })));
    o.push('</g>');
  }
  o.push('</svg>');
  return o.join('\n') + '\n';
}

export function writeTimelineSvg(file: string, input: TimelineInput, opts?: TimelineOptions): void {
  fs.writeFileSync(file, renderTimelineSvg(input, opts));
}
