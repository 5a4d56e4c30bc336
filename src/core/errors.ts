/**
 * One table of error codes for all of Skein. Every code has an HTTP status and a sentence;
 * docs/errors.md documents each one (a test checks that).
 */
export const ERROR_CODES = {
  SKEIN_E_VALIDATION: { status: 400, text: 'The input does not match the resource schema; `field` names the offending path.' },
  SKEIN_E_BAD_JSON: { status: 400, text: 'The request body is not well-formed JSON.' },
  SKEIN_E_BAD_YAML: { status: 400, text: 'A resource file is not well-formed YAML or JSON.' },
  SKEIN_E_BODY_TOO_LARGE: { status: 413, text: 'The request body is larger than the 1 MiB limit.' },
  SKEIN_E_UNSUPPORTED_MEDIA_TYPE: { status: 415, text: 'The request body has a content type other than application/json.' },
  SKEIN_E_BAD_QUERY: { status: 400, text: 'A query parameter is malformed or out of range; `field` names it.' },
  SKEIN_E_CONFLICT: { status: 409, text: 'The body contradicts the path (for example a different service or instance id).' },
  SKEIN_E_NOT_FOUND: { status: 404, text: 'No such route in the API.' },
  SKEIN_E_UNKNOWN_SERVICE: { status: 404, text: 'The named service is not known to the registry.' },
  SKEIN_E_UNKNOWN_ROUTE: { status: 404, text: 'The service has no route of that name.' },
  SKEIN_E_UNKNOWN_INSTANCE: { status: 404, text: 'The named instance is not registered (a heartbeat or deregistration for it is refused).' },
  SKEIN_E_NO_TTL_CHECK: { status: 409, text: 'A heartbeat was sent for an instance whose health check is not of type ttl.' },
  SKEIN_E_CONCURRENT_CHANGE: { status: 409, text: 'Another control-plane replica changed the same resource at the same moment (etcd store); read it again and retry.' },
  SKEIN_E_STORE: { status: 503, text: 'The store could not durably record the change; nothing was acknowledged.' },
  SKEIN_E_SHUTTING_DOWN: { status: 503, text: 'The control plane is shutting down and accepts no new work.' },
  SKEIN_E_DASHBOARD_NOT_BUILT: { status: 503, text: 'The control plane has no built dashboard to serve.' },
  SKEIN_E_FOREIGN_HOST: { status: 421, text: 'A server listening on a loopback address (the control plane, a proxy admin port) was asked for a Host that is not a loopback name or address (the DNS-rebinding guard).' },
  SKEIN_E_TOO_MANY_TAPS: { status: 429, text: 'The proxy, or the control plane relaying taps, already has as many taps open as it allows.' },
  SKEIN_E_INTERNAL: { status: 500, text: 'An unexpected internal error; the log has details.' },
  SKEIN_E_CONTROL_UNREACHABLE: { status: 503, text: 'The CLI could not reach the control plane at the given address.' },
  SKEIN_E_USAGE: { status: 400, text: 'A command-line flag or argument is missing or malformed.' },
  SKEIN_E_FILE: { status: 400, text: 'A file named on the command line could not be read.' },
  SKEIN_E_ADDRESS_IN_USE: { status: 500, text: 'A listener could not bind its address (already in use or not permitted).' },
  SKEIN_E_NO_HEALTHY_ENDPOINT: { status: 503, text: 'The proxy knows the service but none of its instances is healthy (or all were tried).' },
  SKEIN_E_NO_ROUTE: { status: 400, text: 'The proxy could not tell which service a request is for: no Host header, or a host that is not a service name.' },
  SKEIN_E_DISCOVERY_UNAVAILABLE: { status: 503, text: 'The proxy has not yet received its first snapshot from the control plane, so it knows no service.' },
  SKEIN_E_BAD_REQUEST: { status: 400, text: 'The request is not well-formed HTTP/1.1 (framing, line endings, header syntax); the proxy closes the connection without forwarding anything.' },
  SKEIN_E_HEADERS_TOO_LARGE: { status: 431, text: 'The request head is larger than the proxy accepts (bytes or header count).' },
  SKEIN_E_REQUEST_TIMEOUT: { status: 408, text: 'The client did not send a complete request head in time (header timeout, the slowloris guard).' },
  SKEIN_E_UPSTREAM_CONNECT: { status: 502, text: 'The proxy could not connect to any endpoint it tried (refused, unreachable or timed out).' },
  SKEIN_E_UPSTREAM_RESET: { status: 502, text: 'The upstream closed or reset the connection before a complete response head.' },
  SKEIN_E_UPSTREAM_PROTOCOL: { status: 502, text: 'The upstream answered with malformed HTTP/1.1.' },
  SKEIN_E_PROXY_DRAINING: { status: 503, text: 'The proxy (or this workload) is shutting down and takes no new requests.' },
  SKEIN_E_UPSTREAM_TIMEOUT: { status: 504, text: 'No response head arrived within the request timeout (all attempts and backoff included), or the last attempt ran out of its per-try timeout with no retry left.' },
  SKEIN_E_DEADLINE_EXCEEDED: { status: 504, text: 'The request arrived with its deadline (x-skein-timeout-ms) already spent, so it was not sent on.' },
  SKEIN_E_BREAKER_OPEN: { status: 503, text: 'Every instance of the service is behind an open circuit breaker (failure accrual); a probe goes through after the backoff.' },
  SKEIN_E_CONNECTION_LIMIT: { status: 503, text: "A proxy listener is at its connection cap (limits.maxConnections) with every connection busy with a request, so the new connection was answered with this and closed; idle and half-sent connections are closed first to make room." },
  SKEIN_E_UPSTREAM_OVERFLOW: { status: 503, text: 'A circuit-breaking limit of the service (requests in flight, pending requests or connections) is reached; the request was refused at once.' },
  SKEIN_E_RATE_LIMITED: { status: 429, text: 'A rate limit of the route (outbound or inbound) refused the request; Retry-After says when to try again.' },
  SKEIN_E_COLD_START_TIMEOUT: { status: 503, text: 'The service is scaled to zero and no instance of it became ready while the request was held (coldStart.timeout).' },
  SKEIN_E_COLD_START_QUEUE_FULL: { status: 503, text: 'The service is scaled to zero and this proxy already holds as many of its requests as coldStart.queue allows.' },
  SKEIN_E_FAULT_INJECTED: { status: 503, text: "The route's fault injection aborted the request (with the route's configured status, not necessarily 503)." },
  // ---- mTLS between proxies (issue 13; docs/security.md) ----
  SKEIN_E_UPSTREAM_TLS: { status: 502, text: "The mTLS handshake with the peer proxy failed, or the peer's certificate was not the identity the registry gives its endpoint; the message and the proxy log name the reason (expired, unknown issuer, wrong identity, ...)." },
  SKEIN_E_MTLS_REQUIRED: { status: 403, text: 'A plaintext connection reached an inbound port whose mTLS mode is strict; it was answered with this and closed.' },
  SKEIN_E_MTLS_REFUSED: { status: 403, text: "An inbound port refused the caller's client certificate (none, expired, from an unknown issuer, without exactly one SPIFFE ID, or from another trust domain); `details.reason` names which." },
  // Workload identity and the CA (issue 13): docs/security.md.
  SKEIN_E_BAD_IDENTITY: { status: 400, text: 'A SPIFFE ID is malformed (scheme, trust domain, path segments, length); the message names what is wrong.' },
  SKEIN_E_BAD_CSR: { status: 400, text: "A certificate signing request cannot be parsed, is not for an ECDSA P-256 key, or its signature does not verify." },
  SKEIN_E_BAD_CA: { status: 400, text: 'An operator-supplied CA certificate, key or chain is unusable (not a CA, the key does not match, the chain does not reach a root).' },
  SKEIN_E_CA_UNAVAILABLE: { status: 503, text: "The CA's issuer is not valid now (expired or not yet valid), so no certificate is issued." },
  SKEIN_E_JOIN_TOKEN_MISSING: { status: 401, text: 'A certificate was asked for without a join token (`authorization: Bearer <token>`).' },
  SKEIN_E_JOIN_TOKEN_UNKNOWN: { status: 401, text: 'The join token is not one the control plane minted (or it expired long ago and was forgotten).' },
  SKEIN_E_JOIN_TOKEN_USED: { status: 401, text: 'The join token was already spent: a join token is used once.' },
  SKEIN_E_JOIN_TOKEN_EXPIRED: { status: 401, text: 'The join token is past its TTL.' },
  SKEIN_E_JOIN_TOKEN_SERVICE: { status: 403, text: 'The join token is not bound to the service a certificate was asked for.' },
  SKEIN_E_CLIENT_CERT_REQUIRED: { status: 401, text: "A renewal was asked for without a client certificate, or not on the control plane's mTLS listener." },
  SKEIN_E_CLIENT_CERT_REFUSED: { status: 401, text: "The client certificate of a renewal does not chain to the mesh's roots, is expired, or names no valid workload identity." },
  // Authorization (issue 13, section 3).
  SKEIN_E_UNKNOWN_POLICY: { status: 404, text: 'The service has no authorization policy of that name.' },
  SKEIN_E_AUTHZ_DENIED: { status: 403, text: "The service's authorization policies deny the request; the message and details name the policy and rule (or say that no ALLOW policy matched, or that the default is deny)." },
  SKEIN_E_BAD_PATH: { status: 400, text: 'The request target cannot be normalized safely (an encoded NUL, a control character, malformed percent-encoding, a form that is not a path), so it is refused before authorization.' },
  SKEIN_E_UNAUTHENTICATED: { status: 401, text: 'The control plane needs a token for this request and got none, or one it does not know (malformed, revoked, expired); the message names the scopes that would do.' },
  SKEIN_E_FORBIDDEN: { status: 403, text: "The token is valid but its scope does not allow this request (or a proxy token is not bound to the instance's service); the message names the scopes needed." },
  SKEIN_E_INSECURE_LISTEN: { status: 400, text: "A server without TLS was asked to listen beyond loopback: the control plane's API (tokens would cross the network in clear; --insecure-listen forces it) (a proxy's admin server beyond loopback is not refused: it serves other hosts its metrics only, SKEIN_E_ADMIN_LOCAL_ONLY)." },
  SKEIN_E_CA_ROTATION: { status: 409, text: 'A root rotation step was refused: out of order, or an announced proxy is not ready for it (the message names them); --force overrides the latter.' },
  SKEIN_E_PROXY_STATE: { status: 500, text: "The proxy's persisted state (--state-dir) is unusable: corrupt, of another mesh or too old; the proxy does not serve from it (the message says why)." },
  SKEIN_E_ADMIN_LOCAL_ONLY: { status: 403, text: "A proxy admin server listening beyond loopback was asked by another host for a tap or a /debug endpoint: those answer this host only (--insecure-admin opens them); /live, /ready, /metrics and /stats answer everyone." },
  SKEIN_E_NO_LEADER: { status: 503, text: 'A read of what only the elected control-plane replica keeps (the golden signals, the mesh event feed) found no leader to forward it to: an election is under way, or the leader does not answer.' },
  // Metrics (issue 16: src/telemetry/prom.ts).
  SKEIN_E_BAD_METRIC: { status: 500, text: 'A metric was defined or used against the rules of Prometheus or its own definition (a malformed or duplicate name, a reserved or repeated label, the wrong number of label values, a counter decreased): a bug in Skein; the message names the metric and what was wrong.' },
  // The proxyless SDK (issue 17)
  SKEIN_E_SDK_UNSUPPORTED: { status: 501, text: 'The SDK was asked for something it does not carry to a mesh service (a protocol upgrade, a FormData body): thrown to the app; call the service through the proxy.' },
  // HTTP/2 and gRPC (issue 17: src/proxy/http2).
  SKEIN_E_H2_RAPID_RESET: { status: 429, text: 'An HTTP/2 client reset more streams than the proxy allows in a short window (rapid reset, CVE-2023-44487): its connection got GOAWAY (ENHANCE_YOUR_CALM) and was closed.' },
} as const satisfies Record<string, { status: number; text: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ErrorBody {
  code: ErrorCode;
  message: string;
  field?: string;
  details?: unknown;
}

export class SkeinError extends Error {
  readonly code: ErrorCode;
  readonly field: string | undefined;
  readonly status: number;
  readonly details: unknown;

  constructor(code: ErrorCode, message: string, opts: { field?: string; details?: unknown; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'SkeinError';
    this.code = code;
    this.field = opts.field;
    this.status = ERROR_CODES[code].status;
    this.details = opts.details;
  }

  toJSON(): ErrorBody {
    const body: ErrorBody = { code: this.code, message: this.message };
    if (this.field !== undefined) body.field = this.field;
    if (this.details !== undefined) body.details = this.details;
    return body;
  }
}

export function isSkeinError(e: unknown): e is SkeinError {
  return e instanceof SkeinError;
}
