// Logging: one line per record, text or JSON lines, always naming the
// instance (and the flow, when a record is about one). The addon never
// prints; what it has to say arrives here as events and counters.

export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export function createLogger(instance: string, json: boolean, out: NodeJS.WritableStream = process.stdout): Logger {
  const write = (level: string, msg: string, fields: Record<string, unknown> = {}) => {
    if (json) {
      out.write(JSON.stringify({ t: new Date().toISOString(), level, instance, msg, ...fields }) + '\n');
      return;
    }
    const kv = Object.entries(fields)
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join(' ');
    out.write(`${new Date().toISOString()} t2cp[${instance}] ${level === 'info' ? '' : level + ': '}${msg}${kv ? ' ' + kv : ''}\n`);
  };
  return {
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
  };
}
