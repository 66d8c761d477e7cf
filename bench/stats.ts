// Figures of the bench's trials.

/** The median (the lower middle of an even count); NaN of nothing. */
export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)]! : NaN;
};
