/** Helpers of the tests that follow endpoint sets (not used by the code under test). */
import { EndpointSet, type Endpoint } from './endpoint.js';

/**
 * How many times `EndpointSet.list()` (the O(n) read) is called while `fn` runs: a code path that
 * follows one change in O(changes) makes none (issue 11 §6).
 */
export function listCalls(fn: () => void): number {
  const proto = EndpointSet.prototype as unknown as { list: () => readonly Endpoint[] };
  const original = proto.list;
  let calls = 0;
  proto.list = function (this: EndpointSet) {
    calls++;
    return original.call(this);
  };
  try {
    fn();
  } finally {
    proto.list = original;
  }
  return calls;
}
