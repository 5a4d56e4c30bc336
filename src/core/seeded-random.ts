/**
 * A seeded pseudo-random generator (mulberry32): the same seed gives the same sequence, so a fuzz
 * case or a jittered schedule can be replayed. Not for secrets. Numbers in [0, 1), like
 * Math.random, for any place that takes an injected `rng`.
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
