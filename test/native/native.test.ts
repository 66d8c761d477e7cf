// Native tier: the packet layer's, the mirror capture program's, the
// replication logic's and state machine's and active mode's C++ tests and the parser fuzzer under ASan/UBSan,
// built and run by test/native/run.sh (g++; libFuzzer when clang is installed).

import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));
const FUZZ_SECONDS = 10; // ~4 million inputs; `bash test/native/run.sh --fuzz-seconds S` for a longer search
const RUN_TIMEOUT_MS = 300_000; // build (~50 s on two CPUs, with the sanitizers) + tests + fuzzing, with room for a slow machine

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
}

function runNative(): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['test/native/run.sh', '--fuzz-seconds', String(FUZZ_SECONDS)], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: RUN_TIMEOUT_MS,
      killSignal: 'SIGKILL',
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, output }));
  });
}

describe('native packet layer (ASan/UBSan)', () => {
  let result: RunResult;

  beforeAll(async () => {
    result = await runNative();
  }, RUN_TIMEOUT_MS + 10_000);

  it('packet_test and the fuzzer pass', () => {
    expect(result.output, result.output).toMatch(/packet_test: \d+ passed, 0 failed/);
    expect(result.signal, result.output).toBeNull();
    expect(result.code, result.output).toBe(0);
  });

  // run.sh prints "NAME: N passed, N failed" for each, last, after the fuzzer.
  const programs: [string, string][] = [
    ['capture_test', "the mirror capture keeps what the engine reads of the primary's frames"],
    ['replication_test', 'stream buffer, sequence map'],
    ['compare_test', "the replica's output against the primary's, as both arrive"],
    ['udp_ledger_test', "the clients' datagrams paired with the recorder's records, held in order, missing ones asked"],
    ['udp_compare_test', "the replica's datagrams against the primary's, either first"],
    ['processor_test', 'the replication state machine on crafted segments'],
    ['active_mode_test', 'translation after a takeover'],
    ['active_mode_kernel_test', 'the kernel translator rewrites as the engine does'],
  ];
  for (const [name, what] of programs) {
    it(`${name} passes (${what})`, () => {
      const m = new RegExp(`${name}: (\\d+) passed, (\\d+) failed`).exec(result.output);
      expect(m, result.output).not.toBeNull();
      expect(Number(m?.[1])).toBeGreaterThan(0);
      expect(Number(m?.[2]), result.output).toBe(0);
    });
  }

  it('the fuzzer actually executed inputs', () => {
    // libFuzzer: "Done N runs in S second(s)"; standalone driver: "fuzz_packet standalone: N runs".
    const m = /Done (\d+) runs|fuzz_packet standalone: (\d+) runs/.exec(result.output);
    expect(m, result.output).not.toBeNull();
    const runs = Number(m?.[1] ?? m?.[2]);
    expect(runs).toBeGreaterThan(1000);
  });
});
