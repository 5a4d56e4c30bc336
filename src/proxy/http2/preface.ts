/**
 * Telling HTTP/2 with prior knowledge from HTTP/1 on a new connection: the client preface
 * (RFC 9113 §3.4) is 24 fixed bytes, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n". The listener looks at the
 * first chunk's first byte only ('P' starts the preface, and POST, PUT, PATCH, PROPFIND); only
 * then are the rest compared.
 */
export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** First byte of the preface. */
export const PREFACE_FIRST = 0x50;

/**
 * What the first bytes of a connection are: 'h2' (the whole preface), 'http1' (anything else),
 * or 'more' (a strict prefix of the preface: wait for more bytes).
 */
export function sniff(first: Buffer): 'h2' | 'http1' | 'more' {
  const n = Math.min(first.length, PREFACE.length);
  if (PREFACE.compare(first, 0, n, 0, n) !== 0) return 'http1';
  return n === PREFACE.length ? 'h2' : 'more';
}
