// Options of `t2cp backup`: one table drives flag parsing, the config file,
// defaults, validation and --help, so they cannot drift apart. Every error
// names the option and says how to fix it.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import ipaddr from 'ipaddr.js';
import { configError } from './errors.js';
import type { EngineOptions } from './addon.js';

type Kind = 'string' | 'ipv4' | 'ports' | 'int' | 'bytes' | 'bool';

interface OptionSpec {
  key: keyof BackupConfig;
  flag: string;
  kind: Kind;
  arg?: string;
  help: string;
  required?: boolean;
  min?: number;
  max?: number;
}

export interface BackupConfig {
  mirrorIf: string;
  vip: string;
  ports: number[];
  instance: string;
  queue: number;
  maxFlows: number;
  flowBuffer: number;
  memory: number;
  captureBuffer: number;
  queueMaxLen: number;
  handshakeTimeoutMs: number;
  idleTimeoutS: number;
  statusIntervalS: number;
  flowStatsMs: number;
  rtPriority: number;
  busyPollUs: number;
  logFlows: boolean;
  json: boolean;
}

const DEFAULTS: Omit<BackupConfig, 'mirrorIf' | 'vip' | 'ports'> = {
  instance: 'main',
  queue: 7300,
  maxFlows: 65536,
  flowBuffer: 256 << 20,
  memory: 1 << 30,
  captureBuffer: 128 << 20,
  queueMaxLen: 8192,
  handshakeTimeoutMs: 10000,
  idleTimeoutS: 7200,
  statusIntervalS: 0,
  flowStatsMs: 0,
  rtPriority: 0,
  busyPollUs: 50,
  logFlows: false,
  json: false,
};

export const BACKUP_OPTIONS: OptionSpec[] = [
  { key: 'mirrorIf', flag: '--mirror-if', kind: 'string', arg: 'IF', required: true,
    help: "interface on the switch's mirror port: receives a copy of the primary's traffic" },
  { key: 'vip', flag: '--vip', kind: 'ipv4', arg: 'ADDR', required: true,
    help: 'service address the clients use (held by the primary)' },
  { key: 'ports', flag: '--ports', kind: 'ports', arg: 'LIST', required: true,
    help: 'TCP service ports to replicate, comma-separated (e.g. 7000,6379)' },
  { key: 'instance', flag: '--instance', kind: 'string', arg: 'NAME',
    help: `names this instance's nft tables (t2cp_NAME) and TUN device (t2cp-NAME); default ${DEFAULTS.instance}` },
  { key: 'queue', flag: '--queue', kind: 'int', arg: 'N', min: 0, max: 65535,
    help: `NFQUEUE number for the replica's output; default ${DEFAULTS.queue}` },
  { key: 'maxFlows', flag: '--max-flows', kind: 'int', arg: 'N', min: 1, max: 4_000_000,
    help: `flows tracked at once; beyond, new flows are refused (counted, reported unprotected); default ${DEFAULTS.maxFlows}` },
  { key: 'flowBuffer', flag: '--flow-buffer', kind: 'bytes', arg: 'BYTES', min: 65536, max: 2 ** 31,
    help: 'client bytes held per flow while the replica lags (k/m/g suffixes); default 256m' },
  { key: 'memory', flag: '--memory', kind: 'bytes', arg: 'BYTES', min: 1 << 20, max: 2 ** 40,
    help: 'client bytes held by all flows together; beyond, the lagging flow is lost (reported); default 1g' },
  { key: 'captureBuffer', flag: '--capture-buffer', kind: 'bytes', arg: 'BYTES', min: 1 << 20, max: 2 ** 31 - 1,
    help: 'kernel capture ring on the mirror port; with GRO on, each slot takes a 64 KiB super-frame, so it holds ~2000 frames; default 128m' },
  { key: 'queueMaxLen', flag: '--queue-maxlen', kind: 'int', arg: 'N', min: 64, max: 1 << 20,
    help: `replica packets the kernel may hold for us; default ${DEFAULTS.queueMaxLen}` },
  { key: 'handshakeTimeoutMs', flag: '--handshake-timeout', kind: 'int', arg: 'MS', min: 100, max: 600000,
    help: 'time for both SYN-ACKs to appear before a flow is declared unprotected; default 10000' },
  { key: 'idleTimeoutS', flag: '--idle-timeout', kind: 'int', arg: 'S', min: 1, max: 30 * 86400,
    help: 'forget a flow silent this long; default 7200' },
  { key: 'statusIntervalS', flag: '--status-interval', kind: 'int', arg: 'S', min: 0, max: 86400,
    help: 'print counters every S seconds (0: only at exit); default 0' },
  { key: 'flowStatsMs', flag: '--flow-stats', kind: 'int', arg: 'MS', min: 0, max: 3600000,
    help: 'log every live flow\'s progress (primary vs replica bytes) every MS; default 0 (off)' },
  { key: 'rtPriority', flag: '--rt-priority', kind: 'int', arg: 'N', min: 0, max: 99,
    help: 'SCHED_FIFO priority of the packet thread, 0 (default) keeps it ordinary; only with a CPU to itself: it starves a service sharing its CPU' },
  { key: 'busyPollUs', flag: '--busy-poll', kind: 'int', arg: 'US', min: 0, max: 10000,
    help: 'after work, the packet thread spins this long before sleeping (fewer wake-ups under load); default 50' },
  { key: 'logFlows', flag: '--log-flows', kind: 'bool',
    help: 'log every flow event (new, synchronised, closed); anomalies are always logged' },
  { key: 'json', flag: '--json', kind: 'bool', help: 'log as JSON lines instead of text' },
];

function parseBytes(v: string): number | undefined {
  const m = /^(\d+)([kmg]?)$/i.exec(v.trim());
  if (!m) return undefined;
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g'];
  return Number(m[1]) * mult;
}

function convert(spec: OptionSpec, raw: unknown, where: string): unknown {
  const name = `${where} ${spec.flag}`;
  switch (spec.kind) {
    case 'bool':
      if (typeof raw === 'boolean') return raw;
      throw configError(`${name} must be true or false`);
    case 'string':
      if (typeof raw === 'string' && raw.length > 0) return raw;
      throw configError(`${name} needs a value`);
    case 'ipv4': {
      const s = String(raw);
      if (!net.isIPv4(s)) throw configError(`${name} '${s}' is not an IPv4 address: give one like 198.18.1.10`);
      const range = ipaddr.parse(s).range();
      if (range === 'unspecified' || range === 'broadcast' || range === 'multicast' || range === 'loopback')
        throw configError(`${name} '${s}' is a ${range} address: give the unicast address clients connect to`);
      return s;
    }
    case 'ports': {
      const parts = Array.isArray(raw) ? raw.map(String) : String(raw).split(',').map((p) => p.trim()).filter(Boolean);
      if (parts.length === 0) throw configError(`${name} is empty: list the service ports, e.g. ${spec.flag} 7000,6379`);
      const ports = parts.map((p) => {
        const n = Number(p);
        if (!Number.isInteger(n) || n < 1 || n > 65535) throw configError(`${name}: '${p}' is not a TCP port (1-65535)`);
        return n;
      });
      if (ports.length > 64) throw configError(`${name}: at most 64 ports`);
      return [...new Set(ports)];
    }
    case 'int':
    case 'bytes': {
      const n = spec.kind === 'bytes' && typeof raw === 'string' ? parseBytes(raw) : Number(raw);
      if (n === undefined || !Number.isInteger(n)) throw configError(`${name} '${String(raw)}' is not ${spec.kind === 'bytes' ? 'a size like 16m' : 'an integer'}`);
      if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max))
        throw configError(`${name} ${n} is out of range: use ${spec.min}..${spec.max}`);
      return n;
    }
  }
}

/** Parse `t2cp backup` arguments (after the subcommand), with an optional --config FILE (JSON, same names in camelCase). */
export function parseBackupArgs(argv: string[]): BackupConfig {
  const values: Partial<Record<keyof BackupConfig, unknown>> = {};
  const byFlag = new Map(BACKUP_OPTIONS.map((o) => [o.flag, o]));
  let file: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [flag, inline] = a.startsWith('--') && a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    if (flag === '--config') {
      file = inline ?? argv[++i];
      if (!file) throw configError('--config needs a file name');
      continue;
    }
    const spec = byFlag.get(flag);
    if (!spec) throw configError(`unknown option '${a}': see t2cp backup --help`);
    if (spec.kind === 'bool') {
      values[spec.key] = true;
      continue;
    }
    const v = inline ?? argv[++i];
    if (v === undefined || (inline === undefined && v.startsWith('--'))) throw configError(`${flag} needs a value (${spec.arg})`);
    values[spec.key] = convert(spec, v, 'option');
  }
  const fromFile: Partial<Record<keyof BackupConfig, unknown>> = {};
  if (file) {
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      throw configError(`config file ${file}: ${(e as Error).message}`);
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw configError(`config file ${file}: expected a JSON object`);
    const byKey = new Map(BACKUP_OPTIONS.map((o) => [o.key as string, o]));
    for (const [k, v] of Object.entries(json)) {
      const spec = byKey.get(k);
      if (!spec) throw configError(`config file ${file}: unknown key '${k}' (known: ${[...byKey.keys()].join(', ')})`);
      fromFile[spec.key] = convert(spec, v, `config file ${file}:`);
    }
  }
  const merged = { ...DEFAULTS, ...fromFile, ...values } as Record<string, unknown>;
  for (const o of BACKUP_OPTIONS) {
    if (o.required && merged[o.key] === undefined) throw configError(`missing ${o.flag} ${o.arg}: ${o.help}`);
  }
  const cfg = merged as unknown as BackupConfig;
  if (!/^[A-Za-z0-9_]{1,10}$/.test(cfg.instance))
    throw configError(`--instance '${cfg.instance}' must be 1-10 letters, digits or _ (it names a TUN device, 15 chars max)`);
  return cfg;
}

export function backupHelp(): string {
  const lines = BACKUP_OPTIONS.map((o) => {
    const left = `  ${o.flag}${o.arg ? ' ' + o.arg : ''}`;
    return `${left.padEnd(28)}${o.required ? '(required) ' : ''}${o.help}`;
  });
  return [
    'usage: t2cp backup --mirror-if IF --vip ADDR --ports LIST [options]',
    '',
    'Runs on the backup host next to an identical copy of the service. Every TCP',
    "connection a client opens to VIP:port on the primary is also opened, fed and",
    "read by the local copy, byte for byte; nothing the local copy sends on those",
    'connections leaves this host. Stops cleanly on SIGINT/SIGTERM, removing its',
    'nft tables, queue and TUN device (the kernel removes them even on a crash).',
    'SIGUSR1 logs the counters at once.',
    '',
    'options:',
    ...lines,
    `  ${'--config FILE'.padEnd(26)}JSON object with the same options in camelCase (${BACKUP_OPTIONS.map((o) => o.key).slice(0, 3).join(', ')}, ...); flags win`,
    `  ${'--help'.padEnd(26)}this text`,
  ].join('\n');
}

export function engineOptions(c: BackupConfig): EngineOptions {
  return {
    mirrorIf: c.mirrorIf,
    vip: c.vip,
    ports: c.ports,
    tunName: `t2cp-${c.instance}`,
    nftTable: `t2cp_${c.instance}`,
    queueNum: c.queue,
    queueMaxLen: c.queueMaxLen,
    captureBuffer: c.captureBuffer,
    maxFlows: c.maxFlows,
    flowBufferLimit: c.flowBuffer,
    memoryLimit: c.memory,
    handshakeTimeoutMs: c.handshakeTimeoutMs,
    idleTimeoutS: c.idleTimeoutS,
    eventBatchMs: 20,
    rtPriority: c.rtPriority,
    busyPollUs: c.busyPollUs,
  };
}
