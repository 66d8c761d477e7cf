// The option-table parser of every subcommand (backup, gateway, primary,
// takeover): one table per command drives flag parsing, `--config FILE` (a JSON
// object with the same names in camelCase; flags win), defaults, validation and
// --help, so they cannot drift apart. Every error names the option and the fix
// and is a T2CP_CONFIG error (exit code 2). Pure: no I/O but reading --config.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import ipaddr from 'ipaddr.js';
import { configError } from './errors.js';

/** An Ethernet address as ip(8) writes it: six lowercase hex pairs joined by colons. */
export const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/**
 * ipv4: a unicast service address (not loopback); endpoint: a peer ADDR:PORT
 * (loopback allowed, for one-host setups and tests); bind: a local ADDR:PORT
 * to listen on (0.0.0.0 and port 0 allowed); choice: one of `choices`; mac: MAC_RE.
 * 'ports': at most 64 ports (TCP: a rule each); 'port-ranges': ranges allowed and counted as one
 * each, at most 64 of them (UDP: a media range of a hundred ports is one rule and one filter term).
 */
export type OptionKind = 'string' | 'ipv4' | 'ports' | 'port-ranges' | 'int' | 'bytes' | 'bool' | 'endpoint' | 'bind' | 'choice' | 'mac';

export interface Endpoint {
  address: string;
  port: number;
}

export interface OptionSpec<C> {
  key: keyof C & string;
  flag: string;
  kind: OptionKind;
  arg?: string;
  help: string;
  required?: boolean;
  min?: number;
  max?: number;
  /** endpoint/bind: the port used when the value is an address alone. */
  defaultPort?: number;
  choices?: readonly string[];
}

export interface CommandSpec<C> {
  name: string;
  synopsis: string;
  /** Lines of --help between the synopsis and the options. */
  about: string[];
  options: OptionSpec<C>[];
  defaults: Partial<C>;
  /** Checks across options, after defaults; throws configError. */
  validate?: (c: C) => void;
}

/** Where each role serves Prometheus metrics when --metrics names an address alone. */
export const METRICS_PORTS = { backup: 9465, gateway: 9466, primary: 9467 } as const;

/** --metrics ADDR:PORT of a role (off by default). */
export function metricsOption<C extends { metrics?: Endpoint }>(role: keyof typeof METRICS_PORTS): OptionSpec<C> {
  return {
    key: 'metrics' as keyof C & string, flag: '--metrics', kind: 'bind', arg: 'ADDR:PORT', defaultPort: METRICS_PORTS[role],
    help: `serve Prometheus metrics (t2cp_...) at http://ADDR:PORT/metrics; port default ${METRICS_PORTS[role]}; off by default`,
  };
}

/** --events PATH and --notify PROGRAM of a role (both off by default): docs/operations.md. */
export function eventOptions<C extends { events?: string; notify?: string }>(): OptionSpec<C>[] {
  return [
    { key: 'events' as keyof C & string, flag: '--events', kind: 'string', arg: 'PATH',
      help: 'serve this role\'s events (flows, state changes, digests) as JSON lines on a Unix socket at PATH; follow with `t2cp events PATH`; off by default' },
    { key: 'notify' as keyof C & string, flag: '--notify', kind: 'string', arg: 'PROGRAM',
      help: 'run PROGRAM ROLE INSTANCE STATE EPOCH at each state change of this role (as keepalived\'s notify); off by default' },
  ];
}

/** Runs of consecutive ports, ascending ([first, last] each): a range is one nft rule and one filter term. */
export function portRuns(ports: number[]): [number, number][] {
  const runs: [number, number][] = [];
  for (const p of [...new Set(ports)].sort((a, b) => a - b)) {
    const last = runs[runs.length - 1];
    if (last && last[1] + 1 === p) last[1] = p;
    else runs.push([p, p]);
  }
  return runs;
}

/** A port list as an operator writes it: "5060,10000-10100". */
export function portListText(ports: number[]): string {
  return portRuns(ports).map(([a, b]) => (a === b ? String(a) : `${a}-${b}`)).join(',');
}

export function endpointText(e: Endpoint): string {
  return `${e.address}:${e.port}`;
}

function parseBytes(v: string): number | undefined {
  const m = /^(\d+)([kmg]?)$/i.exec(v.trim());
  if (!m) return undefined;
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g'];
  return Number(m[1]) * mult;
}

function convertEndpoint<C>(spec: OptionSpec<C>, raw: unknown, name: string): Endpoint {
  const s = String(raw).trim();
  const m = /^([^:]+)(?::(\d+))?$/.exec(s);
  const example = spec.kind === 'bind' ? '0.0.0.0:7390' : '192.0.2.1:7390';
  if (!m) throw configError(`${name} '${s}' is not ADDR:PORT: give one like ${example}`);
  const address = m[1]!;
  if (!net.isIPv4(address)) throw configError(`${name} '${s}': '${address}' is not an IPv4 address: give one like ${example}`);
  const port = m[2] === undefined ? spec.defaultPort : Number(m[2]);
  if (port === undefined) throw configError(`${name} '${s}' has no port: give ADDR:PORT, e.g. ${example}`);
  const minPort = spec.kind === 'bind' ? 0 : 1;
  if (!Number.isInteger(port) || port < minPort || port > 65535) throw configError(`${name} '${s}': port ${port} is out of range: use ${minPort}..65535`);
  if (spec.kind === 'endpoint') {
    const range = ipaddr.parse(address).range();
    if (range === 'unspecified' || range === 'broadcast' || range === 'multicast')
      throw configError(`${name} '${s}' is a ${range} address: give the peer's unicast address`);
  }
  return { address, port };
}

function convert<C>(spec: OptionSpec<C>, raw: unknown, where: string): unknown {
  const name = `${where} ${spec.flag}`;
  switch (spec.kind) {
    case 'bool':
      if (typeof raw === 'boolean') return raw;
      throw configError(`${name} must be true or false`);
    case 'string':
      if (typeof raw === 'string' && raw.length > 0) return raw;
      throw configError(`${name} needs a value`);
    case 'choice':
      if (typeof raw === 'string' && spec.choices!.includes(raw)) return raw;
      throw configError(`${name} '${String(raw)}' is not one of ${spec.choices!.join(', ')}`);
    case 'mac': {
      const s = String(raw).toLowerCase();
      if (MAC_RE.test(s)) return s;
      throw configError(`${name} '${String(raw)}' is not a MAC address: give one like 02:00:00:00:00:01`);
    }
    case 'endpoint':
    case 'bind':
      if (typeof raw === 'object' && raw !== null && 'address' in raw && 'port' in raw)
        return convertEndpoint(spec, `${String(raw.address)}:${String(raw.port)}`, name);
      return convertEndpoint(spec, raw, name);
    case 'ipv4': {
      const s = String(raw);
      if (!net.isIPv4(s)) throw configError(`${name} '${s}' is not an IPv4 address: give one like 198.18.1.10`);
      const range = ipaddr.parse(s).range();
      if (range === 'unspecified' || range === 'broadcast' || range === 'multicast' || range === 'loopback')
        throw configError(`${name} '${s}' is a ${range} address: give the unicast address clients connect to`);
      return s;
    }
    case 'ports':
    case 'port-ranges': {
      const parts = Array.isArray(raw) ? raw.map(String) : String(raw).split(',').map((p) => p.trim()).filter(Boolean);
      if (parts.length === 0) throw configError(`${name} is empty: list the service ports, e.g. ${spec.flag} 7000,6379`);
      const port = (p: string, whole: string): number => {
        const n = Number(p);
        if (p === '' || !Number.isInteger(n) || n < 1 || n > 65535) throw configError(`${name}: '${whole}' is not a port (1-65535) or a range of them (5000-5010)`);
        return n;
      };
      const ports = parts.flatMap((p) => {
        const [from, to, extra] = p.split('-');
        if (to === undefined) return [port(p, p)];
        const [a, b] = [port(from!.trim(), p), port(to.trim(), p)];
        if (extra !== undefined || b < a) throw configError(`${name}: '${p}' is not a range: give LOW-HIGH, LOW <= HIGH`);
        return Array.from({ length: b - a + 1 }, (_, i) => a + i);
      });
      const unique = [...new Set(ports)];
      if (spec.kind === 'ports' && unique.length > 64) throw configError(`${name}: ${unique.length} ports, at most 64`);
      const runs = portRuns(unique).length;
      if (runs > 64) throw configError(`${name}: ${runs} ports or ranges of consecutive ports, at most 64`);
      return unique;
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

function readConfigFile<C>(cmd: CommandSpec<C>, file: string): Partial<Record<keyof C, unknown>> {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw configError(`config file ${file}: ${(e as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw configError(`config file ${file}: expected a JSON object`);
  const byKey = new Map(cmd.options.map((o) => [o.key as string, o]));
  const out: Partial<Record<keyof C, unknown>> = {};
  for (const [k, v] of Object.entries(json)) {
    const spec = byKey.get(k);
    if (!spec) throw configError(`config file ${file}: unknown key '${k}' (known: ${[...byKey.keys()].join(', ')})`);
    out[spec.key] = convert(spec, v, `config file ${file}:`);
  }
  return out;
}

/** Parse a subcommand's arguments (after the subcommand name), with an optional --config FILE. */
export function parseOptions<C>(cmd: CommandSpec<C>, argv: string[]): C {
  const values: Partial<Record<keyof C, unknown>> = {};
  const byFlag = new Map(cmd.options.map((o) => [o.flag, o]));
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
    if (!spec) throw configError(`unknown option '${a}': see t2cp ${cmd.name} --help`);
    if (spec.kind === 'bool') {
      values[spec.key] = true;
      continue;
    }
    const v = inline ?? argv[++i];
    if (v === undefined || (inline === undefined && v.startsWith('--'))) throw configError(`${flag} needs a value (${spec.arg})`);
    values[spec.key] = convert(spec, v, 'option');
  }
  const fromFile = file ? readConfigFile(cmd, file) : {};
  const merged = { ...cmd.defaults, ...fromFile, ...values } as Record<string, unknown>;
  for (const o of cmd.options) {
    if (o.required && merged[o.key] === undefined)
      throw configError(`missing ${o.flag} ${o.arg}${file ? ` (or key '${o.key}' in config file ${file})` : ''}: ${o.help}`);
  }
  const cfg = merged as unknown as C;
  cmd.validate?.(cfg);
  return cfg;
}

export function helpText<C>(cmd: CommandSpec<C>): string {
  const lines = cmd.options.map((o) => {
    const left = `  ${o.flag}${o.arg ? ' ' + o.arg : ''}`;
    return `${left.padEnd(28)}${o.required ? '(required) ' : ''}${o.help}`;
  });
  return [
    cmd.synopsis,
    '',
    ...cmd.about,
    '',
    'options:',
    ...lines,
    `  ${'--config FILE'.padEnd(26)}JSON object with the same options in camelCase (${cmd.options.map((o) => o.key).slice(0, 3).join(', ')}, ...); flags win`,
    `  ${'--help'.padEnd(26)}this text`,
  ].join('\n');
}

/** Instance names become nft table and TUN device names (15 characters at most). */
export function checkInstance(instance: string): void {
  if (!/^[A-Za-z0-9_]{1,10}$/.test(instance))
    throw configError(`--instance '${instance}' must be 1-10 letters, digits or _ (it names a TUN device, 15 chars max)`);
}
