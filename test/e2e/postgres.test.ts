// PostgreSQL survives a takeover: a real postgres on the primary and on the
// backup (same initdb, same pgbench tables made before replication starts),
// pgbench through the VIP, the primary's link goes down mid-run and the
// detector decides. From the client's side: pgbench ends with every
// transaction done and none failed; from the backup's: its record counts
// every pgbench connection taken over, none lost or unprotected, and its
// copy of postgres never refused a connection.
//
// One describe per case (the cases below). libpq's default sslmode (prefer)
// first sends an SSLRequest, waits for the server's 'N', then sends its
// startup message: the replica must get the startup message only after it
// answered 'N', or it logs "received unencrypted data after SSL request" and
// closes its copy of the connection (PostgreSQL refuses bytes that came with
// the SSLRequest, CVE-2021-23214): t2cp reports the flow unprotected
// (replica-reset) and resets its client at the takeover.
//
// Every connection's BackendKeyData differs between the two servers (a
// random cancel key, the last describe): same length, other bytes. Under
// --divergence strict (the default) every connection is therefore reported
// diverged and reset at a takeover, which the last takeover case shows; a
// PostgreSQL service is protected with --divergence length, where only a
// different length is a divergence (the cost: after a takeover a client's
// CancelRequest carries a key the backup's postgres does not know).
import { describe, expect, it } from 'vitest';
import { runPostgresTakeover, startPostgres, startupExchange } from '../../scripts/postgres.js';
import { flowsBefore, openAtFailure } from '../../scripts/real-servers.js';
import { kernelLeftovers } from './leftovers.js';
import { useLab } from './lab.js';

const INSTANCE = 'pg';
const PORT = 7000;

// pgbench -c 4 -t 60 -R 40: 6 s of select-only transactions; the primary fails 2 s in.
const RUN = { clients: 4, transactions: 60, rate: 40, failAfterProgress: 2 } as const;

// Each sslmode twice: as the race comes, and with the backup's postgres slow
// to read a new connection (pre_auth_delay 1 s), so that the client's first
// bytes always wait for it together: with prefer, every connection meets the
// case above, not one in a few.
const cases: Array<{ name: string; sslmode?: 'disable'; replicaPreAuthDelayS?: number }> = [
  { name: 'libpq\'s default sslmode (prefer: SSLRequest, then the startup message)' },
  { name: 'libpq\'s default sslmode, the replica slow to read a new connection', replicaPreAuthDelayS: 1 },
  { name: 'sslmode=disable', sslmode: 'disable' },
  { name: 'sslmode=disable, the replica slow to read a new connection', sslmode: 'disable', replicaPreAuthDelayS: 1 },
];

for (const c of cases) {
  describe(`postgres takeover: ${c.name}`, () => {
    const lab = useLab('pg');

    it('pgbench finishes every transaction and every connection is taken over', async () => {
      const { tb, dir } = lab;
      const trial = await runPostgresTakeover(tb, dir, { ...RUN, sslmode: c.sslmode, replicaPreAuthDelayS: c.replicaPreAuthDelayS, port: PORT, instance: INSTANCE, divergence: 'length', expectOpen: RUN.clients });
      const { pgbench, record, serverErrors } = trial;
      const e = record.engine;
      const unprotected = trial.flows.filter((f) => f.msg === 'flow unprotected');
      // Closed with the two servers' byte counts apart (t2cp's only sign of a replica gone its own way).
      const diverged = trial.flows.filter((f) => f.msg === 'flow closed' && f.diverged);
      console.log(`postgres takeover (${c.name}): pgbench exit ${pgbench.code}, ` +
        `processed ${pgbench.processed}/${pgbench.planned}, failed ${pgbench.failed}; ` +
        `record: taken over ${e.flowsTakenOver}, stall flows ${e.stall?.flows ?? '?'}, lost ${e.flowsLost}, unprotected ${e.flowsUnprotected}, clients reset ${e.clientsReset}; ` +
        `flows unprotected: ${JSON.stringify(unprotected.map((f) => ({ flow: f.flow, reason: f.reason })))}; ` +
        `closed diverged: ${JSON.stringify(diverged.map((f) => ({ flow: f.flow, s2cPrimary: f.s2cPrimary, s2cBackup: f.s2cBackup })))}; ` +
        `replica's errors: ${JSON.stringify(serverErrors.backup)}; ` +
        `steps ${e.steps.map((s) => `${s.name} ${s.us ?? '?'} µs`).join(', ')}`);
      if (pgbench.code !== 0) console.log(`pgbench stderr:\n${pgbench.stderr.split('\n').filter((l) => !l.startsWith('progress: ')).join('\n')}`);

      // The client: pgbench ran to its end, every transaction processed, none failed.
      expect(pgbench.code, pgbench.stderr).toBe(0);
      expect(pgbench.failed).toBe(0);
      expect(pgbench.processed).toBe(RUN.clients * RUN.transactions);
      // The replica took every connection as the primary did.
      expect(serverErrors.backup).toEqual([]);
      expect(unprotected).toEqual([]);
      expect(diverged).toEqual([]);
      // The determinism report before the failure: pgbench's connections open and alike.
      expect(trial.statusBeforeFailure.comparison[String(PORT)]).toMatchObject({ policy: 'length', diverged: 0, gaveUp: 0 });
      expect(trial.statusBeforeFailure.comparison[String(PORT)]!.open).toBeGreaterThanOrEqual(RUN.clients);
      // The record: pgbench's connections were taken over, none lost, none unprotected.
      expect(record.trigger.source).toBe('detector');
      expect(trial.gateway.outcome).toBe('active');
      // pgbench's connections open at the failure: its clients' (its first one, for the server's
      // version and the vacuum, closed before the run). That one may still linger in the flow
      // table, closed, and then counts as taken over too.
      expect(openAtFailure(trial)).toHaveLength(RUN.clients);
      expect(e.flowsTakenOver).toBeGreaterThanOrEqual(RUN.clients);
      expect(e.flowsTakenOver).toBeLessThanOrEqual(flowsBefore(trial, 'synchronised').size);
      expect(e.flowsLost).toBe(0);
      expect(e.flowsUnprotected).toBe(0);
      expect(e.clientsReset).toBe(0);
      expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
    });
  });
}

describe('postgres takeover: --divergence strict (the default)', () => {
  const lab = useLab('pg');

  // BackendKeyData differs: every connection is diverged at its startup,
  // its replica reset; at the takeover none is counted as taken over, and
  // every pgbench client is reset at once rather than left waiting.
  it('reports every connection diverged at BackendKeyData and resets its client at the takeover', async () => {
    const { tb, dir } = lab;
    const trial = await runPostgresTakeover(tb, dir, { ...RUN, sslmode: 'disable', port: PORT, instance: INSTANCE });
    const { pgbench, record } = trial;
    const e = record.engine;
    const anomalies = trial.flowsBeforeFailure.filter((f) => f.msg === 'flow anomaly');
    console.log(`postgres strict: pgbench exit ${pgbench.code}, processed ${pgbench.processed}/${pgbench.planned}; ` +
      `record: taken over ${e.flowsTakenOver}, unprotected ${e.flowsUnprotected}, clients reset ${e.clientsReset}; ` +
      `divergences ${JSON.stringify(anomalies.slice(0, 2).map((a) => ({ kind: a.kind, offset: a.offset, primary: a.primary, replica: a.replica })))}`);
    // Every connection pgbench made (its first one, then its clients').
    expect(anomalies.length).toBeGreaterThanOrEqual(RUN.clients + 1);
    expect(new Set(anomalies.map((a) => a.reason))).toEqual(new Set(['diverged']));
    expect(new Set(anomalies.map((a) => a.kind))).toEqual(new Set(['bytes']));
    // From the client's side: the connections ended at the takeover; not one hung (pgbench returned).
    expect(pgbench.code).not.toBe(0);
    expect(pgbench.processed).toBeLessThan(RUN.clients * RUN.transactions);
    expect(e.flowsTakenOver).toBe(0);
    expect(e.flowsUnprotected).toBeGreaterThanOrEqual(RUN.clients);
    // pgbench's clients' connections, and its first one if it lingered, closing, in the flow table.
    expect(e.clientsReset).toBeGreaterThanOrEqual(RUN.clients);
    expect(e.clientsReset).toBeLessThanOrEqual(anomalies.length);
    expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
  });
});

// scram-sha-256: the server's first SASL message carries its random nonce
// (same length, other bytes: strict catches it there); the client's proof is
// made with the primary's nonce, so the replica refuses it and closes the
// connection (a different length: length catches that). Either way no
// connection is protected, and its client is reset at the takeover.
for (const divergence of ['strict', 'length'] as const) {
  describe(`postgres takeover: scram-sha-256 authentication, --divergence ${divergence}`, () => {
    const lab = useLab('pgscram');

    it('reports every connection diverged at authentication and resets its client at the takeover', async () => {
      const { tb, dir } = lab;
      const trial = await runPostgresTakeover(tb, dir, { ...RUN, auth: 'scram-sha-256', port: PORT, instance: INSTANCE, divergence });
      const { pgbench, record } = trial;
      const e = record.engine;
      const anomalies = trial.flowsBeforeFailure.filter((f) => f.msg === 'flow anomaly');
      console.log(`postgres scram ${divergence}: pgbench exit ${pgbench.code}, processed ${pgbench.processed}/${pgbench.planned}; ` +
        `record: taken over ${e.flowsTakenOver}, unprotected ${e.flowsUnprotected}, clients reset ${e.clientsReset}; ` +
        `divergences ${JSON.stringify(anomalies.slice(0, 2).map((a) => ({ kind: a.kind, offset: a.offset, primary: a.primary, replica: a.replica })))}; ` +
        `replica's errors ${JSON.stringify(trial.serverErrors.backup.slice(0, 2))}; pgbench stderr ${JSON.stringify(pgbench.stderr.split('\n').filter((l) => !l.startsWith('progress: ')).slice(0, 3))}`);
      expect(anomalies.length).toBeGreaterThanOrEqual(RUN.clients + 1);
      expect(new Set(anomalies.map((a) => a.reason))).toEqual(new Set(['diverged']));
      expect(new Set(anomalies.map((a) => a.kind))).toEqual(new Set([divergence === 'strict' ? 'bytes' : 'length']));
      expect(pgbench.code).not.toBe(0);
      expect(pgbench.processed).toBeLessThan(RUN.clients * RUN.transactions);
      expect(e.flowsTakenOver).toBe(0);
      expect(e.flowsUnprotected).toBeGreaterThanOrEqual(RUN.clients);
      expect(e.clientsReset).toBeGreaterThanOrEqual(RUN.clients);
      expect(await kernelLeftovers(tb, INSTANCE)).toEqual([]);
    });
  });
}

describe('postgres: two servers from the same initdb', () => {
  const lab = useLab('pginit');

  // What a replica of postgres cannot repeat. BackendKeyData carries the
  // backend's PID and a random cancel key (pg_strong_random): same length,
  // other bytes, on every connection: --divergence strict reports it, length
  // lets it pass (the takeover cases above); after a takeover a client's
  // CancelRequest carries the primary's key, which the backup's postgres
  // does not know (the cancel is ignored, the connection lives on).
  it('answer a startup message alike but for BackendKeyData\'s content', async () => {
    const { tb, dir } = lab;
    const servers = [];
    try {
      servers.push(await startPostgres(tb, tb.ns.primary, `${dir}/pg-primary`, { port: PORT }));
      servers.push(await startPostgres(tb, tb.ns.backup, `${dir}/pg-backup`, { port: PORT }));
      const [a, b] = await Promise.all(servers.map((s) => startupExchange(s.socket)));
      const differ = a!.map((m, i) => ({ m, n: b![i] })).filter(({ m, n }) => !n || m.type !== n.type || !m.body.equals(n.body));
      console.log(`startup exchange: ${a!.length} messages (${a!.map((m) => m.type).join('')}); differing: ` +
        differ.map(({ m, n }) => `${m.type} ${m.body.toString('hex')} vs ${n?.body.toString('hex')}`).join('; '));
      expect(a!.map((m) => [m.type, m.body.length])).toEqual(b!.map((m) => [m.type, m.body.length]));
      expect(differ.map(({ m }) => m.type)).toEqual(['K']);
    } finally {
      for (const s of servers) await s.stop();
    }
  });
});
