/**
 * Answers the proxy makes itself, in HTTP/1.1: a proxy error with its JSON body. What it says (the
 * code, the message, the details and the x-skein-explain text) comes from the engine or the
 * request's checks; this only frames it.
 */
import { SkeinError, type ErrorCode } from '../../core/errors.js';

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
 * The JSON body of a proxy error, `{ code, message, requestId?, details? }` and a newline, in
 * ASCII (anything beyond is escaped, so that its length is its byte count): HTTP/1 and HTTP/2
 * answers alike.
 */
export function errorBody(code: ErrorCode, message: string, requestId?: string, details?: unknown): string {
  const o: Record<string, unknown> = { code, message };
  if (requestId !== undefined) o['requestId'] = requestId;
  if (details !== undefined) o['details'] = details;
  return JSON.stringify(o).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`) + '\n';
}

/**
 * A response the proxy makes itself: the status of the code (or `status`), `x-skein-error`
 * naming the code, and a small JSON body `{ code, message, requestId?, details? }`. `headers`
 * are extra header lines, each ending in CRLF (Retry-After, x-skein-explain).
 */
export function errorResponse(
  code: ErrorCode,
  message: string,
  opts: { close: boolean; requestId?: string | undefined; status?: number | undefined; head?: boolean; details?: unknown; headers?: string; origin?: 'inbound' | 'outbound' },
): string {
  const status = opts.status ?? new SkeinError(code, message).status;
  const body = errorBody(code, message, opts.requestId, opts.details);
  return (
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\n` +
    `content-type: application/json\r\n` +
    `content-length: ${body.length}\r\n` +
    `x-skein-error: ${code}\r\n` +
    (opts.origin === undefined ? '' : `x-skein-error-origin: ${opts.origin}\r\n`) +
    (opts.requestId === undefined ? '' : `x-request-id: ${opts.requestId}\r\n`) +
    (opts.headers ?? '') +
    (opts.close ? 'connection: close\r\n' : '') +
    `\r\n` +
    (opts.head === true ? '' : body)
  );
}
