import { describe, expect, it } from 'vitest';
import { after, before, between } from '../../src/seq.js';

describe('sequence arithmetic (include/net/tcp.h semantics)', () => {
  it('orders across the 2^32 wrap', () => {
    expect(before(0xfffffff0, 0x10)).toBe(true);
    expect(after(0x10, 0xfffffff0)).toBe(true);
    expect(before(0x10, 0xfffffff0)).toBe(false);
    expect(before(5, 5)).toBe(false);
    expect(after(5, 5)).toBe(false);
  });
  it('between is inclusive and wraps', () => {
    expect(between(0, 0xfffffff0, 0x10)).toBe(true);
    expect(between(0xfffffff0, 0xfffffff0, 0x10)).toBe(true);
    expect(between(0x10, 0xfffffff0, 0x10)).toBe(true);
    expect(between(0x11, 0xfffffff0, 0x10)).toBe(false);
    expect(between(0xffffffef, 0xfffffff0, 0x10)).toBe(false);
  });
  it('half the space ahead is after, half behind is before', () => {
    const base = 0x80000000;
    expect(after((base + 0x7fffffff) >>> 0, base)).toBe(true);
    expect(before((base + 0x80000001) >>> 0, base)).toBe(true);
  });
});
