#!/usr/bin/env node
// `t2cp`: the command the package installs. Subcommands pick a role.
import { backupHelp, parseBackupArgs } from './config.js';
import { T2cpError } from './errors.js';
import { createLogger } from './log.js';
import { BackupNode } from './backup/node.js';
import { openRoleOutputs } from './role-outputs.js';
import { SystemdNotifier } from './systemd.js';
import { runEvents, runGateway, runPrimary, runStandDown, runStatus, runTakeover } from './cli-control.js';

const USAGE = `usage: t2cp <command> [options]

commands:
  backup     replicate the primary's client flows into this host's copy of the service
  gateway    the failure detector, on the gateway: watches the primary, orders the takeover
  primary    the agent on the primary: heartbeats, service checks, stands down when replaced
  takeover   ask the backup (on this host) to take over now: a planned switch;
             keepalived's notify_master on the backup host
  stand-down tell the primary agent (on this host) to stand down; keepalived's
             notify_master/backup/fault/stop on the primary host (--vrrp-state)
  status     ask the backup or the primary agent on this host for its state
             (the Pacemaker resource agent's monitor)
  events     follow a role's events (flows, state changes, digests) as JSON lines
  help       this text; \`t2cp <command> --help\` for a command's options

t2cp-ar: client-transparent TCP active replication for Linux.`;

function fail(e: unknown): never {
  if (e instanceof T2cpError) {
    process.stderr.write(`t2cp: ${e.message} [${e.code}]\n`);
    process.exit(e.code === 'T2CP_CONFIG' ? 2 : 1);
  }
  process.stderr.write(`t2cp: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exit(1);
}

async function runBackup(argv: string[]): Promise<void> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(backupHelp() + '\n');
    return;
  }
  const cfg = parseBackupArgs(argv);
  const log = createLogger(cfg.instance, cfg.json);
  const node = new BackupNode(cfg, log);
  // Bound before anything is installed: an address in use is an error with nothing to undo.
  const outputs = await openRoleOutputs('backup', cfg, log, {
    metrics: () => node.metricsSnapshot(),
    digest: () => ({ state: node.state(), flows: node.flows(), open: node.liveFlows() ?? null, counters: node.nonZeroCounters() }),
  });
  node.onState((from, to, epoch) => outputs.stateChanged('backup', from, to, epoch));
  node.onEvent((e) => {
    if (e.type === 'stats' || e.type === 'resupply') return;
    outputs.events?.flow({ event: e.type, ...node.flowFields(e) }, e.type === 'new' || e.type === 'closed');
  });
  node.start();
  outputs.announce();
  const systemd = new SystemdNotifier(log);
  systemd.ready(node.state() === 'active' ? 'serving (a takeover kept)' : 'replicating', node.progressing);
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    log.info('signal', { signal: sig });
    systemd.stopping();
    node.stop();
    outputs.removeNow();
    process.exit(0);
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  // conntrackd -s habit: `kill -USR1 <pid>` logs the counters now.
  process.on('SIGUSR1', () => log.info('counters', node.nonZeroCounters()));
  process.on('uncaughtException', (e) => {
    try {
      node.stop();
    } finally {
      fail(e);
    }
  });
  node.startControl().catch((e: unknown) => {
    node.stop();
    fail(e);
  });
}

function main(argv: string[]): void | Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'backup':
      return runBackup(rest);
    case 'gateway':
      return runGateway(rest);
    case 'primary':
      return runPrimary(rest);
    case 'takeover':
      return runTakeover(rest);
    case 'stand-down':
      return runStandDown(rest);
    case 'status':
      return runStatus(rest);
    case 'events':
      return runEvents(rest);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE + '\n');
      return;
    default:
      throw new T2cpError(`unknown command '${cmd}': try t2cp help`, 'T2CP_CONFIG');
  }
}

try {
  const running = main(process.argv.slice(2));
  if (running) running.catch(fail);
} catch (e) {
  fail(e);
}
