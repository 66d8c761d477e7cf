// The shared key of the control plane, read once at start from --key-file.
// The same file goes on the gateway, the primary and the backup.
//
// Format: either hex text (at least 32 hex digits = 16 bytes; whitespace and
// newlines around it ignored), e.g. `openssl rand -hex 32 > FILE`, or raw
// bytes (at least 16), used exactly as stored, e.g.
// `head -c 32 /dev/urandom > FILE`. Text that is all hex digits but too short
// or of odd length is refused rather than taken as raw bytes: it is almost
// surely a hex key typed wrong.
//
// Permissions: a key file readable or writable by group or others is used,
// with a warning. Refusing it (as ssh does) was weighed and not chosen: a
// refusal at 3 a.m. on a failover host, because a config tool reset a mode,
// costs more than the exposure it prevents; the warning names the chmod.
import { readFileSync, statSync } from 'node:fs';
import { configError } from '../errors.js';

export const MIN_KEY_BYTES = 16;

export interface LoadedKey {
  key: Buffer;
  /** Set when the file's mode lets group or others read or write it. */
  warning?: string;
}

export function parseKey(content: Buffer, file: string): Buffer {
  const text = content.toString('latin1').trim();
  if (/^[0-9a-fA-F]+$/.test(text)) {
    if (text.length % 2 !== 0)
      throw configError(`key file ${file}: ${text.length} hex digits, an odd number: write whole bytes, e.g. \`openssl rand -hex 32 > ${file}\``);
    if (text.length < MIN_KEY_BYTES * 2)
      throw configError(`key file ${file}: ${text.length} hex digits is too short (at least ${MIN_KEY_BYTES * 2}): make one with \`openssl rand -hex 32 > ${file}\``);
    return Buffer.from(text, 'hex');
  }
  if (content.length < MIN_KEY_BYTES)
    throw configError(`key file ${file}: ${content.length} bytes is too short (at least ${MIN_KEY_BYTES} raw bytes or ${MIN_KEY_BYTES * 2} hex digits): make one with \`openssl rand -hex 32 > ${file}\``);
  return Buffer.from(content);
}

/** Read --key-file; a T2CP_CONFIG error naming the file and the fix when it cannot serve. */
export function loadKey(file: string): LoadedKey {
  let content: Buffer;
  let mode: number;
  try {
    content = readFileSync(file);
    mode = statSync(file).mode;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw configError(`key file ${file} cannot be read (${code}): pass --key-file with the shared key, made once with \`openssl rand -hex 32 > ${file}; chmod 600 ${file}\` and copied to the gateway, primary and backup`);
  }
  const key = parseKey(content, file);
  const loose = mode & 0o077;
  return loose
    ? { key, warning: `key file ${file} is accessible to group or others (mode ${(mode & 0o777).toString(8)}): anyone who reads it can order a takeover; run chmod 600 ${file}` }
    : { key };
}
