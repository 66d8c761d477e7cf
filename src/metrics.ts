// Prometheus metrics of a role (--metrics ADDR:PORT, off by default), served
// at /metrics in Prometheus' text format by prom-client. Names follow
// Prometheus' conventions: `t2cp_` then the counter's own name (docs/logs.md)
// and `_total` for counters; gauges for what goes up and down (states as
// one series per state, 1 for the current one); parse errors labelled by
// source and reason. The role hands a snapshot function; each scrape reads it
// once, so the figures of one scrape belong together. Node's own process
// metrics (CPU, memory) come with them.
//
// Call order: `await MetricsServer.open(...)` — before the role installs
// anything, so that an address in use is a one-line error with nothing to
// undo — then close().
import http from 'node:http';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { T2cpError } from './errors.js';
import type { Endpoint } from './options.js';

export interface GaugeSample {
  /** Without the t2cp_ prefix. */
  name: string;
  help: string;
  value: number;
  labels?: Record<string, string>;
}

export interface MetricsSnapshot {
  /** Monotonic counts by their own name (docs/logs.md): t2cp_<name>_total. */
  counters: Record<string, number>;
  gauges: GaugeSample[];
}

/** A state machine's current state as one series per state (1 for the current one). */
export function stateGauges(name: string, help: string, states: readonly string[], current: string): GaugeSample[] {
  return states.map((state) => ({ name, help, value: state === current ? 1 : 0, labels: { state } }));
}

const PARSE = /^(mirror|backup)_parse_(.+)$/;
/** `t2cp_` and the name in snake case: the JS roles' camelCase counts (`standDowns`) as `stand_downs`. */
const metricName = (name: string): string => `t2cp_${name.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase().replace(/[^a-z0-9_]/g, '_')}`;

export class MetricsServer {
  private readonly registry = new Registry();
  private readonly counters = new Map<string, Counter>();
  private readonly last = new Map<string, number>();
  private readonly gauges = new Map<string, Gauge>();
  private parseErrors: Counter | undefined;

  private constructor(
    private readonly server: http.Server,
    private readonly snapshot: () => MetricsSnapshot,
    role: string,
    instance: string,
    version: string,
  ) {
    collectDefaultMetrics({ register: this.registry });
    new Gauge({ name: 't2cp_info', help: 'this t2cp process: its role and instance', labelNames: ['role', 't2cp_instance', 'version'], registers: [this.registry] })
      .set({ role, t2cp_instance: instance, version }, 1);
    server.on('request', (req, res) => void this.serve(req, res));
  }

  /** Listens on `bind`; a T2cpError naming the option and the fix when it cannot. */
  static async open(bind: Endpoint, o: { role: string; instance: string; version: string; snapshot: () => MetricsSnapshot }): Promise<MetricsServer> {
    const server = http.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => {
        const why = e.code === 'EADDRINUSE' ? 'address in use' : e.code === 'EADDRNOTAVAIL' ? 'no such local address' : e.message;
        reject(new T2cpError(`--metrics ${bind.address}:${bind.port}: ${why}: give another --metrics ADDR:PORT, or stop what holds it`, 'T2CP_CONFIG'));
      });
      server.listen(bind.port, bind.address, () => resolve());
    });
    return new MetricsServer(server, o.snapshot, o.role, o.instance, o.version);
  }

  address(): Endpoint {
    const a = this.server.address();
    return typeof a === 'object' && a ? { address: a.address, port: a.port } : { address: '', port: 0 };
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.closeAllConnections();
      this.server.close(() => resolve());
    });
  }

  private async serve(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('t2cp: metrics at /metrics\n');
      return;
    }
    try {
      this.update(this.snapshot());
      res.writeHead(200, { 'content-type': this.registry.contentType }).end(await this.registry.metrics());
    } catch (e) {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`t2cp: ${(e as Error).message}\n`);
    }
  }

  /** Brings every metric to the snapshot's values (new names registered as they first appear). */
  private update(s: MetricsSnapshot): void {
    for (const [name, value] of Object.entries(s.counters)) {
      if (!Number.isFinite(value)) continue;
      const parse = PARSE.exec(name);
      if (parse) {
        this.parseErrors ??= new Counter({ name: 't2cp_parse_errors_total', help: 'malformed or unexpected packets, counted and dropped, by where they came from and why',
          labelNames: ['source', 'reason'], registers: [this.registry] });
        this.advance(this.parseErrors, { source: parse[1]!, reason: parse[2]! }, name, value);
        continue;
      }
      let c = this.counters.get(name);
      if (!c) {
        c = new Counter({ name: `${metricName(name)}_total`, help: `t2cp counter ${name} (docs/logs.md)`, registers: [this.registry] });
        this.counters.set(name, c);
      }
      this.advance(c, {}, name, value);
    }
    const seen = new Set<string>();
    for (const g of s.gauges) {
      const name = metricName(g.name);
      let metric = this.gauges.get(name);
      if (!metric) {
        metric = new Gauge({ name, help: g.help, labelNames: Object.keys(g.labels ?? {}), registers: [this.registry] });
        this.gauges.set(name, metric);
      }
      // Label sets that are gone (a port no longer lagging) go with the old values.
      if (!seen.has(name)) metric.reset();
      seen.add(name);
      if (g.labels) metric.set(g.labels, g.value);
      else metric.set(g.value);
    }
  }

  /** The counter up to the source's value (a source that started again counts on from its new value). */
  private advance(c: Counter, labels: Record<string, string>, key: string, value: number): void {
    const before = this.last.get(key) ?? 0;
    const by = value < before ? value : value - before;
    if (by > 0) c.inc(labels, by);
    this.last.set(key, value);
  }
}
