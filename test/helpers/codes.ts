// The stable code a call ended with: the WritError's code, or 'resolved'. Anything else is a test failure.
import { WritError } from '../../broker/errors';
import type { WritErrorCode } from '../../broker/errors';

export async function codeOf(p: Promise<unknown>): Promise<WritErrorCode | 'resolved'> {
  try {
    await p;
    return 'resolved';
  } catch (e) {
    if (e instanceof WritError) return e.code;
    throw e;
  }
}

/** What a synchronous call threw (undefined if it returned), for asserting on the error whole. */
export function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  return undefined;
}
