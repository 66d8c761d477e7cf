// Before any test: compile the TypeScript (e2e tests run dist/ programs as
// separate processes inside network namespaces) and type-check the tests
// themselves (vitest strips types without checking them). A type error
// anywhere fails the run.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../', import.meta.url));

function tsc(project: string): void {
  const r = spawnSync('npx', ['--no-install', 'tsc', '-p', project], { cwd: root, encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`tsc -p ${project} failed:\n${`${r.stdout}${r.stderr}`.trim()}`);
}

export default function setup(): void {
  tsc('.');
  tsc('tsconfig.test.json');
}
