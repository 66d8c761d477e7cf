// Compiles the TypeScript once before any test: e2e tests run dist/scripts/*.js as separate
// processes inside network namespaces, so they need the JavaScript, not the sources.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../', import.meta.url));
/** Scripts the e2e tests start as processes; they must be compiled from the current sources. */
const NEEDED = ['service', 'client', 'protocol'];

export default function setup(): void {
  const r = spawnSync('npx', ['--no-install', 'tsc', '-p', '.'], { cwd: root, encoding: 'utf8', timeout: 300_000 });
  if (r.status === 0) return;
  // tsc still emits JavaScript on type errors; a type error elsewhere in the tree must not stop
  // the tests of the parts that did compile, but stale or missing scripts must.
  const stale = NEEDED.filter((n) => {
    const js = `${root}dist/scripts/${n}.js`;
    return !fs.existsSync(js) || fs.statSync(js).mtimeMs < fs.statSync(`${root}scripts/${n}.ts`).mtimeMs;
  });
  const diagnostics = `${r.stdout}${r.stderr}`.trim();
  if (stale.length > 0) throw new Error(`tsc -p . failed and left stale: ${stale.join(', ')}\n${diagnostics}`);
  console.warn(`global-setup: tsc -p . reported errors (scripts compiled anyway):\n${diagnostics}`);
}
