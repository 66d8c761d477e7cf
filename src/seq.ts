// TCP sequence-space comparisons, as include/net/tcp.h defines them. The only
// place TypeScript compares sequence numbers (events, tests, tools).

/** seq1 strictly before seq2, modulo 2^32. */
export function before(seq1: number, seq2: number): boolean {
  return ((seq1 - seq2) | 0) < 0;
}

/** seq2 strictly after seq1 (argument order as in the kernel macro). */
export function after(seq2: number, seq1: number): boolean {
  return before(seq1, seq2);
}

/** seq2 <= seq1 <= seq3, modulo 2^32. */
export function between(seq1: number, seq2: number, seq3: number): boolean {
  return ((seq3 - seq2) >>> 0) >= ((seq1 - seq2) >>> 0);
}
