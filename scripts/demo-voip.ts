// `npm run demo:voip`: the papers' VoIP use case on the built-in namespace
// testbed (scripts/voip.ts). Kamailio proxies SIP calls between two SIPp
// phones through the service address; t2cp replicates its UDP port to the
// backup's Kamailio; the primary's link goes down in the middle of the calls;
// their re-INVITEs and BYEs, and new calls, are answered by the backup. At the
// end: what SIPp counted (calls successful, SIP retransmissions), the
// takeover record, and a picture of the signalling each way with the failover
// marked (t2cp-demo/voip-timeline.svg, captured on the phones' interface).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startCapture, udpTimeline } from './capture.js';
import { voipTimeline, writeDemoPicture, type BackupRecord, type GatewayRecord } from './demo-timeline.js';
import { startTakeoverLab } from './takeover-lab.js';
import { createTestbed } from './testbed.js';
import { HOLD_MS, SIP_PORT, checkVoipSoftware, kamailioService, runCallsThroughFailure } from './voip.js';
import { readLog } from './replica-check.js';

const OUT_DIR = path.resolve('t2cp-demo');

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the demo builds network namespaces: run it as root');
  checkVoipSoftware();
  const say = (s: string): boolean => process.stdout.write(s + '\n');
  say('t2cp-ar VoIP demo: building the testbed (caller and callee, gateway, switch with a mirrored port, primary, backup)...');
  const tb = await createTestbed({ clientAddrs: 2 });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 't2cp-demo-voip-'));
  let keep = false;
  try {
    const pair = await startTakeoverLab(tb, dir, { ports: [], udpPorts: [SIP_PORT], instance: 'voip', hardMisses: 3, service: kamailioService(tb, dir) });
    say(`Kamailio (stateful proxy, registrar) on the primary ${tb.addr.primary} and the backup ${tb.addr.backup}, at VIP ${tb.addr.vip}:${SIP_PORT} over UDP; ` +
      `t2cp replicates the port to the backup's copy; failure detector on the gateway`);
    const calls = 10;
    const capture = await startCapture(tb, tb.ns.client, 'c0', `udp port ${SIP_PORT}`, `${dir}/sip.pcap`);
    const run = await runCallsThroughFailure(tb, dir, pair, { calls, callsAfter: 5, say: (s) => say(`  ${s}`) });
    await capture.stop();
    const record = readLog<BackupRecord>(pair.logs.backupReport)[0];
    const gateway = readLog<GatewayRecord>(pair.logs.gatewayReport)[0];
    await pair.stop();
    const line = (what: string, r: typeof run.during): string =>
      `${what}: ${r.stats['SuccessfulCall(C)'] ?? '?'} of ${r.stats.TotalCallCreated ?? '?'} successful, ${r.stats['FailedCall(C)'] ?? '?'} failed, ` +
      `${r.stats['Retransmissions(C)'] ?? '?'} SIP retransmission(s), mean call length ${r.stats['CallLength(C)'] ?? '?'} (nominal ${2 * HOLD_MS} ms)`;
    say('');
    say(`takeover: detected ${gateway?.detectionLatencyUs ? (gateway.detectionLatencyUs / 1000).toFixed(1) : '?'} ms after the primary's last heartbeat, ` +
      `${record?.takeoverUs ? (record.takeoverUs / 1000).toFixed(1) : '?'} ms to take over`);
    say(line('calls under way at the failure', run.during));
    say(line('calls after the takeover', run.after));
    if (record) {
      const sip = await udpTimeline(`${dir}/sip.pcap`, 100, tb.addr.vip);
      const footer = [line('calls under way at the failure', run.during), line('calls after the takeover', run.after)];
      fs.mkdirSync(OUT_DIR, { recursive: true });
      const files = writeDemoPicture(path.join(OUT_DIR, 'voip-timeline'),
        voipTimeline({ failMs: run.failMs, sip: { ...sip, toProxy: sip.toHost, fromProxy: sip.fromHost }, gateway, backup: record, footer }), { zoom: false });
      say(`picture: ${files.join(', ')}`);
    }
    const ok = run.during.code === 0 && run.after.code === 0;
    say(ok ? 'RESULT: the proxy died in the middle of the calls and every call went on to its end, answered by the backup.'
      : `RESULT: FAILED (sipp exit ${run.during.code}, ${run.after.code}); the run's files are kept in ${dir}`);
    if (!ok) {
      process.exitCode = 1;
      keep = true;
    }
  } finally {
    await tb.teardown();
    if (!keep) fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`demo failed: ${(e as Error).message}\n`);
  process.exit(1);
});
