// One testbed and one scratch directory for a describe block (or for each of
// its tests), built before and removed after, even when a test fails.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';
import { createTestbed, type Testbed, type TestbedOptions } from '../../scripts/testbed.js';

export interface Lab {
  tb: Testbed;
  dir: string;
}

/**
 * Registers the hooks and returns the lab they fill: read `lab.tb` and
 * `lab.dir` inside tests, not at collection time. `setup` runs after the
 * testbed is up (a disturbance, services shared by the tests...).
 */
export function useLab(name: string, opts: { testbed?: TestbedOptions; perTest?: boolean; setup?: (lab: Lab) => Promise<void> } = {}): Lab {
  const lab = {} as Lab;
  const [before, after] = opts.perTest ? [beforeEach, afterEach] : [beforeAll, afterAll];
  before(async () => {
    lab.tb = await createTestbed(opts.testbed);
    lab.dir = fs.mkdtempSync(path.join(os.tmpdir(), `t2cp-${name}-`));
    await opts.setup?.(lab);
  });
  after(async () => {
    await lab.tb?.teardown();
    // T2CP_KEEP_LAB=1 keeps the logs and captures for a post-mortem.
    if (lab.dir && process.env.T2CP_KEEP_LAB) console.log(`lab kept: ${lab.dir}`);
    else if (lab.dir) fs.rmSync(lab.dir, { recursive: true, force: true });
  });
  return lab;
}
