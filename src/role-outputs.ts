// What a long-running role offers the world besides its work: Prometheus
// metrics (--metrics, src/metrics.ts), the event stream (--events,
// src/events.ts) and the state-change program (--notify). Each is opened
// before the role installs anything, so a bad address is an error with
// nothing to undo; close() undoes them all.
import fs from 'node:fs';
import { packageVersion } from './addon.js';
import { EventStream, notifyProgram, type Role } from './events.js';
import type { Logger } from './log.js';
import { MetricsServer, type MetricsSnapshot } from './metrics.js';
import { endpointText, type Endpoint } from './options.js';

export type { Role };

/**
 * For a role whose state is read from a getter (the backup's, the agent's): a check that tells
 * `changed` when the state moved since the last check, called where it may have changed and on
 * a timer for the rest.
 */
export function stateChanges<T>(read: () => T, changed: (from: T, to: T) => void): () => void {
  let last = read();
  return () => {
    const now = read();
    if (now === last) return;
    const from = last;
    last = now;
    changed(from, now);
  };
}

export interface RoleOutputs {
  events?: EventStream;
  /** A state change: to the event stream and the --notify program. */
  stateChanged(subject: string, from: string, to: string, epoch: number, cause?: string): void;
  close(): Promise<void>;
  /** For a process about to exit at once: the event socket's file removed now. */
  removeNow(): void;
  /** Logs where metrics and events are served: called once the role runs (a role refused at start serves nothing). */
  announce(): void;
}

export async function openRoleOutputs(role: Role, cfg: { instance: string; metrics?: Endpoint; events?: string; notify?: string }, log: Logger,
  o: { metrics: () => MetricsSnapshot; digest: () => Record<string, unknown> }): Promise<RoleOutputs> {
  const metrics = cfg.metrics
    ? await MetricsServer.open(cfg.metrics, { role, instance: cfg.instance, version: packageVersion(), snapshot: o.metrics })
    : undefined;
  let events: EventStream | undefined;
  try {
    events = cfg.events ? await EventStream.open(cfg.events, { role, instance: cfg.instance, digest: o.digest, log }) : undefined;
  } catch (e) {
    await metrics?.close();
    throw e;
  }
  const notify = cfg.notify ? notifyProgram(cfg.notify, role, cfg.instance, log) : undefined;
  return {
    ...(events ? { events } : {}),
    stateChanged(subject, from, to, epoch, cause) {
      events?.state(subject, from, to, epoch, cause);
      if (subject === role || subject === 'device') notify?.(to, epoch);
    },
    async close() {
      await events?.close();
      await metrics?.close();
    },
    removeNow() {
      if (cfg.events) fs.rmSync(cfg.events, { force: true });
    },
    announce() {
      if (metrics) log.info('metrics served', { at: `http://${endpointText(metrics.address())}/metrics` });
      if (events) log.info('events served', { socket: cfg.events });
    },
  };
}
