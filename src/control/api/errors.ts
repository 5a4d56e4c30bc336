/** How the API answers an error: the code's status, `x-skein-error`, a JSON body; fastify's own errors mapped onto the code table. */
import type { FastifyReply } from 'fastify';
import { SkeinError, type ErrorCode } from '../../core/errors.js';

/** The largest request body, bytes. */
export const BODY_LIMIT = 1024 * 1024;

/** Every error: the code's status, the code in `x-skein-error` (as the proxy's own answers), a JSON body. */
export function sendError(reply: FastifyReply, e: SkeinError): FastifyReply {
  return reply.code(e.status).header('content-type', 'application/json; charset=utf-8').header('x-skein-error', e.code).send(e.toJSON());
}

/** Maps fastify's own errors (body parsing, limits) onto the code table. */
export function toSkeinError(e: unknown): SkeinError {
  if (e instanceof SkeinError) return e;
  const err = e as { code?: string; statusCode?: number; message?: string };
  const code = err.code ?? '';
  const status = err.statusCode ?? 500;
  let c: ErrorCode = 'SKEIN_E_INTERNAL';
  let message = 'internal error';
  if (code === 'FST_ERR_CTP_BODY_TOO_LARGE' || status === 413) {
    c = 'SKEIN_E_BODY_TOO_LARGE';
    message = `request body is larger than ${BODY_LIMIT} bytes`;
  } else if (code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || status === 415) {
    c = 'SKEIN_E_UNSUPPORTED_MEDIA_TYPE';
    message = 'request body must be application/json';
  } else if (code === 'FST_ERR_CTP_INVALID_JSON_BODY' || code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || e instanceof SyntaxError) {
    // SyntaxError: malformed JSON, or prototype poisoning refused by the parser.
    c = 'SKEIN_E_BAD_JSON';
    message = `request body is not valid JSON: ${err.message ?? ''}`.trim();
  } else if (status >= 400 && status < 500) {
    c = 'SKEIN_E_VALIDATION';
    message = err.message ?? 'bad request';
  }
  return new SkeinError(c, message, c === 'SKEIN_E_INTERNAL' ? {} : { field: 'body' });
}
