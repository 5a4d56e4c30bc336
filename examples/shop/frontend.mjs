// frontend of the Skein demo shop (Node, node: built-ins and @grpc/grpc-js). Serves a small HTML
// page and GET /api/page?user_id=N&product_id=M, which asks user-service, product-service (HTTP)
// and reviews (gRPC) in parallel and joins their answers. It calls them by name THROUGH THE MESH:
// every HTTP call goes to Skein's outbound proxy ($HTTP_PROXY) as an absolute-form request
// (`GET http://user-service/user?...`); the gRPC channel to `reviews:50051` is configured with
// nothing at all: grpc-js reads http_proxy (which skein up sets with HTTP_PROXY) and tunnels
// through the same proxy with `CONNECT reviews:50051`, and the proxy balances every call inside.
// When reviews fails, the page is served without them and says what failed.
//
// Env: PORT (required), HTTP_PROXY and http_proxy (required, http://HOST:PORT), SKEIN_INSTANCE_ID
// (default "local").
import http from 'node:http';
import { grpc, shopPackage } from './reviews-proto.mjs';

const INSTANCE_ID = process.env.SKEIN_INSTANCE_ID || 'local';
const CALL_TIMEOUT_MS = 5000;
const MAX_BODY_BYTES = 1 << 20;

function fail(message) {
  process.stderr.write(`frontend: ${message}\n`);
  process.exit(2);
}

const port = Number(process.env.PORT);
if (!/^\d+$/.test(process.env.PORT ?? '') || port < 1 || port > 65535) fail(`PORT must be set to a port number (1-65535), not ${JSON.stringify(process.env.PORT ?? '')}`);

const proxy = parseProxy(process.env.HTTP_PROXY);
function parseProxy(text) {
  if (!text) fail('HTTP_PROXY is not set: the frontend calls user-service and product-service through the mesh\'s outbound proxy (run it with `skein up examples/shop/shop.yaml`, or set HTTP_PROXY=http://HOST:PORT)');
  let url;
  try {
    url = new URL(text);
  } catch {
    fail(`HTTP_PROXY must be a URL such as http://127.0.0.1:7401, not ${JSON.stringify(text)}`);
  }
  if (url.protocol !== 'http:') fail(`HTTP_PROXY must be an http:// URL, not ${JSON.stringify(text)}`);
  return { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(url.port || 80) };
}

// One pool of keep-alive connections to the proxy, shared by every call.
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

// One gRPC channel to reviews, shared by every call. grpc-js takes its proxy from grpc_proxy,
// then https_proxy, then http_proxy: say so when one of the first two would take the calls
// somewhere else than the mesh. The port is not used: the mesh routes by the service's name.
const grpcProxy = process.env.grpc_proxy || process.env.https_proxy || process.env.http_proxy;
if (grpcProxy !== process.env.HTTP_PROXY) process.stderr.write(`frontend: warning: gRPC calls go through ${JSON.stringify(grpcProxy ?? 'no proxy')} (grpc_proxy, https_proxy, http_proxy), not the mesh's ${process.env.HTTP_PROXY}\n`);
const reviewsClient = new (shopPackage().Reviews)('reviews:50051', grpc.credentials.createInsecure());

/** An error answer of the frontend: `status` and a JSON body; `headers` go with it. */
class HttpError extends Error {
  constructor(status, body, headers = {}) {
    super(body.error);
    this.status = status;
    this.body = body;
    this.headers = headers;
  }
}

/**
 * GET http://SERVICE/PATH through the proxy; resolves to the parsed JSON body of a 2xx answer,
 * or rejects with an HttpError 502 naming the service, the status and the upstream error (with
 * the proxy's x-skein-error header, when the mesh itself failed the call).
 */
function callService(service, path, requestId) {
  const headers = { host: service, accept: 'application/json' };
  if (requestId !== undefined) headers['x-request-id'] = requestId;
  return new Promise((resolve, reject) => {
    const bad = (message, status, upstreamError, skeinError) => {
      const extra = skeinError === undefined ? {} : { 'x-skein-error': skeinError };
      reject(new HttpError(502, { error: message, service, status, upstream_error: upstreamError }, extra));
    };
    const req = http.request(
      { host: proxy.host, port: proxy.port, method: 'GET', path: `http://${service}${path}`, headers, agent, signal: AbortSignal.timeout(CALL_TIMEOUT_MS) },
      (res) => {
        const chunks = [];
        let size = 0;
        res.on('data', (chunk) => {
          size += chunk.length;
          if (size > MAX_BODY_BYTES) res.destroy(new Error(`answer larger than ${MAX_BODY_BYTES} bytes`));
          else chunks.push(chunk);
        });
        res.on('error', (err) => bad(`${service}: ${err.message}`, res.statusCode, null, undefined));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body;
          try {
            body = JSON.parse(text);
          } catch {
            body = undefined;
          }
          const skeinError = res.headers['x-skein-error'];
          const ok = res.statusCode >= 200 && res.statusCode < 300;
          if (ok && body !== null && typeof body === 'object') resolve({ body, servedBy: res.headers['x-served-by'] });
          else if (ok) bad(`${service} answered ${res.statusCode} without a JSON object`, res.statusCode, text.slice(0, 200), skeinError);
          else bad(`${service} answered ${res.statusCode}`, res.statusCode, upstreamError(body, text), skeinError);
        });
      },
    );
    req.on('error', (err) => {
      const timedOut = err.name === 'TimeoutError' || err.name === 'AbortError';
      bad(`${service}: ${timedOut ? `no answer within ${CALL_TIMEOUT_MS} ms` : err.message}`, null, timedOut ? 'timeout' : (err.code ?? err.message), undefined);
    });
    req.end();
  });
}

/**
 * shop.Reviews/ListReviews through the mesh (gRPC); resolves to the reply. Rejects with the gRPC
 * error: its `code` (a grpc-status), `details` and `metadata` (with x-skein-error when the mesh
 * itself failed the call).
 */
function callReviews(productId, requestId) {
  const metadata = new grpc.Metadata();
  if (requestId !== undefined) metadata.set('x-request-id', requestId);
  return new Promise((resolve, reject) => {
    reviewsClient.ListReviews({ product_id: productId }, metadata, { deadline: Date.now() + CALL_TIMEOUT_MS }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

/** The page's `reviews_error` for a failed reviews call: what failed, its gRPC status, and the mesh's error if it made the answer. */
function reviewsError(err) {
  const code = typeof err?.code === 'number' ? err.code : grpc.status.UNKNOWN;
  const skeinError = err?.metadata?.get?.('x-skein-error')?.[0];
  return {
    error: `reviews failed: ${grpc.status[code] ?? code}: ${err?.details || err?.message || 'no details'}`,
    service: 'reviews',
    grpc_status: code,
    grpc_code: grpc.status[code] ?? null,
    skein_error: typeof skeinError === 'string' ? skeinError : null,
  };
}

/** What a failed answer says: the `error` of its JSON body, else that body, else its text. */
function upstreamError(body, text) {
  if (body?.error !== undefined) return body.error;
  if (body !== undefined) return body;
  return text.slice(0, 200) || null;
}

/** The query parameter `field` as a positive integer, or HttpError 400 naming the field. */
function positiveInt(query, field) {
  const values = query.getAll(field);
  if (values.length === 1 && /^[0-9]{1,15}$/.test(values[0]) && Number(values[0]) > 0) return Number(values[0]);
  throw new HttpError(400, { error: `${field} must be a positive integer`, field });
}

async function page(query, requestId) {
  const userId = positiveInt(query, 'user_id');
  const productId = positiveInt(query, 'product_id');
  // The calls run in parallel; when both HTTP calls fail, the user-service failure is reported.
  // Reviews are optional: when that call fails, the page comes without them and says why.
  const [user, product, reviews] = await Promise.allSettled([
    callService('user-service', `/user?user_id=${userId}`, requestId),
    callService('product-service', `/product?product_id=${productId}`, requestId),
    callReviews(productId, requestId),
  ]);
  for (const r of [user, product]) if (r.status === 'rejected') throw r.reason;
  const gotReviews = reviews.status === 'fulfilled';
  return {
    user: user.value.body.user,
    product: product.value.body.product,
    reviews: gotReviews ? { average_stars: reviews.value.average_stars, items: reviews.value.reviews } : null,
    reviews_error: gotReviews ? null : reviewsError(reviews.reason),
    served_by: {
      frontend: INSTANCE_ID,
      user: user.value.body.served_by ?? user.value.servedBy ?? null,
      product: product.value.body.served_by ?? product.value.servedBy ?? null,
      reviews: gotReviews ? reviews.value.served_by : null,
    },
  };
}

const escapeHtml = (s) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const INDEX_HTML = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Skein demo shop</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem}code{background:#eee;padding:0 .2em}</style>
</head>
<body>
<h1>Skein demo shop</h1>
<p>Four services run in this mesh: this <b>frontend</b> (Node), <b>user-service</b> and
<b>product-service</b> (Python, standard library only, two replicas each), and <b>reviews</b>
(Node, gRPC, two replicas). The frontend calls the others by name,
<code>http://user-service/user?user_id=1</code> and the gRPC method
<code>shop.Reviews/ListReviews</code> of <code>reviews</code>, through Skein's outbound proxy,
which picks a healthy replica for every call. Every answer says which replica served it.</p>
<ul>
<li><a href="/api/page?user_id=1&amp;product_id=2">/api/page?user_id=1&amp;product_id=2</a>: a user and a product, fetched in parallel</li>
<li><a href="/api/page?user_id=3&amp;product_id=5">/api/page?user_id=3&amp;product_id=5</a></li>
<li><a href="/api/page?user_id=2&amp;product_id=4">/api/page?user_id=2&amp;product_id=4</a>: the reviews call fails (gRPC INTERNAL, on purpose): the page comes without reviews and says so</li>
<li><a href="/api/page?user_id=42&amp;product_id=1">/api/page?user_id=42&amp;product_id=1</a>: an unknown user (502 naming user-service and its 404)</li>
<li><a href="/api/page?user_id=abc&amp;product_id=1">/api/page?user_id=abc&amp;product_id=1</a>: bad input (400)</li>
<li><a href="/health">/health</a></li>
</ul>
<p>Served by <code>${escapeHtml(INSTANCE_ID)}</code>. Reload <code>/api/page</code> to watch the replicas take turns.</p>
</body>
</html>
`;

function send(res, status, body, headers = {}) {
  const isHtml = typeof body === 'string';
  const payload = Buffer.from(isHtml ? body : `${JSON.stringify(body)}\n`);
  res.writeHead(status, {
    'content-type': isHtml ? 'text/html; charset=utf-8' : 'application/json',
    'content-length': payload.length,
    'x-served-by': INSTANCE_ID,
    ...headers,
  });
  res.end(res.req.method === 'HEAD' ? undefined : payload);
}

const routes = {
  '/': async () => INDEX_HTML,
  '/health': async () => ({ status: 'ok' }),
  '/api/page': page,
};

const server = http.createServer(async (req, res) => {
  const started = process.hrtime.bigint();
  res.on('finish', () => {
    // A passing readiness check (every 100 ms) is not logged: it would bury the requests.
    if (req.url === '/health' && res.statusCode === 200) return;
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    process.stderr.write(`${req.method} ${req.url} ${res.statusCode} ${ms.toFixed(1)}ms\n`);
  });
  const requestId = req.headers['x-request-id'];
  const echo = requestId === undefined ? {} : { 'x-request-id': requestId };
  let url;
  try {
    url = new URL(req.url, 'http://frontend');
  } catch {
    return send(res, 400, { error: 'malformed request target' }, echo);
  }
  const route = routes[url.pathname];
  if (route === undefined) return send(res, 404, { error: `no route for ${url.pathname}` }, echo);
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    return send(res, 405, { error: `method ${req.method} not allowed`, allow: 'GET, HEAD' }, { ...echo, allow: 'GET, HEAD' });
  }
  try {
    send(res, 200, await route(url.searchParams, requestId), echo);
  } catch (err) {
    if (err instanceof HttpError) return send(res, err.status, err.body, { ...echo, ...err.headers });
    process.stderr.write(`error in ${url.pathname}: ${err?.stack ?? err}\n`);
    send(res, 500, { error: 'internal error' }, echo);
  }
});

server.listen(port, '127.0.0.1', () => {
  process.stderr.write(`frontend (${INSTANCE_ID}) listening on 127.0.0.1:${port}, calling through the proxy at ${proxy.host}:${proxy.port}\n`);
});
server.on('error', (err) => fail(`cannot listen on 127.0.0.1:${port}: ${err.message}`));

// SIGTERM (and Ctrl-C): stop accepting, let requests in flight finish, close pooled connections.
function stop() {
  server.close(() => {
    agent.destroy();
    process.stderr.write(`frontend (${INSTANCE_ID}) stopped\n`);
    process.exit(0);
  });
  server.closeIdleConnections();
  setTimeout(() => process.exit(0), CALL_TIMEOUT_MS + 1000).unref(); // a stuck client cannot hold us up
}
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
