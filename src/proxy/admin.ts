/**
 * The proxy's admin server: `/live` (the process answers), `/ready` (the proxy can route: it has
 * had its first snapshot from the control plane), `/metrics` (Prometheus) and `/debug/endpoints`
 * (what the proxy currently believes about each service). Not on the request path: node:http.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { HostPort } from '../core/address.js';
import { SkeinError } from '../core/errors.js';
import type { Proxy } from './proxy.js';

function json(res: import('node:http').ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export interface AdminServer {
  readonly address: string;
  close(): Promise<void>;
}

export async function startAdmin(proxy: Proxy, at: HostPort): Promise<AdminServer> {
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://admin');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      json(res, 405, { code: 'SKEIN_E_NOT_FOUND', message: `${req.method} is not supported here; the admin endpoints take GET` });
      return;
    }
    switch (url.pathname) {
      case '/live':
        json(res, 200, { live: true });
        return;
      case '/ready':
        if (proxy.ready) json(res, 200, { ready: true });
        else json(res, 503, { ready: false, code: 'SKEIN_E_DISCOVERY_UNAVAILABLE', message: 'no snapshot from the control plane yet' });
        return;
      case '/metrics':
        proxy.metrics.text().then(
          (text) => {
            res.writeHead(200, { 'content-type': proxy.metrics.registry.contentType });
            res.end(text);
          },
          (e: unknown) => json(res, 500, { code: 'SKEIN_E_INTERNAL', message: (e as Error).message }),
        );
        return;
      case '/debug/endpoints':
        json(res, 200, proxy.debugEndpoints());
        return;
      default:
        json(res, 404, { code: 'SKEIN_E_NOT_FOUND', message: `no admin endpoint ${url.pathname} (there are /live, /ready, /metrics, /debug/endpoints)` });
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new SkeinError('SKEIN_E_ADDRESS_IN_USE', `admin server: cannot listen on ${at.host}:${at.port}: ${e.code ?? e.message}`, { field: '--admin' })),
    );
    server.listen({ host: at.host, port: at.port }, () => resolve());
  });
  const a = server.address() as AddressInfo;
  return {
    address: `${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
