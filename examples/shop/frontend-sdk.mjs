// A second frontend of the Skein demo shop, for the other way into the mesh: it uses no proxy.
// The proxyless SDK (`skein/sdk`, docs/sdk.md) is its global fetch dispatcher, so
// `fetch('http://frontend/...')` is balanced, retried, timed out and explained by the same engine
// as the proxy's, inside this process. It serves GET /api/page?user_id=N&product_id=M by asking the
// frontend service for the same page (the frontend then calls the Python services through its
// proxy), and says which replicas served it.
//
// It calls the frontend over mTLS, as a proxy would: the SDK holds the certificate of its workload
// (spiffe://shop/ns/default/sa/frontend-sdk), got from the mesh CA with the join token `skein up`
// gives it and renewed by itself, and checks that the frontend's proxy is the frontend's identity.
// It calls the frontend and not the Python services because those admit only the frontend.
//
// Env: PORT (required), SKEIN_CONTROL (required: the control plane, which `skein up` passes),
// SKEIN_MTLS and SKEIN_JOIN_TOKEN (`skein up` passes them: the mesh's mTLS mode and a join token
// for the SDK's certificate, with which it also announces its metrics), SKEIN_INSTANCE_ID
// (default "local").
import http from 'node:http';
import { setGlobalDispatcher } from 'undici';
import { createMeshDispatcher } from 'skein/sdk';

const INSTANCE_ID = process.env.SKEIN_INSTANCE_ID || 'local';

function fail(message) {
  process.stderr.write(`frontend-sdk: ${message}\n`);
  process.exit(2);
}

const port = Number(process.env.PORT);
if (!/^\d+$/.test(process.env.PORT ?? '') || port < 1 || port > 65535) fail(`PORT must be set to a port number (1-65535), not ${JSON.stringify(process.env.PORT ?? '')}`);
const control = process.env.SKEIN_CONTROL;
if (!control) fail('SKEIN_CONTROL is not set: the SDK follows the control plane (run it with `skein up examples/shop/shop.yaml`, or set SKEIN_CONTROL=http://HOST:PORT)');

const mesh = createMeshDispatcher({ control, service: 'frontend-sdk', metrics: { listen: '127.0.0.1:0' } });
setGlobalDispatcher(mesh);

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body) + '\n');
}

async function page(search, requestId) {
  const res = await fetch(`http://frontend/api/page${search}`, {
    headers: { accept: 'application/json', 'x-skein-explain': '1', ...(requestId ? { 'x-request-id': requestId } : {}) },
    signal: AbortSignal.timeout(6000),
  });
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = { error: text.slice(0, 200) };
  }
  // What the mesh decided (which frontend replica, attempts, the retry budget): the SDK's explanation.
  const mesh = { explain: res.headers.get('x-skein-explain'), error: res.headers.get('x-skein-error') };
  if (res.ok) body.served_by = { frontend_sdk: INSTANCE_ID, ...body.served_by };
  return { status: res.status, body: { ...body, via: 'sdk', mesh }, skeinError: mesh.error };
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url ?? '/', 'http://frontend-sdk');
  if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, { error: 'only GET and HEAD' }, { allow: 'GET, HEAD' });
  if (url.pathname === '/health') return send(res, 200, { status: 'ok' });
  if (url.pathname === '/') return send(res, 200, { see: '/api/page?user_id=1&product_id=2', via: 'sdk' });
  if (url.pathname !== '/api/page') return send(res, 404, { error: `no route ${url.pathname}` });
  const rid = req.headers['x-request-id'];
  try {
    const r = await page(url.search, typeof rid === 'string' ? rid : undefined);
    send(res, r.status, r.body, r.skeinError ? { 'x-skein-error': r.skeinError } : {});
  } catch (e) {
    send(res, 502, { error: `calling the frontend failed: ${e.message}`, service: 'frontend', via: 'sdk' });
  }
});

// Ready (listening) once the SDK has the mesh's state and its certificate.
mesh.ready(30_000).then(
  () =>
    server.listen(port, '127.0.0.1', async () => {
      const cert = mesh.certificate();
      process.stderr.write(`frontend-sdk (${INSTANCE_ID}) listening on 127.0.0.1:${port}, calling the mesh in-process (SDK, control plane ${control}; ${cert === null ? 'mTLS off' : `mTLS as ${cert.identity}`}; metrics on ${await mesh.metricsAddress()})\n`);
    }),
  (e) => fail(`the SDK is not ready: ${e.message}`),
);
server.on('error', (err) => fail(`cannot listen on 127.0.0.1:${port}: ${err.message}`));

function stop() {
  server.close(() => void mesh.close().then(() => process.exit(0)));
  setTimeout(() => process.exit(0), 6000).unref();
}
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
