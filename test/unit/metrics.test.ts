// The metrics endpoint (src/metrics.ts) on loopback, without root: names, types, labels and
// values as Prometheus reads them, counters that only go up, gauges whose label sets come and go.
import { afterEach, describe, expect, it } from 'vitest';
import { MetricsServer, stateGauges, type MetricsSnapshot } from '../../src/metrics.js';
import { T2cpError } from '../../src/errors.js';

let snapshot: MetricsSnapshot = { counters: {}, gauges: [] };
const open: MetricsServer[] = [];

async function server(): Promise<MetricsServer> {
  const m = await MetricsServer.open({ address: '127.0.0.1', port: 0 }, { role: 'backup', instance: 'unit', version: '0.0.0', snapshot: () => snapshot });
  open.push(m);
  return m;
}

async function scrape(m: MetricsServer, path = '/metrics'): Promise<{ status: number; text: string }> {
  const r = await fetch(`http://127.0.0.1:${m.address().port}${path}`);
  return { status: r.status, text: await r.text() };
}

describe('metrics endpoint', () => {
  afterEach(async () => {
    for (const m of open.splice(0)) await m.close();
  });

  it('serves counters as _total, states one series each, gauges with labels, parse errors by source and reason', async () => {
    const m = await server();
    snapshot = {
      counters: { flows_synchronised: 4, mirror_parse_bad_udp_length: 2, backup_parse_truncated_ip: 1, heartbeatsLate: 3 },
      gauges: [
        ...stateGauges('backup_state', 'the state', ['standby', 'active'], 'standby'),
        { name: 'replica_lag_seconds', help: 'lag', value: 0.002, labels: { port: '7000', quantile: '0.5' } },
      ],
    };
    const { status, text } = await scrape(m);
    expect(status).toBe(200);
    expect(text).toContain('# TYPE t2cp_flows_synchronised_total counter');
    expect(text).toMatch(/^t2cp_flows_synchronised_total 4$/m);
    expect(text).toMatch(/^t2cp_heartbeats_late_total 3$/m);  // a JS role's camelCase count, in snake case
    expect(text).toMatch(/^t2cp_parse_errors_total\{source="mirror",reason="bad_udp_length"\} 2$/m);
    expect(text).toMatch(/^t2cp_parse_errors_total\{source="backup",reason="truncated_ip"\} 1$/m);
    expect(text).toMatch(/^t2cp_backup_state\{state="standby"\} 1$/m);
    expect(text).toMatch(/^t2cp_backup_state\{state="active"\} 0$/m);
    expect(text).toMatch(/^t2cp_replica_lag_seconds\{port="7000",quantile="0.5"\} 0.002$/m);
    expect(text).toMatch(/^t2cp_info\{role="backup",t2cp_instance="unit",version="0.0.0"\} 1$/m);
    expect(text).toContain('process_cpu_seconds_total');
  });

  it('counts on from the source; a label set gone is gone', async () => {
    const m = await server();
    snapshot = { counters: { gaps: 3 }, gauges: [{ name: 'open_connections', help: 'open', value: 2, labels: { protection: 'protected' } },
      { name: 'open_connections', help: 'open', value: 1, labels: { protection: 'unprotected' } }] };
    await scrape(m);
    snapshot = { counters: { gaps: 5 }, gauges: [{ name: 'open_connections', help: 'open', value: 3, labels: { protection: 'protected' } }] };
    const { text } = await scrape(m);
    expect(text).toMatch(/^t2cp_gaps_total 5$/m);
    expect(text).toMatch(/^t2cp_open_connections\{protection="protected"\} 3$/m);
    expect(text).not.toContain('protection="unprotected"');
  });

  it('answers 404 elsewhere; an address in use names the option and the fix', async () => {
    const m = await server();
    expect((await scrape(m, '/')).status).toBe(404);
    const err = await MetricsServer.open({ address: '127.0.0.1', port: m.address().port }, { role: 'gateway', instance: 'x', version: '0', snapshot: () => snapshot })
      .then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(T2cpError);
    expect((err as T2cpError).message).toBe(`--metrics 127.0.0.1:${m.address().port}: address in use: give another --metrics ADDR:PORT, or stop what holds it`);
  });
});
