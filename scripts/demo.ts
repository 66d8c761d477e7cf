// `npm run demo`: the replication data path on the built-in namespace testbed.
// A client runs request/response sessions and bulk transfers through the
// gateway to the primary; `t2cp backup` replays every flow into the backup's
// copy of the same service. The screen shows, live, each flow's progress on
// the primary and on the backup; at the end every stream's digest is
// compared and the LAN capture is checked for packets from the backup.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type FlowRow, renderFlows, verdict } from './demo-view.js';
import { startBackup } from './backup-process.js';
import { countPackets, startCapture } from './capture.js';
import { compareReplicas, readLog, type ClientLogLine, type ServiceLogLine } from './replica-check.js';
import { collect, distScript, startService, waitForExit } from './processes.js';
import { createTestbed } from './testbed.js';
import type { Workload } from './client.js';

const MB = 1 << 20;
const PORTS = [7000, 6379];
const WORKLOAD: Workload = {
  seed: 7,
  sessions: [
    { kind: 'upload', bytes: 400 * MB },
    { kind: 'download', bytes: 400 * MB },
    { kind: 'rr', times: 12, count: 120, intervalMs: 80, reqSize: [16, 2000], respSize: [16, 30000] },
    { kind: 'rr', times: 12, count: 120, intervalMs: 80, reqSize: [16, 2000], respSize: [16, 30000], port: 6379 },
    { kind: 'idle', times: 4, holdMs: 8000 },
  ],
};
const DEADLINE_MS = 120_000;

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the demo builds network namespaces: run it as root');
  const out = process.stdout;
  out.write('t2cp-ar demo: building the testbed (client, gateway, switch with a mirrored port, primary, backup)...\n');
  const tb = await createTestbed({ offloads: true });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 't2cp-demo-'));
  try {
    const primary = await startService(tb, tb.ns.primary, PORTS, `${dir}/primary.jsonl`);
    const replica = await startService(tb, tb.ns.backup, PORTS, `${dir}/backup.jsonl`);
    const backup = await startBackup(tb, { ports: PORTS, instance: 'demo', extra: ['--flow-stats', '500'] });
    out.write(`primary ${tb.addr.primary} holds VIP ${tb.addr.vip}; backup ${tb.addr.backup} replicates ports ${PORTS.join(',')} from its mirror port\n`);
    const backupMac = await tb.mac(tb.ns.backup, tb.ifaces.backupLan);
    const leak = await startCapture(tb, tb.ns.gateway, 'gs', `tcp and ether src ${backupMac}`, `${dir}/leak.pcap`);

    const client = tb.spawn(tb.ns.client, ['node', distScript('client'), '--server', `${tb.addr.vip}:${PORTS[0]}`,
      '--workload', JSON.stringify(WORKLOAD), '--log', `${dir}/client.jsonl`, '--deadline-ms', String(DEADLINE_MS)]);
    const clientOut = collect(client);
    const rows = new Map<string, FlowRow>();
    let seen = 0;
    let drawn = 0;
    const redraw = (): void => {
      for (const r of backup.records.slice(seen)) {
        if (typeof r.flow !== 'string') continue;
        const row = rows.get(r.flow) ?? { flow: r.flow, state: 'new', c2sPrimary: 0, c2sBackup: 0, s2cPrimary: 0, s2cBackup: 0 };
        row.state = r.msg === 'flow stats' ? (row.state === 'closed' ? 'closed' : 'live') : r.msg.replace('flow ', '');
        for (const k of ['c2sPrimary', 'c2sBackup', 's2cPrimary', 's2cBackup'] as const) if (typeof r[k] === 'number') row[k] = r[k] as number;
        rows.set(r.flow, row);
      }
      seen = backup.records.length;
      const text = renderFlows([...rows.values()], {
        synchronised: backup.flows('synchronised').length,
        closed: backup.flows('closed').length,
        unprotected: backup.flows('unprotected').length,
      });
      if (out.isTTY) {
        if (drawn) out.write(`\x1b[${drawn}A\x1b[J`);
        out.write(text);
        drawn = text.split('\n').length - 1;
      } else if (Date.now() % 2000 < 500) {
        out.write(text);
      }
    };
    const timer = setInterval(redraw, 500);
    const code = await waitForExit(client, DEADLINE_MS + 10_000);
    await new Promise((r) => setTimeout(r, 700));
    redraw();
    clearInterval(timer);

    primary.child.kill('SIGTERM');
    replica.child.kill('SIGTERM');
    await Promise.all([waitForExit(primary.child, 5000), waitForExit(replica.child, 5000)]);
    const counters = await backup.stop();
    await leak.stop();
    out.write(`\nclient finished (exit ${code}): ${clientOut.stdout.trim().split('\n').pop() ?? ''}\n`);
    const report = compareReplicas(
      readLog<ServiceLogLine>(`${dir}/primary.jsonl`),
      readLog<ServiceLogLine>(`${dir}/backup.jsonl`),
      readLog<ClientLogLine>(`${dir}/client.jsonl`),
    );
    out.write(verdict(report, await countPackets(`${dir}/leak.pcap`), counters));
    if (!report.ok) process.exitCode = 1;
  } finally {
    await tb.teardown();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`demo failed: ${(e as Error).message}\n`);
  process.exit(1);
});
