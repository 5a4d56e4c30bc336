/**
 * Turns one query message into one response message (or none), independent of sockets.
 *
 * The hot path reads the header and question from the raw bytes, looks the encoded response up
 * in a cache keyed by (lower-cased name, type, EDNS, size limit), and splices the query's id and
 * question into a copy. A miss resolves the name in the zone and encodes with dns-packet; the
 * entry holds a few rotations of the answer order, served in turn. Entries of a service's names
 * are dropped when the registry reports a change to that service.
 */
import dnsPacket, { type Answer, type OptAnswer, type Packet } from 'dns-packet';
import type { Zone, Resolution } from './zone.js';
import {
  CLASSIC_UDP_PAYLOAD,
  Flag,
  HEADER_LEN,
  MAX_MESSAGE,
  MAX_UDP_PAYLOAD,
  QClass,
  QType,
  Rcode,
  isResponse,
  keyLabels,
  opcodeOf,
  readQuestion,
  readSimpleOpt,
  spliceResponse,
  type Edns,
  type RawQuestion,
} from './wire.js';

export type Transport = 'udp' | 'tcp';

/** How many answer orders an entry keeps (fewer when it has fewer answers). */
const MAX_ROTATIONS = 8;
/** Rcodes go up to 4095 with EDNS; we only ever send 0-5 and BADVERS (16). */
const RCODE_SLOTS = 17;

interface Entry {
  readonly bodies: readonly Buffer[];
  readonly rcode: number;
  /** The rotation the next response gets. */
  next: number;
}

export interface ResponderOptions {
  zone: Zone;
  /** Names (not name-type pairs) the cache holds before it drops the oldest. Default 10,000. */
  maxCacheEntries?: number;
}

export class Responder {
  /** Responses sent, by transport and rcode (the metrics read these; no work on the hot path). */
  readonly counts: Readonly<Record<Transport, number[]>> = { udp: new Array<number>(RCODE_SLOTS).fill(0), tcp: new Array<number>(RCODE_SLOTS).fill(0) };
  cacheHits = 0;
  private readonly zone: Zone;
  private readonly maxEntries: number;
  /** Wire-format name -> (type, EDNS, limit) -> entry. */
  private readonly cache = new Map<string, Map<number, Entry>>();

  constructor(opts: ResponderOptions) {
    this.zone = opts.zone;
    this.maxEntries = opts.maxCacheEntries ?? 10_000;
  }

  get cacheSize(): number {
    return this.cache.size;
  }

  clear(): void {
    this.cache.clear();
  }

  /** Drops cached responses that depend on a service's instances. */
  invalidate(service: string): void {
    for (const key of this.zone.keysOf(service)) this.cache.delete(key);
  }

  /**
   * The response to one message, or null when it gets none: shorter than a header, or itself a
   * response (answering those invites reflection loops).
   */
  respond(msg: Buffer, transport: Transport): Buffer | null {
    if (msg.length < HEADER_LEN || isResponse(msg)) return null;
    if (opcodeOf(msg) !== 0) return this.fail(msg, transport, Rcode.NOTIMP, null, null);
    const q = msg.readUInt16BE(4) === 1 ? readQuestion(msg) : null;
    if (q === null) return this.fail(msg, transport, Rcode.FORMERR, null, null);
    const edns = readEdns(msg, q);
    if (edns === 'malformed') return this.fail(msg, transport, Rcode.FORMERR, q, null);
    if (edns !== null && edns.version !== 0) return this.fail(msg, transport, Rcode.BADVERS, q, edns);
    if (q.qtype === QType.OPT) return this.fail(msg, transport, Rcode.FORMERR, q, edns);
    // Another class than IN, or a zone transfer: not something this server offers.
    if ((q.qclass !== QClass.IN && q.qclass !== QClass.ANY) || q.qtype === QType.AXFR || q.qtype === QType.IXFR) {
      return this.fail(msg, transport, Rcode.REFUSED, q, edns);
    }

    const limit = transport === 'tcp' ? MAX_MESSAGE : edns === null ? CLASSIC_UDP_PAYLOAD : Math.min(MAX_UDP_PAYLOAD, Math.max(CLASSIC_UDP_PAYLOAD, edns.payload));
    const variant = (q.qtype * 4 + (edns === null ? 0 : edns.dnssecOk ? 2 : 1)) * 65536 + limit;
    let byVariant = q.ascii ? this.cache.get(q.key) : undefined;
    let entry = byVariant?.get(variant);
    if (entry !== undefined) {
      this.cacheHits++;
    } else {
      const res = this.zone.resolve(keyLabels(q.key), q.qtype);
      const bodies = encodeBodies(res, edns, limit, q.end - HEADER_LEN);
      entry = { bodies, rcode: res.rcode, next: Math.floor(Math.random() * bodies.length) };
      // Names outside the zone are not cached: anyone can make up any number of them.
      if (q.ascii && res.rcode !== Rcode.REFUSED) {
        if (byVariant === undefined) {
          if (this.cache.size >= this.maxEntries) this.cache.delete(this.cache.keys().next().value as string);
          byVariant = new Map();
          this.cache.set(q.key, byVariant);
        }
        byVariant.set(variant, entry);
      }
    }
    const body = entry.bodies[entry.next] as Buffer;
    entry.next = (entry.next + 1) % entry.bodies.length;
    (this.counts[transport][entry.rcode] as number)++;
    return spliceResponse(body, msg, q.end);
  }

  /** SERVFAIL, for a query `respond` threw on (a bug: bad input gets FORMERR). */
  servfail(msg: Buffer, transport: Transport): Buffer | null {
    if (msg.length < HEADER_LEN || isResponse(msg)) return null;
    return this.fail(msg, transport, Rcode.SERVFAIL, null, null);
  }

  /** An error response: header (and the question and OPT record, when they could be read). */
  private fail(msg: Buffer, transport: Transport, rcode: number, q: RawQuestion | null, edns: Edns | null): Buffer {
    (this.counts[transport][rcode] as number)++;
    const body = dnsPacket.encode({
      type: 'response',
      flags: (opcodeOf(msg) << 11) | (rcode & 0x0f),
      additionals: edns === null ? [] : [optRecord(edns, rcode)],
    });
    if (q !== null) return spliceResponse(body, msg, q.end);
    body[0] = msg[0] as number;
    body[1] = msg[1] as number;
    body[2] = (body[2] as number) | ((msg[2] as number) & 0x01); // RD
    return body;
  }
}

/**
 * The query's EDNS record: read from the raw bytes for the usual shape (nothing but one OPT
 * record after the question), otherwise by decoding the whole message with dns-packet.
 */
function readEdns(msg: Buffer, q: RawQuestion): Edns | null | 'malformed' {
  const an = msg.readUInt16BE(6);
  const ns = msg.readUInt16BE(8);
  const ar = msg.readUInt16BE(10);
  if (an === 0 && ns === 0) {
    if (ar === 0) return null;
    if (ar === 1) {
      const simple = readSimpleOpt(msg, q.end);
      if (simple !== null) return simple;
    }
  }
  let additionals: Answer[];
  try {
    additionals = dnsPacket.decode(msg).additionals ?? [];
  } catch {
    return 'malformed';
  }
  const opts = additionals.filter((r): r is OptAnswer => r.type === 'OPT');
  if (opts.length === 0) return null;
  // RFC 6891 §6.1.1: one OPT record, owned by the root.
  if (opts.length > 1 || opts[0]?.name !== '.') return 'malformed';
  return { payload: opts[0].udpPayloadSize, version: opts[0].ednsVersion, dnssecOk: opts[0].flag_do };
}

function optRecord(edns: Edns, rcode: number): OptAnswer {
  return {
    type: 'OPT',
    name: '.',
    udpPayloadSize: MAX_UDP_PAYLOAD,
    extendedRcode: rcode >> 4,
    ednsVersion: 0,
    flags: edns.dnssecOk ? dnsPacket.DNSSEC_OK : 0,
    flag_do: edns.dnssecOk,
    options: [],
  };
}

/** One encoded body per rotation of the answers (bodies have an empty question section). */
function encodeBodies(res: Resolution, edns: Edns | null, limit: number, questionLen: number): Buffer[] {
  const n = res.answers.length;
  const rotations = res.rotate ? Math.min(n, MAX_ROTATIONS) : 1;
  const step = Math.max(1, Math.floor(n / rotations));
  const bodies: Buffer[] = [];
  for (let r = 0; r < rotations; r++) {
    const k = r * step;
    const answers = k === 0 ? res.answers : [...res.answers.slice(k), ...res.answers.slice(0, k)];
    bodies.push(encodeFitting(res, answers, edns, limit - questionLen));
  }
  return bodies;
}

/**
 * Encodes a response within `limit` bytes. What does not fit goes in this order: glue (the
 * additional section is optional and leaving it out sets no TC bit, RFC 2181 §9), then answers:
 * those that fit stay, with the TC bit set, so that a client which retries over TCP does, and a
 * stub resolver that never does still gets some addresses.
 */
function encodeFitting(res: Resolution, answers: readonly Answer[], edns: Edns | null, limit: number): Buffer {
  const opt = edns === null ? [] : [optRecord(edns, res.rcode)];
  const flags = (res.authoritative ? Flag.AA : 0) | res.rcode;
  const glue = glueFor(res, answers);
  const full: Packet = { type: 'response', flags, answers: [...answers], authorities: [...res.authorities], additionals: [...glue, ...opt] };
  if (dnsPacket.encodingLength(full) <= limit) return dnsPacket.encode(full);

  const noGlue: Packet = { ...full, additionals: opt };
  let size = dnsPacket.encodingLength(noGlue);
  if (size <= limit) {
    const kept = takeFitting(glue, size, limit);
    return dnsPacket.encode({ ...noGlue, additionals: [...kept, ...opt] });
  }
  const truncated: Packet = { type: 'response', flags: flags | Flag.TC, answers: [], authorities: [], additionals: opt };
  size = dnsPacket.encodingLength(truncated);
  return dnsPacket.encode({ ...truncated, answers: takeFitting(answers, size, limit) });
}

/** The longest prefix of `records` that fits in `limit` on top of `size` bytes. */
function takeFitting(records: readonly Answer[], size: number, limit: number): Answer[] {
  const kept: Answer[] = [];
  for (const rr of records) {
    size += dnsPacket.encodingLength({ answers: [rr] }) - HEADER_LEN;
    if (size > limit) break;
    kept.push(rr);
  }
  return kept;
}

/** Address records for the SRV targets and NS hosts among `answers`, each once, in order. */
function glueFor(res: Resolution, answers: readonly Answer[]): Answer[] {
  if (res.glue.size === 0) return [];
  const out: Answer[] = [];
  const seen = new Set<string>();
  for (const rr of answers) {
    const target = rr.type === 'SRV' ? rr.data.target : rr.type === 'NS' ? rr.data : null;
    if (target === null || seen.has(target)) continue;
    seen.add(target);
    out.push(...(res.glue.get(target) ?? []));
  }
  return out;
}
