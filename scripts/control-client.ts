// Sends a TAKEOVER to a backup's control port from inside the testbed, the
// way an operator runs `t2cp takeover` on the backup host, and returns the
// TAKEOVER_REPORT body.
import { distCli } from './backup-process.js';
import type { Testbed } from './testbed.js';

export interface TakeoverAnswer { ok: boolean; [k: string]: unknown }

export async function requestTakeover(o: { tb: Testbed; ns: string; keyFile: string; port: number; reason: string; timeoutMs?: number }): Promise<TakeoverAnswer> {
  const ctl = distCli().replace(/cli\.js$/, 'control/index.js');
  const script = `import { Channel, loadKey } from '${ctl}';
const { key } = loadKey(${JSON.stringify(o.keyFile)});
const ch = await Channel.open({ key, sender: 'cli:test', bind: { address: '127.0.0.1', port: 0 } });
const got = ch.waitFor('TAKEOVER_REPORT', ${o.timeoutMs ?? 5000});
ch.send({ address: '127.0.0.1', port: ${o.port} }, 'TAKEOVER', { epoch: 1, reason: ${JSON.stringify(o.reason)}, planned: true });
const r = await got;
console.log(JSON.stringify(r ? r.msg.body : { ok: false, error: 'timeout' }));
await ch.close();`;
  const r = await o.tb.exec(o.ns, ['node', '--input-type=module', '-e', script], { timeoutMs: (o.timeoutMs ?? 5000) + 5000 });
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as TakeoverAnswer;
  } catch {
    return { ok: false, code: r.code, stderr: r.stderr.trim(), stdout: r.stdout.trim() };
  }
}
