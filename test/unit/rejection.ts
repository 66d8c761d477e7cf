// The T2cpError a promise rejects with (a unit test then checks its code and message); fails the
// test when the promise resolves or rejects with anything else.
import { expect } from 'vitest';
import { T2cpError } from '../../src/errors.js';

export async function rejectionOf(p: Promise<unknown>): Promise<T2cpError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(T2cpError);
    return e as T2cpError;
  }
  throw new Error('expected an error');
}
