import { describe, expect, it } from 'vitest';
import {
  escapeXml, niceTicks, renderTimelineSvg, truncate, writeTimelineSvg, zoomWindow,
  type TimelineEvent, type TimelineInput,
} from '../../scripts/timeline-svg.js';

// ---------------------------------------------------------------- a tiny XML checker
interface El { name: string; attrs: Record<string, string>; children: El[]; text: string }

/** Parses the subset of XML the renderer writes, throwing on anything malformed: unbalanced or crossed tags, raw `<` or `&`, bad attributes. */
function parseXml(src: string): El {
  let i = 0;
  const fail = (m: string): never => { throw new Error(`${m} at ${i}: ${JSON.stringify(src.slice(Math.max(0, i - 40), i + 40))}`); };
  const checkText = (t: string): string => {
    if (t.includes('<') || t.includes('>')) fail('raw < or > in text');
    for (const m of t.matchAll(/&/g)) if (!/^&(amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);/.test(t.slice(m.index))) fail('bare &');
    return t.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&amp;/g, '&');
  };
  if (src.startsWith('<?xml')) { i = src.indexOf('?>') + 2; }
  const root: El = { name: '#doc', attrs: {}, children: [], text: '' };
  const stack: El[] = [root];
  while (i < src.length) {
    const lt = src.indexOf('<', i);
    const chunk = src.slice(i, lt < 0 ? src.length : lt);
    stack[stack.length - 1]!.text += checkText(chunk);
    if (lt < 0) break;
    i = lt;
    if (src.startsWith('<!--', i)) { const e = src.indexOf('-->', i); if (e < 0) fail('open comment'); i = e + 3; continue; }
    if (src[i + 1] === '/') {
      const m = /^<\/([A-Za-z][\w:.-]*)\s*>/.exec(src.slice(i)) ?? fail('bad end tag');
      const top = stack.pop()!;
      if (top.name !== m[1]) fail(`</${m[1]}> closes <${top.name}>`);
      i += m[0].length;
      continue;
    }
    const m = /^<([A-Za-z][\w:.-]*)((?:\s+[A-Za-z][\w:.-]*="[^"<]*")*)\s*(\/?)>/.exec(src.slice(i)) ?? fail('bad start tag');
    const attrs: Record<string, string> = {};
    for (const a of m[2]!.matchAll(/([A-Za-z][\w:.-]*)="([^"]*)"/g)) {
      if (a[1]! in attrs) fail(`duplicate attribute ${a[1]}`);
      attrs[a[1]!] = checkText(a[2]!);
    }
    const el: El = { name: m[1]!, attrs, children: [], text: '' };
    stack[stack.length - 1]!.children.push(el);
    if (!m[3]) stack.push(el);
    i += m[0].length;
  }
  if (stack.length !== 1) fail(`unclosed <${stack[stack.length - 1]!.name}>`);
  if (root.children.length !== 1 || root.children[0]!.name !== 'svg') fail('not one <svg> root');
  return root.children[0]!;
}

function all(el: El, pred: (e: El) => boolean, out: El[] = []): El[] {
  if (pred(el)) out.push(el);
  for (const c of el.children) all(c, pred, out);
  return out;
}
const byId = (root: El, id: string): El | undefined => all(root, (e) => e.attrs.id === id)[0];
/** All text of an element, tspans included. */
const textOf = (e: El): string => e.text + e.children.map(textOf).join('');
const texts = (root: El): string[] => all(root, (e) => e.name === 'text').map(textOf);

// ---------------------------------------------------------------- a failover like the demo's
/** 20 s of two bulk directions sampled every 20 ms; the primary dies at 8 s, the backup takes over, the clients stall ~210 ms. */
function sampleInput(): TimelineInput {
  const T0 = 1_700_000_000_000;
  const FAIL = T0 + 8000;
  const RESUME = FAIL + 212;
  const MB = 1 << 20;
  const rate = (base: number, phase: number, t: number): number => {
    if (t >= FAIL && t < RESUME) return 0;
    const wobble = 1 + 0.06 * Math.sin(t / 310 + phase) + 0.04 * Math.sin(t / 77 + phase * 3);
    const ramp = t >= RESUME ? Math.min(1, 0.12 + (t - RESUME) / 380) : 1;
    const start = Math.min(1, (t - T0) / 300);
    return base * wobble * ramp * start;
  };
  const pts = (base: number, phase: number, end: number) => {
    const out: Array<{ tMs: number; bytesPerS: number }> = [];
    for (let t = T0; t <= T0 + end; t += 20) out.push({ tMs: t, bytesPerS: t > T0 + end - 200 ? 0 : rate(base, phase, t) });
    return out;
  };
  return {
    title: 'Failover under load: the backup takes over, no client notices',
    subtitle: '30 client sessions through VIP 198.18.1.10 (2 × 400 MB bulk, 24 request/response, 4 idle); primary killed with SIGKILL at 8 s',
    series: [
      { label: 'client→server', points: pts(62 * MB, 0, 17_000) },
      { label: 'server→client', points: pts(88 * MB, 1.7, 19_400) },
    ],
    events: [
      { tMs: T0 + 40, label: '30 sessions open', kind: 'info' },
      { tMs: FAIL, label: 'primary killed', kind: 'failure' },
      { tMs: FAIL + 31, label: 'failure detected (3 heartbeats missed)', kind: 'detection' },
      { tMs: FAIL + 36, label: 'replica output released', kind: 'step' },
      { tMs: FAIL + 39, label: 'VIP on the backup', kind: 'step' },
      { tMs: FAIL + 43, label: 'gratuitous ARP sent', kind: 'step' },
      { tMs: FAIL + 47, label: 'switch learned the backup', kind: 'step' },
      { tMs: RESUME, label: 'clients\' retransmissions answered', kind: 'resumed' },
      { tMs: T0 + 17_000, label: 'uploads done', kind: 'info' },
      { tMs: T0 + 19_400, label: 'all sessions closed', kind: 'info' },
    ],
    spans: [
      { fromMs: FAIL, toMs: RESUME, label: 'client-visible stall' },
      { fromMs: FAIL, toMs: FAIL + 31, label: 'detection' },
      { fromMs: FAIL + 31, toMs: FAIL + 47, label: 'takeover' },
      { fromMs: FAIL + 47, toMs: RESUME, label: 'waiting for client RTO' },
    ],
    footer: [
      '30/30 sessions byte-exact, 0 reset, 0 reconnects',
      'takeover 47 ms after the failure; longest client stall 212 ms (one retransmission timeout)',
    ],
  };
}

describe('timeline SVG', () => {
  // To look at it: TIMELINE_SAMPLE=/tmp/timeline-sample.svg npx vitest run test/unit/timeline.test.ts; rsvg-convert /tmp/timeline-sample.svg -o x.png
  if (process.env.TIMELINE_SAMPLE) writeTimelineSvg(process.env.TIMELINE_SAMPLE, sampleInput());

  it('is well-formed SVG 1.1 with no external references', () => {
    const svg = renderTimelineSvg(sampleInput());
    const root = parseXml(svg);
    expect(root.attrs.xmlns).toBe('http://www.w3.org/2000/svg');
    expect(root.attrs.version).toBe('1.1');
    expect(root.attrs.width).toBe('1000');
    expect(root.attrs.height).toBe('600');
    expect(svg).not.toMatch(/<script|<image|xlink:href|@import|url\((?!#)|<foreignObject/i);
    // Every clip path referred to exists.
    for (const m of svg.matchAll(/url\(#([^)]+)\)/g)) expect(byId(root, m[1]!)).toBeDefined();
    expect(svg).not.toMatch(/NaN|Infinity|undefined/);
  });

  it('the checker itself rejects malformed documents', () => {
    expect(() => parseXml('<svg><g></svg>')).toThrow();
    expect(() => parseXml('<svg><text>a < b</text></svg>')).toThrow();
    expect(() => parseXml('<svg><text>a & b</text></svg>')).toThrow();
    expect(() => parseXml('<svg><g></g></svg><svg/>')).toThrow();
    expect(() => parseXml('<svg x="1" x="2"/>')).toThrow();
    expect(parseXml('<svg><text>a &amp; b</text></svg>').children[0]!.text).toBe('a & b');
  });

  it('escapes <&>"\' in every piece of text', () => {
    const nasty = 'a<b & c>"d" \'e\'';
    const input: TimelineInput = {
      title: `T ${nasty}`, subtitle: `S ${nasty}`,
      series: [{ label: `L ${nasty}`, points: [{ tMs: 0, bytesPerS: 1 }, { tMs: 1000, bytesPerS: 2 }] }],
      events: [{ tMs: 500, label: `E ${nasty}`, kind: 'failure' }, { tMs: 520, label: `R ${nasty}`, kind: 'resumed' }],
      spans: [{ fromMs: 500, toMs: 520, label: `P ${nasty}` }],
      footer: [`F ${nasty}`],
    };
    const svg = renderTimelineSvg(input);
    const root = parseXml(svg);
    const t = texts(root).join('\n');
    for (const p of ['T', 'S', 'L', 'E', 'R', 'P', 'F']) expect(t).toContain(`${p} ${nasty}`);
    expect(svg).not.toContain(nasty);
    expect(escapeXml('<&>"\'')).toBe('&lt;&amp;&gt;&quot;&#39;');
    expect(escapeXml('a\u0001b\u0007')).toBe('ab');
  });

  it('shows every event label, each once per panel', () => {
    const input = sampleInput();
    const root = parseXml(renderTimelineSvg(input));
    const zoom = byId(root, 'zoom')!;
    const overview = byId(root, 'overview')!;
    for (const e of input.events) {
      const inOverview = texts(overview).filter((t) => t.startsWith(e.label));
      const inZoom = texts(zoom).filter((t) => t.startsWith(e.label));
      expect(inOverview.length + inZoom.length, e.label).toBeGreaterThanOrEqual(1);
      expect(inOverview.length, e.label).toBeLessThanOrEqual(1);
      expect(inZoom.length, e.label).toBeLessThanOrEqual(1);
    }
    // The events of the failover are told in the zoom panel, with their delay after the failure.
    expect(texts(zoom)).toContain('failure detected (3 heartbeats missed)+31 ms');
    expect(texts(zoom)).toContain('clients\' retransmissions answered+212 ms');
    expect(texts(zoom)).toContain('212 ms from failure to resumed');
    for (const s of input.spans!) expect(texts(root).some((t) => t.startsWith(s.label))).toBe(true);
    for (const l of input.footer!) expect(texts(root)).toContain(l);
    for (const s of input.series) expect(texts(byId(root, 'legend')!)).toContain(s.label);
  });

  it('staggers event labels: none overlap, no leader crosses a label', () => {
    const input = sampleInput();
    const root = parseXml(renderTimelineSvg(input));
    for (const panel of ['overview', 'zoom']) {
      const boxes = all(byId(root, panel)!, (e) => e.attrs.class === 'event-label').map((e) => {
        const w = textOf(e).length * 11.5 * 0.6 * (e.attrs['font-weight'] === 'bold' ? 1.1 : 1);
        const x = Number(e.attrs.x);
        const a = e.attrs['text-anchor'] === 'end' ? x - w : x;
        return { a, b: a + w, y: Number(e.attrs.y), t: textOf(e) };
      });
      expect(boxes.length).toBeGreaterThan(0);
      for (const p of boxes) for (const q of boxes) {
        if (p === q || p.y !== q.y) continue;
        expect(p.b <= q.a || q.b <= p.a, `${p.t} / ${q.t}`).toBe(true);
      }
      // A leader runs from its label's lane (y1) down to the panel: no label lower down may lie across it.
      for (const l of all(byId(root, panel)!, (e) => e.attrs.class === 'leader')) {
        const x = Number(l.attrs.x1);
        for (const b of boxes) {
          if (b.y <= Number(l.attrs.y1) + 9) continue;
          expect(x < b.a - 1 || x > b.b + 1, `leader at ${x} crosses ${b.t}`).toBe(true);
        }
      }
    }
    // The failover's events in the zoom panel need several lanes; they read top-down in time order.
    const zl = all(byId(root, 'zoom')!, (e) => e.attrs.class === 'event-label');
    const y = (label: string) => Number(zl.find((e) => textOf(e).startsWith(label))!.attrs.y);
    expect(y('failure detected')).toBeLessThan(y('replica output released'));
    expect(y('replica output released')).toBeLessThan(y('VIP on the backup'));
    expect(y('VIP on the backup')).toBeLessThan(y('gratuitous ARP sent'));
  });

  it('magnifies a few hundred milliseconds around the failure', () => {
    const input = sampleInput();
    const fail = input.events.find((e) => e.kind === 'failure')!.tMs;
    const z = zoomWindow(input)!;
    expect(z.failureMs).toBe(fail);
    expect(z.fromMs).toBeLessThan(fail);
    expect(z.fromMs).toBeGreaterThan(fail - 200);
    expect(z.toMs).toBeGreaterThan(fail + 212);
    expect(z.toMs).toBeLessThan(fail + 400);
    const root = parseXml(renderTimelineSvg(input));
    const zoom = byId(root, 'zoom')!;
    // Its axis counts milliseconds from the failure, which sits at 0.
    const ticks = all(zoom, (e) => e.name === 'text' && e.attrs['text-anchor'] === 'middle' && /^[+−]?\d+ ms$/.test(textOf(e)));
    const zero = ticks.find((e) => textOf(e) === '0 ms')!;
    const plus100 = ticks.find((e) => textOf(e) === '+100 ms')!;
    expect(zero).toBeDefined();
    expect(plus100).toBeDefined();
    // The failure marker in the zoom panel stands over the 0 tick, the resumption over +212 ms.
    const markers = all(zoom, (e) => e.name === 'line' && e.attrs.stroke === '#D55E00' && e.attrs.y1 !== e.attrs.y2);
    expect(markers.some((m) => Math.abs(Number(m.attrs.x1) - Number(zero.attrs.x)) < 0.2)).toBe(true);
    const pxPerMs = (Number(plus100.attrs.x) - Number(zero.attrs.x)) / 100;
    expect(pxPerMs).toBeGreaterThan(2); // vs ~0.05 px/ms in the overview
    const green = all(zoom, (e) => e.name === 'line' && e.attrs.stroke === '#009E73');
    expect(green.some((m) => Math.abs(Number(m.attrs.x1) - (Number(zero.attrs.x) + 212 * pxPerMs)) < 0.5)).toBe(true);
    expect(textOf(all(zoom, (e) => e.name === 'title')[0]!)).toMatch(/before to .* after the failure/);
  });

  it('has no zoom panel without a failure, or when asked', () => {
    const input = sampleInput();
    const noFail = { ...input, events: input.events.filter((e) => e.kind !== 'failure') };
    expect(zoomWindow(noFail)).toBeNull();
    const root = parseXml(renderTimelineSvg(noFail));
    expect(byId(root, 'zoom')).toBeUndefined();
    for (const e of noFail.events) expect(texts(root).some((t) => t.startsWith(e.label.slice(0, 10))), e.label).toBe(true);
    expect(byId(parseXml(renderTimelineSvg(input, { zoom: false })), 'zoom')).toBeUndefined();
    const custom = parseXml(renderTimelineSvg(input, { zoom: { fromMs: input.events[1]!.tMs - 1000, toMs: input.events[1]!.tMs + 1000 } }));
    expect(textOf(all(byId(custom, 'zoom')!, (e) => e.name === 'title')[0]!)).toContain('1.00 s before to 1.00 s after');
  });

  it('puts the failover\'s spans in the zoom panel and a span much longer than it in the overview', () => {
    const input = sampleInput();
    const first = input.series[0]!.points[0]!.tMs;
    input.spans!.push({ fromMs: first + 1000, toMs: first + 15_000, label: 'background scrub' });
    const root = parseXml(renderTimelineSvg(input));
    const inZoom = texts(byId(root, 'zoom')!);
    const inOverview = texts(byId(root, 'overview')!);
    expect(inOverview.some((t) => t.startsWith('background scrub'))).toBe(true);
    expect(inZoom.some((t) => t.startsWith('background scrub'))).toBe(false);
    for (const l of ['client-visible stall 212 ms', 'detection 31 ms', 'takeover 16 ms', 'waiting for client RTO 165 ms']) {
      expect(inZoom).toContain(l);
      expect(inOverview).not.toContain(l);
    }
  });

  it('chooses tidy ticks and units', () => {
    expect(niceTicks(0, 20, 8).values).toEqual([0, 2.5, 5, 7.5, 10, 12.5, 15, 17.5, 20]);
    expect(niceTicks(-37, 262, 8).values).toEqual([0, 50, 100, 150, 200, 250]);
    expect(niceTicks(0, 0.9, 4).values).toEqual([0, 0.25, 0.5, 0.75]);
    expect(niceTicks(0, 0.9, 5).values).toEqual([0, 0.2, 0.4, 0.6, 0.8]);
    const t = (bytesPerS: number) => texts(parseXml(renderTimelineSvg({
      title: 't', series: [{ label: 's', points: [{ tMs: 0, bytesPerS: 0 }, { tMs: 1000, bytesPerS }] }], events: [],
    })));
    expect(t(95 * 1024 * 1024)).toContain('MB/s');
    expect(t(95 * 1024 * 1024)).toContain('100');
    expect(t(300 * 1024)).toContain('kB/s');
    expect(t(300)).toContain('B/s');
  });

  describe('edge cases', () => {
    const base = (over: Partial<TimelineInput>): TimelineInput => ({ title: 'edge', series: [], events: [], ...over });
    const ok = (input: TimelineInput, opts?: { width?: number; height?: number }): El => {
      const svg = renderTimelineSvg(input, opts);
      expect(svg).not.toMatch(/NaN|Infinity|undefined/);
      return parseXml(svg);
    };

    it('no series, no points, no events', () => {
      ok(base({}));
      const root = ok(base({ series: [{ label: 'a', points: [] }, { label: 'b', points: [] }] }));
      expect(texts(root)).toContain('no throughput samples');
    });

    it('no points but a failure: the zoom panel still tells the events', () => {
      const events: TimelineEvent[] = [{ tMs: 100, label: 'down', kind: 'failure' }, { tMs: 150, label: 'up', kind: 'resumed' }];
      const root = ok(base({ events }));
      expect(byId(root, 'zoom')).toBeDefined();
      expect(texts(root)).toContain('up+50 ms');
    });

    it('one point', () => {
      const root = ok(base({ series: [{ label: 'a', points: [{ tMs: 5000, bytesPerS: 1e6 }] }] }));
      expect(all(root, (e) => e.name === 'circle')).toHaveLength(1);
    });

    it('zero throughput everywhere', () => {
      const points = Array.from({ length: 50 }, (_, i) => ({ tMs: i * 100, bytesPerS: 0 }));
      const root = ok(base({ series: [{ label: 'a', points }], events: [{ tMs: 2000, label: 'x', kind: 'failure' }] }));
      expect(texts(root).some((t) => t.startsWith('no bytes moved'))).toBe(true);
    });

    it('events and spans outside the data range widen the axis', () => {
      const points = Array.from({ length: 11 }, (_, i) => ({ tMs: 10_000 + i * 100, bytesPerS: 1000 }));
      const root = ok(base({
        series: [{ label: 'a', points }],
        events: [{ tMs: 5000, label: 'early', kind: 'info' }, { tMs: 30_000, label: 'late', kind: 'info' }],
        spans: [{ fromMs: 40_000, toMs: 41_000, label: 'later' }],
      }));
      const ov = byId(root, 'overview')!;
      expect(texts(ov).some((t) => t.startsWith('early'))).toBe(true);
      expect(texts(ov).some((t) => t.startsWith('late'))).toBe(true);
      expect(texts(ov).some((t) => t.startsWith('later'))).toBe(true);
      expect(texts(ov)).toContain('−5 s'); // before the first point
      expect(texts(ov)).toContain('30 s');
    });

    it('very long labels are cut with an ellipsis', () => {
      const long = 'x'.repeat(500);
      const root = ok(base({
        title: long, subtitle: long, footer: [long],
        series: [{ label: long, points: [{ tMs: 0, bytesPerS: 1 }, { tMs: 100, bytesPerS: 1 }] }],
        events: [{ tMs: 50, label: long, kind: 'failure' }, { tMs: 60, label: long, kind: 'detection' }],
        spans: [{ fromMs: 50, toMs: 60, label: long }],
      }));
      const ts = texts(root);
      expect(ts.every((t) => t.length < 170)).toBe(true);
      expect(ts.filter((t) => t.includes('…')).length).toBeGreaterThanOrEqual(6);
      expect(truncate('abcdef', 4)).toBe('abc…');
      expect(truncate('ab😀cd', 4)).toBe('ab😀…');
      expect(truncate('abc', 4)).toBe('abc');
    });

    it('many events at one instant still get distinct lanes', () => {
      const events: TimelineEvent[] = Array.from({ length: 12 }, (_, i) => ({ tMs: 1000 + i, label: `step number ${i}`, kind: i ? 'step' : 'failure' }));
      const root = ok(base({ series: [{ label: 'a', points: [{ tMs: 0, bytesPerS: 5 }, { tMs: 3000, bytesPerS: 5 }] }], events }));
      const zoom = byId(root, 'zoom')!;
      const labels = all(zoom, (e) => e.attrs.class === 'event-label');
      expect(labels).toHaveLength(12);
      const rows = new Set(labels.map((e) => e.attrs.y));
      expect(rows.size).toBeGreaterThanOrEqual(6);
    });

    it('garbage numbers and tiny sizes', () => {
      ok(base({
        series: [{ label: 'a', points: [{ tMs: NaN, bytesPerS: 1 }, { tMs: 1, bytesPerS: Infinity }, { tMs: 2, bytesPerS: -5 }, { tMs: 3, bytesPerS: 7 }] }],
        events: [{ tMs: NaN, label: 'nan', kind: 'info' }, { tMs: 2, label: 'bad kind', kind: 'weird' as TimelineEvent['kind'] }],
        spans: [{ fromMs: 3, toMs: 1, label: 'backwards' }],
      }), { width: 10, height: 10 });
    });
  });
});
