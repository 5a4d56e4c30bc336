/**
 * Turns one query message into one response message (or none), independent of sockets.
 *
 * The hot path reads the header and question from the raw bytes, looks the encoded response up
 * in a cache, and splices the query's id and question into a copy. A miss resolves the name in
 * the zone and encodes with dns-packet; the entry holds a few rotations of the answer order,
 * served in turn. Entries of a service's names are dropped when the registry reports a change to
 * that service.
 *
 * What keeps the cache bounded however clients vary their queries:
 * - a UDP response is at most DNS_DEFAULTS.udpPayload bytes whatever EDNS size is offered (512
 *   for an offer below it), so sizes collapse to three classes (512, 1,232, TCP);
 * - types the zone does not tell apart share one class (zone.ts, typeClass);
 * - NXDOMAIN and REFUSED responses do not depend on the name (the question is spliced in), so
 *   they are kept once per variant, not once per made-up name;
 * - entries are counted and their bytes estimated; past either bound the names cached longest are
 *   dropped first (all their variants at once).
 * Per name that leaves at most TYPE_CLASS_COUNT x 3 EDNS modes x 3 sizes variants.
 */
import dnsPacket, { type Answer, type OptAnswer, type Packet } from 'dns-packet';
import { DNS_DEFAULTS } from '../../api/dns.js';
import { systemClock, type Clock } from '../../core/clock.js';
import { TYPE_CLASS_COUNT, typeClass, type Zone, type Resolution } from './zone.js';
import {
  CLASSIC_UDP_PAYLOAD,
  Flag,
  HEADER_LEN,
  MAX_MESSAGE,
  QClass,
  QType,
  Rcode,
  isResponse,
  keyLabels,
  opcodeOf,
  readQuestion,
  readSimpleOpt,
  spliceResponse,
  truncatedResponse,
  type Edns,
  type RawQuestion,
} from './wire.js';

export type Transport = 'udp' | 'tcp';

/** Rcodes go up to 4095 with EDNS; we only ever send 0-5 and BADVERS (16). */
const RCODE_SLOTS = 17;
/** Variants of one name and type class: EDNS off / on / on with DO, times 512 / udpPayload / TCP. */
const VARIANTS_PER_TYPE = 9;
/** Variants of any name: the key space of the shared map, per rcode. */
const VARIANT_SLOTS = TYPE_CLASS_COUNT * VARIANTS_PER_TYPE;
/**
 * What an entry holds besides its encoded bytes (the entry object, its Buffer views, its slot in
 * the name's map) and what a name holds besides its entries; estimates, measured in bench/dns.ts.
 */
const ENTRY_OVERHEAD = 160;
const BODY_OVERHEAD = 100;
const NAME_OVERHEAD = 200;

interface Entry {
  readonly bodies: readonly Buffer[];
  readonly rcode: number;
  /** Bytes charged against the cache bound. */
  readonly size: number;
  /** When a sampled answer is drawn again (ms since the epoch); Infinity when never. */
  readonly expires: number;
  /** The rotation the next response gets. */
  next: number;
}

export interface ResponderOptions {
  zone: Zone;
  /** Cached responses (variants of all names) before the oldest names are dropped. */
  maxCacheEntries?: number;
  /** Estimated bytes of the cache before the oldest names are dropped. */
  maxCacheBytes?: number;
  /** Time for re-drawing sampled answers. Default the system clock. */
  clock?: Clock;
}

export interface DnsCacheStats {
  /** Names with at least one cached response. */
  readonly names: number;
  /** Cached responses (variants), not counting the shared NXDOMAIN and REFUSED ones. */
  readonly entries: number;
  /** Estimated bytes of the cached responses (the bound is on this figure). */
  readonly bytes: number;
  readonly maxEntries: number;
  readonly maxBytes: number;
  /** Responses served from a name's cached entry. */
  readonly hits: number;
  /** Queries resolved in the zone. */
  readonly misses: number;
  /** Records (answers and glue) that misses built: at most the answer sample (twice, with glue) each. */
  readonly recordsBuilt: number;
}

export class Responder {
  /** Responses sent, by transport and rcode (the metrics read these; no work on the hot path). */
  readonly counts: Readonly<Record<Transport, number[]>> = { udp: new Array<number>(RCODE_SLOTS).fill(0), tcp: new Array<number>(RCODE_SLOTS).fill(0) };
  cacheHits = 0;
  private misses = 0;
  private recordsBuilt = 0;
  private readonly zone: Zone;
  private readonly clock: Clock;
  private readonly maxEntries: number;
  private readonly maxBytes: number;
  /** Sizes by class: 512, the UDP payload, a whole TCP message. */
  private readonly limits: readonly number[];
  /** Wire-format name -> variant -> entry; Map order is the order names were first cached. */
  private readonly cache = new Map<string, Map<number, Entry>>();
  /** NXDOMAIN and REFUSED responses, by rcode and variant: one body serves every name. */
  private readonly shared = new Map<number, Entry>();
  private entries = 0;
  private bytes = 0;

  constructor(opts: ResponderOptions) {
    this.zone = opts.zone;
    this.clock = opts.clock ?? systemClock;
    this.maxEntries = opts.maxCacheEntries ?? DNS_DEFAULTS.cache.maxEntries;
    this.maxBytes = opts.maxCacheBytes ?? DNS_DEFAULTS.cache.maxBytes;
    this.limits = [CLASSIC_UDP_PAYLOAD, DNS_DEFAULTS.udpPayload, MAX_MESSAGE];
  }

  stats(): DnsCacheStats {
    return { names: this.cache.size, entries: this.entries, bytes: this.bytes, maxEntries: this.maxEntries, maxBytes: this.maxBytes, hits: this.cacheHits, misses: this.misses, recordsBuilt: this.recordsBuilt };
  }

  clear(): void {
    this.cache.clear();
    this.entries = 0;
    this.bytes = 0;
  }

  /** Drops cached responses that depend on a service's instances. */
  invalidate(service: string): void {
    for (const key of this.zone.keysOf(service)) this.drop(key);
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

    // An EDNS offer below our payload gets the 512 every client takes, not a size of its own.
    const sizeClass = transport === 'tcp' ? 2 : edns !== null && edns.payload >= DNS_DEFAULTS.udpPayload ? 1 : 0;
    const variant = (typeClass(q.qtype) * 3 + (edns === null ? 0 : edns.dnssecOk ? 2 : 1)) * 3 + sizeClass;
    let entry = q.ascii ? this.cache.get(q.key)?.get(variant) : undefined;
    // The clock is read only for entries that expire (sampled answers).
    if (entry !== undefined && (entry.expires === Infinity || entry.expires > this.clock.now())) {
      this.cacheHits++;
    } else {
      entry = this.miss(q, edns, variant, this.limits[sizeClass] as number);
    }
    const body = entry.bodies[entry.next] as Buffer;
    entry.next = (entry.next + 1) % entry.bodies.length;
    (this.counts[transport][entry.rcode] as number)++;
    return spliceResponse(body, msg, q.end);
  }

  /**
   * What a rate-limited query gets when it is let through ("slipped"): the header and question
   * with TC set and no records, never larger than the query. Null when it has no readable question.
   */
  truncated(msg: Buffer): Buffer | null {
    if (msg.length < HEADER_LEN || isResponse(msg) || msg.readUInt16BE(4) !== 1) return null;
    const q = readQuestion(msg);
    return q === null ? null : truncatedResponse(msg, q.end);
  }

  /** SERVFAIL, for a query `respond` threw on (a bug: bad input gets FORMERR). */
  servfail(msg: Buffer, transport: Transport): Buffer | null {
    if (msg.length < HEADER_LEN || isResponse(msg)) return null;
    return this.fail(msg, transport, Rcode.SERVFAIL, null, null);
  }

  private miss(q: RawQuestion, edns: Edns | null, variant: number, limit: number): Entry {
    this.misses++;
    const res = this.zone.resolve(keyLabels(q.key), q.qtype);
    this.recordsBuilt += res.answers.length + res.glue.size;
    if (res.rcode === Rcode.NXDOMAIN || res.rcode === Rcode.REFUSED) {
      const sharedKey = res.rcode * VARIANT_SLOTS + variant;
      let entry = this.shared.get(sharedKey);
      if (entry === undefined) {
        entry = newEntry(res, encodeBodies(res, edns, limit, q.end - HEADER_LEN), Infinity);
        this.shared.set(sharedKey, entry);
      }
      return entry;
    }
    // Sampled answers are drawn again after a TTL (at least a second), so that over time clients
    // see every instance of a service larger than the sample.
    const expires = res.sampled ? this.clock.now() + Math.max(1, this.zone.ttl) * 1000 : Infinity;
    const entry = newEntry(res, encodeBodies(res, edns, limit, q.end - HEADER_LEN), expires, q.key.length);
    if (q.ascii) this.store(q.key, variant, entry);
    return entry;
  }

  /** Caches an entry, first dropping the names cached longest until it fits both bounds. */
  private store(key: string, variant: number, entry: Entry): void {
    const previous = this.cache.get(key)?.get(variant);
    if (previous !== undefined) this.remove(key, variant, previous);
    const size = entry.size + NAME_OVERHEAD + key.length;
    if (size > this.maxBytes || this.maxEntries < 1) return;
    while (this.cache.size > 0 && (this.entries + 1 > this.maxEntries || this.bytes + size > this.maxBytes)) {
      this.drop(this.cache.keys().next().value as string);
    }
    let byVariant = this.cache.get(key);
    if (byVariant === undefined) {
      byVariant = new Map();
      this.cache.set(key, byVariant);
      this.bytes += NAME_OVERHEAD + key.length;
    }
    byVariant.set(variant, entry);
    this.entries++;
    this.bytes += entry.size;
  }

  private remove(key: string, variant: number, entry: Entry): void {
    const byVariant = this.cache.get(key) as Map<number, Entry>;
    byVariant.delete(variant);
    this.entries--;
    this.bytes -= entry.size;
    if (byVariant.size === 0) this.drop(key);
  }

  /** Drops a name and every variant of it. */
  private drop(key: string): void {
    const byVariant = this.cache.get(key);
    if (byVariant === undefined) return;
    for (const e of byVariant.values()) this.bytes -= e.size;
    this.entries -= byVariant.size;
    this.bytes -= NAME_OVERHEAD + key.length;
    this.cache.delete(key);
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
 * An entry over its bodies, copied into one buffer of its own: pooled small Buffers share 8 kB
 * slabs, and a cached view would keep a whole slab alive.
 */
function newEntry(res: Resolution, bodies: readonly Buffer[], expires: number, keyLength = 0): Entry {
  let total = 0;
  for (const b of bodies) total += b.length;
  const store = Buffer.allocUnsafeSlow(total);
  const views: Buffer[] = [];
  let off = 0;
  for (const b of bodies) {
    b.copy(store, off);
    views.push(store.subarray(off, off + b.length));
    off += b.length;
  }
  const size = total + keyLength + ENTRY_OVERHEAD + BODY_OVERHEAD * views.length;
  return { bodies: views, rcode: res.rcode, size, expires, next: Math.floor(Math.random() * views.length) };
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
    udpPayloadSize: DNS_DEFAULTS.udpPayload,
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
  const rotations = res.rotate ? Math.min(n, DNS_DEFAULTS.rotations) : 1;
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
