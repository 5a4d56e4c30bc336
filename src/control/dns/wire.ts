/**
 * Just enough reading of raw DNS bytes to serve the hot path without decoding a whole packet:
 * the header, the one question (its name as a cache key), and a lone EDNS OPT record. Anything
 * of another shape goes through dns-packet's decoder instead (see responder.ts). All encoding is
 * dns-packet's; `spliceResponse` only copies the query's own question bytes into a response.
 */

export const HEADER_LEN = 12;
/**
 * Largest UDP payload for a client without EDNS (RFC 1035 §4.2.1), and the least an EDNS client
 * may offer (RFC 6891 §6.2.5). The largest we send is DNS_DEFAULTS.udpPayload (src/api/dns.ts).
 */
export const CLASSIC_UDP_PAYLOAD = 512;
/** Largest DNS message at all (TCP's 2-byte length prefix). */
export const MAX_MESSAGE = 65535;

export const Rcode = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5, BADVERS: 16 } as const;
export const RCODE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(Rcode).map(([k, v]) => [v, k]));

export const QType = { A: 1, NS: 2, SOA: 6, AAAA: 28, SRV: 33, OPT: 41, IXFR: 251, AXFR: 252, ANY: 255 } as const;
export const QClass = { IN: 1, ANY: 255 } as const;

/** Header flag bits we set (of the 16-bit flags word; dns-packet sets QR from `type`). */
export const Flag = { AA: 0x0400, TC: 0x0200 } as const;

export function opcodeOf(msg: Buffer): number {
  return ((msg[2] as number) >> 3) & 0x0f;
}

export function isResponse(msg: Buffer): boolean {
  return ((msg[2] as number) & 0x80) !== 0;
}

export interface RawQuestion {
  /**
   * The question name in wire format (length-prefixed labels and the closing zero byte), ASCII
   * lower-cased, as a latin1 string. Unambiguous, so it serves as the cache key; labels may hold
   * any byte, dots included.
   */
  readonly key: string;
  /** True when every byte of the name is ASCII (only such names are cached). */
  readonly ascii: boolean;
  readonly qtype: number;
  readonly qclass: number;
  /** Offset just past the question (name, type and class). */
  readonly end: number;
}

/**
 * Reads the question that starts right after the header. Returns null when it is malformed:
 * truncated, a label over 63 bytes, a name over 255 bytes, or a compression pointer (the first
 * name of a message has nothing before it to point at).
 */
export function readQuestion(msg: Buffer): RawQuestion | null {
  const len = msg.length;
  let off = HEADER_LEN;
  let nameLen = 1; // the closing zero byte
  let ascii = true;
  let upper = false;
  for (;;) {
    if (off >= len) return null;
    const l = msg[off] as number;
    if (l === 0) break;
    if (l > 63) return null;
    nameLen += l + 1;
    if (nameLen > 255 || off + 1 + l > len) return null;
    for (let i = off + 1; i <= off + l; i++) {
      const b = msg[i] as number;
      if (b >= 0x80) ascii = false;
      else if (b >= 0x41 && b <= 0x5a) upper = true;
    }
    off += l + 1;
  }
  const nameEnd = off + 1;
  if (nameEnd + 4 > len) return null;
  let key = msg.toString('latin1', HEADER_LEN, nameEnd);
  if (upper) key = ascii ? key.toLowerCase() : asciiLower(key);
  return { key, ascii, qtype: msg.readUInt16BE(nameEnd), qclass: msg.readUInt16BE(nameEnd + 2), end: nameEnd + 4 };
}

function asciiLower(s: string): string {
  return s.replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 32));
}

/** The labels of a wire-format key (see RawQuestion.key). */
export function keyLabels(key: string): string[] {
  const labels: string[] = [];
  let off = 0;
  for (;;) {
    const l = key.charCodeAt(off);
    if (l === 0 || Number.isNaN(l)) return labels;
    labels.push(key.slice(off + 1, off + 1 + l));
    off += l + 1;
  }
}

/** The wire-format key of a name given as labels (the inverse of keyLabels). */
export function labelsKey(labels: readonly string[]): string {
  let key = '';
  for (const l of labels) key += String.fromCharCode(l.length) + l;
  return key + '\0';
}

export interface Edns {
  readonly payload: number;
  readonly version: number;
  /** The DNSSEC OK bit, copied into the response's OPT record (RFC 3225). */
  readonly dnssecOk: boolean;
}

/**
 * Reads an OPT record at `off` when it is exactly the shape a plain query carries: root owner
 * name, type OPT, and RDATA (the EDNS options, which we ignore) within the message. Returns null
 * otherwise, and the caller falls back to dns-packet's decoder.
 */
export function readSimpleOpt(msg: Buffer, off: number): Edns | null {
  if (off + 11 > msg.length || msg[off] !== 0 || msg.readUInt16BE(off + 1) !== QType.OPT) return null;
  if (off + 11 + msg.readUInt16BE(off + 9) > msg.length) return null;
  return { payload: msg.readUInt16BE(off + 3), version: msg[off + 6] as number, dnssecOk: (msg.readUInt16BE(off + 7) & 0x8000) !== 0 };
}

/**
 * Builds a response from an encoded body (a dns-packet message with an empty question section)
 * and the query: the query's id, RD and CD bits and its question bytes as asked (mixed case
 * included, for 0x20 checks), the body's flags and records. dns-packet never compresses names,
 * so no record points into the question and inserting it shifts nothing that matters.
 */
export function spliceResponse(body: Buffer, query: Buffer, questionEnd: number): Buffer {
  const qlen = questionEnd - HEADER_LEN;
  const out = Buffer.allocUnsafe(body.length + qlen);
  body.copy(out, 0, 0, HEADER_LEN);
  out[0] = query[0] as number;
  out[1] = query[1] as number;
  out[2] = ((body[2] as number) & ~0x01) | ((query[2] as number) & 0x01); // RD
  out[3] = ((body[3] as number) & ~0x10) | ((query[3] as number) & 0x10); // CD
  out[4] = 0;
  out[5] = 1;
  query.copy(out, HEADER_LEN, HEADER_LEN, questionEnd);
  body.copy(out, questionEnd, HEADER_LEN);
  return out;
}

/**
 * A response of the query's header and question with QR and TC set, no records and rcode
 * NOERROR: what a rate-limited source gets now and then instead of nothing, so that a real client
 * retries over TCP. Never longer than the query, so it amplifies nothing.
 */
export function truncatedResponse(query: Buffer, questionEnd: number): Buffer {
  const out = Buffer.allocUnsafe(questionEnd);
  query.copy(out, 0, 0, questionEnd);
  out[2] = 0x80 | ((query[2] as number) & 0x79) | (Flag.TC >> 8); // QR, opcode, TC, RD
  out[3] = (query[3] as number) & 0x10; // CD; RA and rcode clear
  out.fill(0, 6, HEADER_LEN); // no answer, authority or additional records
  return out;
}
