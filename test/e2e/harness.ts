// Helpers for the e2e tests. The pieces the demo and the benchmarks share
// live in scripts/ (processes, captures, replica comparison); this file
// gathers them for the tests.
export { repoRoot, distScript, collect, waitForExit, startService, runClient, type ClientRun, type ClientOptions } from '../../scripts/processes.js';
export { readLog, compareReplicas, type ConnectionCheck, type ReplicaReport, type ClientLogLine, type ServiceLogLine } from '../../scripts/replica-check.js';
export { startCapture, readPackets, countPackets, frameLengths, type Capture } from '../../scripts/capture.js';
export type { Workload } from '../../scripts/client.js';
