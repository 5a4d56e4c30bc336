/**
 * MurmurHash3 (x86, 32-bit), Austin Appleby's public-domain design, written here from its
 * description. Strings are hashed as their UTF-8 bytes, encoded on the fly (no Buffer is made),
 * so `hashString(s)` equals `hashBytes(Buffer.from(s))`; lone surrogates count as U+FFFD like
 * Buffer.from does. Used for request keys (every pick of ring-hash and maglev) and for ring
 * points and Maglev permutations (on update). Deterministic across processes and machines, so
 * every proxy maps a key to the same endpoint.
 */

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

function mixK(k: number): number {
  k = Math.imul(k, C1);
  k = (k << 15) | (k >>> 17);
  return Math.imul(k, C2);
}

function mixH(h: number, k: number): number {
  h ^= mixK(k);
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function finish(h: number, k: number, tail: number, len: number): number {
  if (tail > 0) h ^= mixK(k);
  h ^= len;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** MurmurHash3 x86_32 of bytes; an unsigned 32-bit integer. */
export function hashBytes(b: Uint8Array, seed = 0): number {
  let h = seed | 0;
  const len = b.length;
  const blocks = len & ~3;
  let i = 0;
  for (; i < blocks; i += 4) h = mixH(h, b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24));
  let k = 0;
  const tail = len & 3;
  if (tail === 3) k ^= b[i + 2]! << 16;
  if (tail >= 2) k ^= b[i + 1]! << 8;
  if (tail >= 1) k ^= b[i]!;
  return finish(h, k, tail, len);
}

/** MurmurHash3 x86_32 of the string's UTF-8 bytes; an unsigned 32-bit integer. */
export function hashString(s: string, seed = 0): number {
  let h = seed | 0;
  let k = 0;
  let shift = 0;
  let len = 0;
  const n = s.length;
  for (let i = 0; i < n; i++) {
    let c = s.charCodeAt(i);
    if (shift === 0 && i + 3 < n) {
      // Fast path: four ASCII characters make one block.
      const c1 = s.charCodeAt(i + 1);
      const c2 = s.charCodeAt(i + 2);
      const c3 = s.charCodeAt(i + 3);
      if ((c | c1 | c2 | c3) < 0x80) {
        h = mixH(h, c | (c1 << 8) | (c2 << 16) | (c3 << 24));
        len += 4;
        i += 3;
        continue;
      }
    }
    if (c < 0x80) {
      // The common case (ASCII): one byte.
      k |= c << shift;
      len++;
      if (shift === 24) {
        h = mixH(h, k);
        k = 0;
        shift = 0;
      } else shift += 8;
      continue;
    }
    let nbytes: number;
    if (c < 0x800) nbytes = 2;
    else if (c >= 0xd800 && c <= 0xdfff) {
      const d = i + 1 < n ? s.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
        nbytes = 4;
      } else {
        c = 0xfffd;
        nbytes = 3;
      }
    } else nbytes = 3;
    for (let j = 0; j < nbytes; j++) {
      let byte: number;
      if (j === 0) byte = nbytes === 2 ? 0xc0 | (c >> 6) : nbytes === 3 ? 0xe0 | (c >> 12) : 0xf0 | (c >> 18);
      else byte = 0x80 | ((c >> (6 * (nbytes - 1 - j))) & 0x3f);
      k |= byte << shift;
      len++;
      if (shift === 24) {
        h = mixH(h, k);
        k = 0;
        shift = 0;
      } else shift += 8;
    }
  }
  return finish(h, k, shift, len);
}

/** A well-mixed 32-bit value from two 32-bit inputs (murmur3's finalizer over their blend). */
export function mix32(a: number, b: number): number {
  let h = (a ^ Math.imul(b + 0x9e3779b9, 0x85ebca6b)) | 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Hashes a request key given as a string or bytes. */
export function hashKey(key: string | Uint8Array, seed = 0): number {
  return typeof key === 'string' ? hashString(key, seed) : hashBytes(key, seed);
}
