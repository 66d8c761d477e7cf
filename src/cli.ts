#!/usr/bin/env node
// `t2cp`: the command the package installs. Subcommands pick a role.
import { backupHelp, parseBackupArgs } from './config.js';
import { T2cpError } from './errors.js';
import { createLogger } from './log.js';
import { BackupNode } from './backup/node.js';

const USAGE = `usage: t2cp <command> [options]

commands:
  backup     replicate the primary's client flows into this host's copy of the service
  help       this text; \`t2cp backup --help\` for the backup's options

t2cp-ar: client-transparent TCP active replication for Linux.`;

function fail(e: unknown): never {
  if (e instanceof T2cpError) {
    process.stderr.write(`t2cp: ${e.message} [${e.code}]\n`);
    process.exit(e.code === 'T2CP_CONFIG' ? 2 : 1);
  }
  process.stderr.write(`t2cp: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exit(1);
}

function runBackup(argv: string[]): void {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(backupHelp() + '\n');
    return;
  }
  const cfg = parseBackupArgs(argv);
  const log = createLogger(cfg.instance, cfg.json);
  const node = new BackupNode(cfg, log);
  node.start();
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    log.info('signal', { signal: sig });
    node.stop();
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
}

function main(argv: string[]): void {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'backup':
      return runBackup(rest);
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
  main(process.argv.slice(2));
} catch (e) {
  fail(e);
}
