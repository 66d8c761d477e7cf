import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // e2e tests build namespaces and move real traffic: they share the machine's 2 CPUs.
    fileParallelism: false,
    // Child processes, not worker threads: the testbed's signal and exit handlers need a process.
    pool: 'forks',
  },
});
