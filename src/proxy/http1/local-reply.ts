/**
 * Answers the proxy makes itself, in HTTP/1.1: a proxy error with its JSON body. What it says (the
 * code, the message, the details and the x-skein-explain text) comes from the engine or the
 * request's checks; this only frames it.
 */
import type { ErrorCode } from '../../core/errors.js';
import { errorBody, errorHead } from '../../engine/answer.js';

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  408: 'Request Timeout',
  429: 'Too Many Requests',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

/**
 * A response the proxy makes itself: the status and headers of the engine's `errorHead` (the
 * code's status or `status`, `x-skein-error`, its origin, the request id, Retry-After,
 * x-skein-explain) and a small JSON body `{ code, message, requestId?, details? }`.
 */
export function errorResponse(
  code: ErrorCode,
  message: string,
  opts: {
    close: boolean;
    requestId?: string | undefined;
    status?: number | undefined;
    head?: boolean;
    details?: unknown;
    origin?: 'inbound' | 'outbound';
    retryAfterMs?: number | undefined;
    explanation?: string | null;
  },
): string {
  const h = errorHead(code, opts.origin ?? null, opts);
  // Written as latin1: errorBody escapes anything beyond ASCII, so the length is the byte count.
  const body = errorBody(code, message, opts.requestId, opts.details);
  let out = `HTTP/1.1 ${h.status} ${STATUS_TEXT[h.status] ?? 'Error'}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n`;
  for (const [name, value] of h.headers) out += `${name}: ${value}\r\n`;
  if (opts.close) out += 'connection: close\r\n';
  return `${out}\r\n${opts.head === true ? '' : body}`;
}
