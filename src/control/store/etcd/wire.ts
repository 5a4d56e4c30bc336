/**
 * The wire format of etcd 3.4's JSON gateway (grpc-gateway in front of the v3 gRPC API), and the
 * conversions between it and the client's types. No I/O here.
 *
 * What the gateway does that code must not forget (checked against etcd 3.4.23; docs/operations.md):
 * - every int64/uint64 is a JSON string (`"revision":"12"`); lease IDs exceed 2^53, so they stay
 *   strings end to end (a rounded ID answers "lease not found", which looks like a lost lease);
 * - a field at its zero value is left out: no `kvs`/`count` on an empty range, no `succeeded` on a
 *   failed txn, no `type` on a PUT event, no `TTL` for a dead lease. Every read below defaults;
 * - keys and values are standard, padded base64; a prefix's range_end is computed on bytes.
 */
import { SkeinError } from '../../../core/errors.js';

export interface KeyValue {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  version: number;
  /** The lease the key is bound to (a decimal string: IDs exceed 2^53), or null. */
  lease: string | null;
}

/** A key/value as the gateway writes it (base64 bytes, int64 as strings, zero values left out). */
export interface WireKv {
  key?: string;
  value?: string;
  create_revision?: string;
  mod_revision?: string;
  version?: string;
  lease?: string;
}

export interface WireHeader {
  cluster_id?: string;
  member_id?: string;
  revision?: string;
  raft_term?: string;
}

/** UTF-8 text to standard, padded base64 (the only form the gateway accepts). */
export function encode(s: string): string {
  return Buffer.from(s, 'utf8').toString('base64');
}

/** Base64 from the gateway to UTF-8 text; an omitted field is the empty string. */
export function decode(b: string | undefined): string {
  return b === undefined ? '' : Buffer.from(b, 'base64').toString('utf8');
}

/**
 * The range_end (base64) that selects every key starting with `prefix`: the prefix's bytes with
 * the last byte below 0xff incremented and what follows it dropped. The empty prefix (or one of
 * 0xff bytes only) selects every key: range_end "\0".
 */
export function prefixEnd(prefix: string): string {
  const b = Buffer.from(prefix, 'utf8');
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i]! < 0xff) {
      const end = Buffer.from(b.subarray(0, i + 1));
      end[i] = end[i]! + 1;
      return end.toString('base64');
    }
  }
  return Buffer.from([0]).toString('base64');
}

/**
 * An int64 from the gateway as a JS number (revisions, versions, TTLs, counts: far below 2^53 in
 * practice). Omitted means 0. Never use this for a lease or member ID.
 */
export function int(s: string | number | undefined, what: string): number {
  if (s === undefined) return 0;
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw new SkeinError('SKEIN_E_STORE', `etcd answered a ${what} that is not a safe integer: ${JSON.stringify(s)}`, { field: what });
  return n;
}

/** A uint64/int64 ID (lease, member) as a decimal string; omitted or "0" means none. */
export function id(s: string | undefined): string | null {
  return s === undefined || s === '0' ? null : s;
}

export function parseKv(k: WireKv): KeyValue {
  return {
    key: decode(k.key),
    value: decode(k.value),
    createRevision: int(k.create_revision, 'create_revision'),
    modRevision: int(k.mod_revision, 'mod_revision'),
    version: int(k.version, 'version'),
    lease: id(k.lease),
  };
}

/** The header's revision: the store revision the answer was taken at. */
export function headerRevision(h: WireHeader | undefined): number {
  return int(h?.revision, 'header.revision');
}

/** A lease ID as the client's API takes it: a decimal string of a positive int64. */
export function checkLeaseId(leaseId: string, field = 'lease'): string {
  if (typeof leaseId !== 'string' || !/^[1-9][0-9]{0,18}$/.test(leaseId) || BigInt(leaseId) > 0x7fffffffffffffffn) {
    throw new SkeinError('SKEIN_E_VALIDATION', `${field}: a lease ID is the decimal string etcd gave (a positive int64), not ${JSON.stringify(leaseId)}`, { field });
  }
  return leaseId;
}

export function checkKey(key: string, field = 'key'): string {
  if (typeof key !== 'string' || key === '') throw new SkeinError('SKEIN_E_VALIDATION', `${field}: a key is a non-empty string, not ${JSON.stringify(key)}`, { field });
  return key;
}

export function checkRevision(rev: number, field: string, min = 0): number {
  if (!Number.isSafeInteger(rev) || rev < min) throw new SkeinError('SKEIN_E_VALIDATION', `${field}: a revision is an integer >= ${min}, not ${String(rev)}`, { field });
  return rev;
}
