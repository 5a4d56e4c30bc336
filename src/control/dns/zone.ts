/**
 * The zone the DNS server is authoritative for, and what each name in it holds. Pure reads of
 * the registry: given a name (as labels) and a type, `resolve` returns records as dns-packet
 * objects; encoding, truncation and caching are the responder's.
 *
 *   <domain>                          SOA, NS
 *   ns.<domain>                       A (AAAA) of the server's listen address, when specific
 *   <svc>.service.<domain>            A / AAAA of healthy instances, SRV (targets below)
 *   _<svc>._tcp.service.<domain>      SRV, the RFC 2782 spelling
 *   <hex-ip>.addr.<domain>            A (8 hex digits) or AAAA (32 hex digits)
 *
 * `service`, `addr` and `_tcp.service` are empty non-terminals (NODATA, not NXDOMAIN: RFC 8020
 * lets a resolver treat everything below an NXDOMAIN name as absent). Other types at a name
 * that exists (MX, TXT, ...) are NODATA. ANY gets the name's address records (SOA and NS at the
 * apex), never its SRV records: RFC 8482 lets a server answer ANY with a subset.
 * `<hex>.addr` names answer any well-formed address, registered or not, as Consul's do.
 *
 * A service's answer is built from at most `answerSample` healthy instances (for A and AAAA, of
 * distinct addresses of that family): a uniform random sample when it has more, drawn in one pass
 * over its instances without sorting them all. Resolutions from a sample say so (`sampled`), so
 * that the responder draws another one after a TTL.
 */
import { isIP } from 'node:net';
import dnsPacket, { type Answer, type SoaAnswer, type SrvAnswer, type StringAnswer } from 'dns-packet';
import type { InstanceRecord, Registry } from '../registry/registry.js';
import { QType, Rcode, labelsKey } from './wire.js';

export interface Resolution {
  readonly rcode: number;
  /** AA bit: set on every answer from inside the zone. */
  readonly authoritative: boolean;
  readonly answers: readonly Answer[];
  readonly authorities: readonly Answer[];
  /** Address records of SRV targets and of the NS host, by owner name: the additional section. */
  readonly glue: ReadonlyMap<string, readonly Answer[]>;
  /** Whether answer order should rotate across responses (instance records). */
  readonly rotate: boolean;
  /** Built from a sample of a service's instances (it had more than the sample size). */
  readonly sampled: boolean;
}

export interface ZoneOptions {
  registry: Registry;
  /** Lower-case, no trailing dot. */
  domain: string;
  ttlSeconds: number;
  /** The address `ns.<domain>` resolves to; null when the server listens on a wildcard. */
  nsAddress: string | null;
  /** SOA serial. No zone transfers happen, so it only has to be stable while the server runs. */
  serial: number;
  /** Instances an answer is built from at most (DNS_DEFAULTS.answerSample). */
  answerSample: number;
}

/**
 * The query types `resolve` tells apart. Every other type gets the same answer at any name
 * (NODATA, or NXDOMAIN for a name that does not exist), so they share one cache class, 0: a
 * client cycling through 65,536 types makes no more cache entries than one asking MX.
 */
const TYPE_CLASSES: ReadonlyMap<number, number> = new Map([QType.A, QType.AAAA, QType.SRV, QType.ANY, QType.SOA, QType.NS].map((t, i) => [t, i + 1]));
export const TYPE_CLASS_COUNT = TYPE_CLASSES.size + 1;

export function typeClass(qtype: number): number {
  return TYPE_CLASSES.get(qtype) ?? 0;
}

const NO_GLUE: ReadonlyMap<string, readonly Answer[]> = new Map();
const REFUSED: Resolution = Object.freeze({ rcode: Rcode.REFUSED, authoritative: false, answers: [], authorities: [], glue: NO_GLUE, rotate: false, sampled: false });

export class Zone {
  readonly domain: string;
  readonly ttl: number;
  private readonly domainLabels: readonly string[];
  private readonly registry: Registry;
  private readonly sampleSize: number;
  private readonly soa: SoaAnswer;
  private readonly nsName: string;
  private readonly nsGlue: readonly Answer[];

  constructor(opts: ZoneOptions) {
    this.registry = opts.registry;
    this.domain = opts.domain;
    this.domainLabels = opts.domain.split('.');
    this.ttl = opts.ttlSeconds;
    this.sampleSize = opts.answerSample;
    this.nsName = `ns.${opts.domain}`;
    this.soa = {
      type: 'SOA',
      name: opts.domain,
      ttl: opts.ttlSeconds,
      data: {
        mname: this.nsName,
        rname: `hostmaster.${opts.domain}`,
        serial: opts.serial,
        refresh: 3600,
        retry: 600,
        expire: 86400,
        // The negative-caching TTL (RFC 2308): as short as the records'.
        minimum: opts.ttlSeconds,
      },
    };
    this.nsGlue = opts.nsAddress === null ? [] : [this.addressRecord(this.nsName, opts.nsAddress)];
  }

  /** Cache keys of the names whose answers depend on one service's instances. */
  keysOf(service: string): string[] {
    return [labelsKey([service, 'service', ...this.domainLabels]), labelsKey([`_${service}`, '_tcp', 'service', ...this.domainLabels])];
  }

  /** Answers `qtype` for a name given as lower-case labels. */
  resolve(labels: readonly string[], qtype: number): Resolution {
    const d = this.domainLabels.length;
    const n = labels.length - d;
    if (n < 0) return REFUSED;
    for (let i = 0; i < d; i++) if (labels[n + i] !== this.domainLabels[i]) return REFUSED;
    const rel = labels.slice(0, n);
    const name = labels.join('.');
    const [first, second, third] = rel;
    if (n === 0) return this.apex(qtype);
    if (n === 1 && first === 'ns') return this.found(this.pick(this.nsGlue, qtype));
    if (n === 1 && (first === 'service' || first === 'addr')) return this.found([]);
    if (n === 2 && second === 'service') return first === '_tcp' ? this.found([]) : this.service(first as string, name, qtype, false);
    if (n === 3 && second === '_tcp' && third === 'service' && first?.startsWith('_')) return this.service(first.slice(1), name, qtype, true);
    if (n === 2 && second === 'addr') return this.addr(first as string, name, qtype);
    return this.nxdomain();
  }

  private apex(qtype: number): Resolution {
    const ns: StringAnswer = { type: 'NS', name: this.domain, ttl: this.ttl, data: this.nsName };
    const answers: Answer[] = [];
    if (qtype === QType.SOA || qtype === QType.ANY) answers.push(this.soa);
    if (qtype === QType.NS || qtype === QType.ANY) answers.push(ns);
    return this.found(answers, false, answers.includes(ns) ? new Map([[this.nsName, this.nsGlue]]) : NO_GLUE);
  }

  private service(svc: string, name: string, qtype: number, srvOnly: boolean): Resolution {
    const state = this.registry.service(svc);
    if (state === undefined) return this.nxdomain();
    if (qtype === QType.SRV) {
      const { records, sampled } = this.sample(state.instances, null);
      const answers: SrvAnswer[] = [];
      const glue = new Map<string, Answer[]>();
      for (const { instance } of records) {
        const address = plainAddress(instance.address);
        const target = `${addressHex(address)}.addr.${this.domain}`;
        const weight = Math.min(65535, Math.max(0, Math.trunc(instance.weight)));
        answers.push({ type: 'SRV', name, ttl: this.ttl, data: { priority: 1, weight, port: instance.port, target } });
        if (!glue.has(target)) glue.set(target, [this.addressRecord(target, address)]);
      }
      return this.found(answers, true, glue, sampled);
    }
    const family = qtype === QType.A ? 4 : qtype === QType.AAAA ? 6 : qtype === QType.ANY ? 0 : null;
    if (srvOnly || family === null) return this.found([]);
    // One record per address: an RRset holds no duplicates (RFC 2181 §5), though instances may
    // share an address on different ports.
    const { records, sampled } = this.sample(state.instances, family);
    return this.found(records.map((r) => this.addressRecord(name, plainAddress(r.instance.address))), true, NO_GLUE, sampled);
  }

  /**
   * Up to `sampleSize` healthy instances, sorted by id; a uniform random sample (reservoir
   * sampling, one pass) when there are more. `family` null takes every instance; 4, 6 or 0 (both)
   * take one instance per distinct address of that family: a sample of instances deduplicated,
   * or, when that sample holds a shared address, a second pass sampling distinct addresses (a Set
   * of every address costs several times the first pass, so only then).
   */
  private sample(instances: ReadonlyMap<string, InstanceRecord>, family: 0 | 4 | 6 | null): { records: InstanceRecord[]; sampled: boolean } {
    const first = this.reservoir(instances, family, null);
    if (family === null) return first;
    const byAddress = new Map<string, InstanceRecord>();
    for (const rec of first.records) {
      const address = plainAddress(rec.instance.address);
      if (!byAddress.has(address)) byAddress.set(address, rec);
    }
    // Every instance taken (nothing sampled) or no address shared: the deduplicated list is it.
    if (!first.sampled || byAddress.size === first.records.length) return { records: [...byAddress.values()], sampled: first.sampled };
    return this.reservoir(instances, family, new Set());
  }

  /** The sampling pass of `sample`; with `seen`, over distinct addresses of `family` only. */
  private reservoir(instances: ReadonlyMap<string, InstanceRecord>, family: 0 | 4 | 6 | null, seen: Set<string> | null): { records: InstanceRecord[]; sampled: boolean } {
    const k = this.sampleSize;
    const out: InstanceRecord[] = [];
    let n = 0;
    for (const rec of instances.values()) {
      if (rec.status !== 'healthy') continue;
      if (family === 4 || family === 6) {
        // Addresses were validated at registration: a colon means IPv6.
        if (rec.instance.address.includes(':') !== (family === 6)) continue;
      }
      if (seen !== null) {
        const address = plainAddress(rec.instance.address);
        if (seen.has(address)) continue;
        seen.add(address);
      }
      n++;
      if (out.length < k) out.push(rec);
      else {
        const j = Math.floor(Math.random() * n);
        if (j < k) out[j] = rec;
      }
    }
    out.sort((a, b) => (a.instance.id < b.instance.id ? -1 : 1));
    return { records: out, sampled: n > k };
  }

  private addr(hex: string, name: string, qtype: number): Resolution {
    const address = hexAddress(hex);
    if (address === null) return this.nxdomain();
    return this.found(this.pick([this.addressRecord(name, address)], qtype));
  }

  /** The records of `all` that answer `qtype`: A or AAAA ones, or both for ANY. */
  private pick(all: readonly Answer[], qtype: number): Answer[] {
    if (qtype === QType.ANY) return [...all];
    const type = qtype === QType.A ? 'A' : qtype === QType.AAAA ? 'AAAA' : null;
    return all.filter((r) => r.type === type);
  }

  private addressRecord(name: string, address: string): StringAnswer {
    return { type: isIP(address) === 4 ? 'A' : 'AAAA', name, ttl: this.ttl, data: address };
  }

  /** NOERROR: the answers, or NODATA (the SOA in the authority section) when there are none. */
  private found(answers: Answer[], rotate = false, glue: ReadonlyMap<string, readonly Answer[]> = NO_GLUE, sampled = false): Resolution {
    return { rcode: Rcode.NOERROR, authoritative: true, answers, authorities: answers.length === 0 ? [this.soa] : [], glue, rotate: rotate && answers.length > 1, sampled };
  }

  private nxdomain(): Resolution {
    return { rcode: Rcode.NXDOMAIN, authoritative: true, answers: [], authorities: [this.soa], glue: NO_GLUE, rotate: false, sampled: false };
  }
}

/** An instance address without an IPv6 zone index (`fe80::1%eth0`), which DNS cannot carry. */
function plainAddress(address: string): string {
  const pct = address.indexOf('%');
  return pct < 0 ? address : address.slice(0, pct);
}

/**
 * The hex label of an address, as Consul spells it: `7f000001` for 127.0.0.1, 32 digits for
 * IPv6. The bytes come from dns-packet's own A/AAAA encoding (the RDATA is the packet's tail).
 */
export function addressHex(address: string): string {
  const v4 = isIP(address) === 4;
  const wire = dnsPacket.encode({ answers: [{ type: v4 ? 'A' : 'AAAA', name: '.', data: address }] });
  return wire.subarray(wire.length - (v4 ? 4 : 16)).toString('hex');
}

/** The address a hex label names, or null when it names none. */
export function hexAddress(hex: string): string | null {
  if (!/^[0-9a-f]+$/.test(hex)) return null;
  if (hex.length === 8) return [0, 2, 4, 6].map((i) => parseInt(hex.slice(i, i + 2), 16)).join('.');
  if (hex.length === 32) return (hex.match(/.{4}/g) as string[]).join(':');
  return null;
}
