/**
 * Helpers for proxy integration tests: start `skein proxy` as a child process, talk raw bytes to
 * a port (node:net, so malformed requests reach the proxy exactly as written), a recording TCP
 * backend, instance registration, and the corpus of malformed / smuggling requests that every
 * HTTP/1.1 listener of the proxy must refuse.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createConnection, createServer, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import http from 'node:http';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { SKEIN_BIN, adminTokenOf, api, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { INBOUND_PROXY_LABEL } from '../src/api/names.js';
import { MESH_ALPN } from '../src/api/mtls.js';

// ---------------------------------------------------------------------------------------------
// Starting a proxy
// ---------------------------------------------------------------------------------------------

export interface HostPort {
  host: string;
  port: number;
}

export interface ProxyWorkload {
  name: string;
  outbound: HostPort | null;
  inbound: HostPort | null;
  app: HostPort | null;
}

export interface ProxyProcess {
  child: ChildProcess;
  /** e.g. http://127.0.0.1:12345 */
  admin: string;
  adminPort: number;
  workloads: ProxyWorkload[];
  /** stdout and stderr lines, in arrival order. */
  logs: string[];
  /** The workload called `name` (throws if the proxy did not report it). */
  workload(name: string): ProxyWorkload;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** "127.0.0.1:80" or "[::1]:80" -> {host, port}; null stays null. */
export function parseHostPort(text: string | null | undefined): HostPort | null {
  if (text == null) return null;
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text);
  if (!m) throw new Error(`not a host:port: ${JSON.stringify(text)}`);
  return { host: (m[1] ?? m[2]) as string, port: Number(m[3]) };
}

/** The proxy's ready line (`{"msg":"proxy ready","admin":...,"workloads":[...]}`), or null for any other line. */
export function parseProxyReady(line: string): { admin: HostPort; workloads: ProxyWorkload[] } | null {
  let j: { msg?: unknown; admin?: unknown; workloads?: unknown };
  try {
    j = JSON.parse(line) as typeof j;
  } catch {
    return null;
  }
  if (j === null || typeof j !== 'object' || j.msg !== 'proxy ready' || typeof j.admin !== 'string' || !Array.isArray(j.workloads)) return null;
  const workloads = (j.workloads as Array<{ name: string; outbound?: string | null; inbound?: string | null; app?: string | null }>).map((w) => ({
    name: w.name,
    outbound: parseHostPort(w.outbound),
    inbound: parseHostPort(w.inbound),
    app: parseHostPort(w.app),
  }));
  return { admin: parseHostPort(j.admin) as HostPort, workloads };
}

/**
 * Starts `skein proxy --control URL --admin 127.0.0.1:0 --workload SPEC... --log-level info` and
 * resolves once it printed its ready line. Rejects with the logs if it exits first; killed if it
 * is not ready within `timeoutMs` (default 20 s). Ready means listening: use `waitForProxyReady`
 * to wait for the first snapshot from the control plane.
 */
export async function startProxy(opts: {
  control: string;
  workloads: string[];
  args?: string[];
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}): Promise<ProxyProcess> {
  const argv = [SKEIN_BIN, 'proxy', '--control', opts.control, '--admin', '127.0.0.1:0'];
  for (const w of opts.workloads) argv.push('--workload', w);
  argv.push('--log-level', 'info', ...(opts.args ?? []));
  // The proxy announces itself with a token: the control plane's admin token unless the test gives one.
  const token = opts.env?.['SKEIN_TOKEN'] ?? process.env['SKEIN_TOKEN'] ?? (await adminTokenOf(opts.control));
  const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...(token === null ? {} : { SKEIN_TOKEN: token }), ...opts.env } });
  const logs: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ready = new Promise<NonNullable<ReturnType<typeof parseProxyReady>>>((resolve, reject) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      logs.push(line);
      const r = parseProxyReady(line);
      if (r) resolve(r);
    });
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', (l) => logs.push(l));
    child.once('error', (e) => reject(e));
    void exited.then((code) => reject(new Error(`skein proxy exited with ${code} before it was ready:\n${logs.join('\n')}`)));
  });
  const timeout = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 20_000);
  let r: NonNullable<ReturnType<typeof parseProxyReady>>;
  try {
    r = await ready;
  } finally {
    clearTimeout(timeout);
  }
  return {
    child,
    admin: `http://${r.admin.host.includes(':') ? `[${r.admin.host}]` : r.admin.host}:${r.admin.port}`,
    adminPort: r.admin.port,
    workloads: r.workloads,
    logs,
    workload(name: string) {
      const w = r.workloads.find((x) => x.name === name);
      if (!w) throw new Error(`proxy reported no workload "${name}" (has: ${r.workloads.map((x) => x.name).join(', ')})`);
      return w;
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

/** Polls the admin `GET /ready` until 200 (the proxy has its first snapshot). */
export async function waitForProxyReady(proxy: ProxyProcess, timeoutMs = 15_000): Promise<void> {
  await waitFor(async () => (await api(proxy.admin, 'GET', '/ready')).status === 200, {
    timeoutMs,
    what: `proxy /ready to answer 200; logs:\n${proxy.logs.slice(-20).join('\n')}`,
  });
}

/** Registers `127.0.0.1:port` as instance `id` of `service` (no check: always healthy). */
export async function registerInstance(controlUrl: string, service: string, id: string, port: number, extra: Record<string, unknown> = {}): Promise<any> {
  const r = await api(controlUrl, 'PUT', `/v1/services/${encodeURIComponent(service)}/instances/${encodeURIComponent(id)}`, {
    address: '127.0.0.1',
    port,
    ...extra,
  });
  if (r.status !== 200 && r.status !== 201) throw new Error(`registering ${service}/${id} failed: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/**
 * Two proxies in a row, as two workloads of a mesh talk: A, the caller's proxy (an outbound
 * listener for workload `client`), and B, the callees' proxy (an inbound listener in front of each
 * app). Each service of `apps` is registered as instance `<service>-1` at B's inbound listener for
 * its app (labelled as an inbound listener, as `skein up` does); each alias is one more service
 * registered at the inbound listener of the service it names; `services` are Service resources
 * put first (by name). A request to `outbound` goes A -> B -> app; one to `inbound[service]`
 * goes B -> app.
 */
export interface Chain {
  readonly control: ControlProcess;
  readonly a: ProxyProcess;
  readonly b: ProxyProcess;
  /** A's outbound port. */
  readonly outbound: number;
  /** B's inbound port, by service. */
  readonly inbound: Readonly<Record<string, number>>;
  stop(): Promise<void>;
}

export async function startChain(apps: Record<string, number>, opts: { aliases?: Record<string, string>; services?: Record<string, object> } = {}): Promise<Chain> {
  const aliases = opts.aliases ?? {};
  const stops: Array<() => Promise<unknown>> = [];
  const stop = async () => {
    for (const f of stops.reverse()) await f().catch(() => {});
  };
  try {
    const dir = await tempDir('skein-chain-');
    stops.push(dir.remove);
    const control = await startControl({ dataDir: dir.path, args: ['--dns', 'off'] });
    stops.push(() => control.stop());
    for (const [name, body] of Object.entries(opts.services ?? {})) {
      const r = await api(control.http, 'PUT', `/v1/services/${name}`, body);
      if (r.status !== 200 && r.status !== 201) throw new Error(`PUT /v1/services/${name}: ${r.status} ${JSON.stringify(r.body)}`);
    }
    const b = await startProxy({ control: control.http, workloads: Object.entries(apps).map(([svc, port]) => `name=${svc}-1,service=${svc},inbound=127.0.0.1:0,app=127.0.0.1:${port}`) });
    stops.push(() => b.stop());
    const inbound: Record<string, number> = {};
    for (const svc of Object.keys(apps)) inbound[svc] = (b.workload(`${svc}-1`).inbound as HostPort).port;
    const labels = { [INBOUND_PROXY_LABEL]: 'true' };
    for (const [svc, port] of Object.entries(inbound)) await registerInstance(control.http, svc, `${svc}-1`, port, { labels });
    for (const [alias, svc] of Object.entries(aliases)) await registerInstance(control.http, alias, `${alias}-1`, inbound[svc] as number, { labels });
    const a = await startProxy({ control: control.http, workloads: ['name=client,outbound=127.0.0.1:0'] });
    stops.push(() => a.stop());
    await waitForProxyReady(a);
    const names = [...Object.keys(apps), ...Object.keys(aliases)];
    await waitFor(
      async () => {
        const d = (await api(a.admin, 'GET', '/debug/endpoints')).body as { services?: Record<string, { endpoints: unknown[] }> };
        return names.every((n) => (d.services?.[n]?.endpoints.length ?? 0) > 0);
      },
      { timeoutMs: 15_000, what: `proxy A to know ${names.join(', ')}` },
    );
    return { control, a, b, outbound: (a.workload('client').outbound as HostPort).port, inbound, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/**
 * A backend that answers each request with the raw bytes `script(target)` gives (undefined: a
 * plain 200 "ok"), after reading the request head (requests in these tests have no body).
 */
export async function scriptedBackend(script: (target: string) => string | undefined): Promise<{ port: number; targets: string[]; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const targets: string[] = [];
  const srv = createServer((sock) => {
    sockets.add(sock);
    let pending = '';
    sock.on('data', (d: Buffer) => {
      pending += d.toString('latin1');
      for (let end = pending.indexOf('\r\n\r\n'); end >= 0; end = pending.indexOf('\r\n\r\n')) {
        const target = pending.slice(0, pending.indexOf('\r\n')).split(' ')[1] ?? '';
        pending = pending.slice(end + 4);
        targets.push(target);
        sock.write(script(target) ?? 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok', 'latin1');
      }
    });
    sock.on('error', () => {});
    sock.on('close', () => sockets.delete(sock));
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', () => resolve()));
  return {
    port: (srv.address() as { port: number }).port,
    targets,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => srv.close(() => resolve()));
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 over node:net
// ---------------------------------------------------------------------------------------------

export interface RawExchangeResult {
  /** Everything received before the connection closed, `until` matched, or the deadline. */
  response: Buffer;
  /** The server closed the connection (FIN or RST) within the deadline. */
  closed: boolean;
  /** A socket error seen after connecting (ECONNRESET, EPIPE), if any. */
  error: string | null;
}

/**
 * Connects to 127.0.0.1:port, writes `bytes` in one write, and collects what comes back. Our
 * side is never half-closed, so `closed` means the server chose to close. Resolves when the
 * server closes, when `until(received)` is true (the socket is then destroyed by us and `closed`
 * is false), or at the deadline (default 5 s). Rejects only if the connection cannot be made.
 */
export function rawExchange(
  port: number,
  bytes: Buffer | string,
  opts: { timeoutMs?: number; host?: string; until?: (received: Buffer) => boolean } = {},
): Promise<RawExchangeResult> {
  const data = typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes;
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let connected = false;
    let done = false;
    let error: string | null = null;
    const sock: Socket = createConnection({ host: opts.host ?? '127.0.0.1', port });
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ response: Buffer.concat(chunks), closed, error });
    };
    const timer = setTimeout(() => finish(false), opts.timeoutMs ?? 5_000);
    sock.setNoDelay(true);
    sock.on('connect', () => {
      connected = true;
      sock.write(data);
    });
    sock.on('data', (d: Buffer) => {
      chunks.push(d);
      if (opts.until?.(Buffer.concat(chunks))) finish(false);
    });
    sock.on('end', () => finish(true));
    sock.on('close', () => finish(true));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      if (!connected) {
        done = true;
        clearTimeout(timer);
        reject(e);
        return;
      }
      error = e.code ?? e.message;
      finish(true);
    });
  });
}

export interface ParsedResponse {
  statusLine: string;
  /** e.g. "HTTP/1.1" */
  version: string;
  status: number;
  /** Lower-cased names; repeated fields joined with ", ". */
  headers: Record<string, string>;
  body: Buffer;
  /** The body is complete (by content-length, chunked framing, or no body expected). */
  complete: boolean;
}

/** Parses the first HTTP/1.x response in `buf`; null until its head is complete. */
export function parseResponse(buf: Buffer): ParsedResponse | null {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
  const statusLine = lines[0] ?? '';
  const m = /^(HTTP\/\d\.\d) (\d{3})(?: .*)?$/.exec(statusLine);
  if (!m) throw new Error(`not an HTTP response: ${JSON.stringify(statusLine)}`);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const c = line.indexOf(':');
    if (c <= 0) continue;
    const name = line.slice(0, c).trim().toLowerCase();
    const value = line.slice(c + 1).trim();
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  const status = Number(m[2]);
  const rest = buf.subarray(end + 4);
  if (status === 204 || status === 304 || (status >= 100 && status < 200)) {
    return { statusLine, version: m[1] as string, status, headers, body: Buffer.alloc(0), complete: true };
  }
  if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
    const decoded = decodeChunked(rest);
    if (decoded === 'invalid') throw new Error('invalid chunked response body');
    return { statusLine, version: m[1] as string, status, headers, body: decoded?.body ?? rest, complete: decoded !== null };
  }
  if (headers['content-length'] !== undefined) {
    const n = Number(headers['content-length']);
    return { statusLine, version: m[1] as string, status, headers, body: rest.subarray(0, n), complete: rest.length >= n };
  }
  // Delimited by close: complete only once the caller saw the close.
  return { statusLine, version: m[1] as string, status, headers, body: rest, complete: false };
}

/** For `rawExchange`'s `until`: the first response has arrived completely. */
export function isCompleteResponse(buf: Buffer): boolean {
  try {
    return parseResponse(buf)?.complete ?? false;
  } catch {
    return false;
  }
}

/**
 * Decodes a chunked body at the start of `buf` (chunk extensions and trailers skipped, strict
 * CRLF). null: incomplete; 'invalid': not chunked framing; else the body and the bytes consumed.
 */
export function decodeChunked(buf: Buffer): { body: Buffer; consumed: number } | null | 'invalid' {
  const parts: Buffer[] = [];
  let pos = 0;
  for (;;) {
    const eol = buf.indexOf('\r\n', pos);
    if (eol < 0) return buf.length - pos > 1024 ? 'invalid' : null;
    const sizeText = buf.subarray(pos, eol).toString('latin1').split(';')[0] as string;
    if (!/^[0-9a-fA-F]{1,15}$/.test(sizeText)) return 'invalid';
    const size = parseInt(sizeText, 16);
    pos = eol + 2;
    if (size === 0) {
      // Trailer section: field lines until an empty line.
      for (;;) {
        const t = buf.indexOf('\r\n', pos);
        if (t < 0) return null;
        const empty = t === pos;
        pos = t + 2;
        if (empty) return { body: Buffer.concat(parts), consumed: pos };
      }
    }
    if (buf.length < pos + size + 2) return null;
    parts.push(buf.subarray(pos, pos + size));
    if (buf[pos + size] !== 0x0d || buf[pos + size + 1] !== 0x0a) return 'invalid';
    pos += size + 2;
  }
}

// ---------------------------------------------------------------------------------------------
// A recording backend
// ---------------------------------------------------------------------------------------------

export interface RecordedRequest {
  /** Index of the connection it came on (0-based, in accept order). */
  connection: number;
  method: string;
  target: string;
  version: string;
  /** Lower-cased names; repeated fields joined with ", ". */
  headers: Record<string, string>;
  /** The decoded body. */
  body: Buffer;
  /** The exact bytes of this request (head and framed body) as received. */
  raw: Buffer;
}

export interface RecordingBackend {
  port: number;
  /** All bytes received on all connections since the last reset, connection after connection. */
  received(): Buffer;
  /** Bytes received per connection since the last reset (connections accepted before a reset included). */
  receivedPerConnection(): Buffer[];
  /** Complete requests parsed from the bytes since the last reset. */
  requests: RecordedRequest[];
  /** Connections accepted since the last reset. */
  readonly connections: number;
  /** Forgets everything recorded so far (open connections stay open). */
  reset(): void;
  close(): Promise<void>;
}

/**
 * A raw TCP server on 127.0.0.1:0 that records every byte it receives and answers each complete
 * request with `HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok`.
 *
 * It frames requests (CRLF head, then a content-length or chunked body) rather than answering
 * once per CRLFCRLF seen: a chunked body ends with "0\r\n\r\n", so the naive rule would answer a
 * legal chunked POST twice (once early, before its body), and the proxy would see an unsolicited
 * response on its pooled upstream connection. Bytes it cannot frame are still recorded, just
 * never answered: it stays a sink.
 */
export async function recordingBackend(): Promise<RecordingBackend> {
  interface Conn {
    index: number;
    recorded: Buffer[];
    pending: Buffer;
    broken: boolean;
    closed: boolean;
  }
  let conns: Conn[] = [];
  let accepted = 0;
  let connectionsSinceReset = 0;
  const sockets = new Set<Socket>();
  const backend: RecordingBackend = {
    port: 0,
    received: () => Buffer.concat(conns.flatMap((c) => c.recorded)),
    receivedPerConnection: () => conns.map((c) => Buffer.concat(c.recorded)),
    requests: [],
    get connections() {
      return connectionsSinceReset;
    },
    reset() {
      for (const c of conns) c.recorded = [];
      conns = conns.filter((c) => !c.closed);
      backend.requests.length = 0;
      connectionsSinceReset = 0;
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => srv.close(() => resolve()));
    },
  };
  const srv = createServer((sock) => {
    sockets.add(sock);
    const c: Conn = { index: accepted++, recorded: [], pending: Buffer.alloc(0), broken: false, closed: false };
    conns.push(c);
    connectionsSinceReset++;
    sock.on('data', (d: Buffer) => {
      c.recorded.push(d);
      if (c.broken) return;
      c.pending = Buffer.concat([c.pending, d]);
      for (;;) {
        const r = frameRequest(c.pending);
        if (r === null) break;
        if (r === 'invalid') {
          c.broken = true;
          break;
        }
        backend.requests.push({ connection: c.index, ...r.request, raw: c.pending.subarray(0, r.consumed) });
        c.pending = c.pending.subarray(r.consumed);
        sock.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
      }
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      c.closed = true;
      sockets.delete(sock);
    });
  });
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve());
  });
  backend.port = (srv.address() as { port: number }).port;
  return backend;
}

/** One request at the start of `buf`: null if incomplete, 'invalid' if it cannot be framed. */
function frameRequest(buf: Buffer): { request: Omit<RecordedRequest, 'connection' | 'raw'>; consumed: number } | null | 'invalid' {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return buf.length > 1024 * 1024 ? 'invalid' : null;
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
  const m = /^(\S+) (\S+) (HTTP\/\d\.\d)$/.exec(lines[0] ?? '');
  if (!m) return 'invalid';
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const c = line.indexOf(':');
    if (c <= 0) return 'invalid';
    const name = line.slice(0, c).toLowerCase();
    const value = line.slice(c + 1).trim();
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  const head = { method: m[1] as string, target: m[2] as string, version: m[3] as string, headers };
  const bodyStart = end + 4;
  const te = headers['transfer-encoding'];
  if (te !== undefined) {
    if (!/(^|,)\s*chunked\s*$/i.test(te)) return 'invalid';
    const d = decodeChunked(buf.subarray(bodyStart));
    if (d === null || d === 'invalid') return d;
    return { request: { ...head, body: d.body }, consumed: bodyStart + d.consumed };
  }
  const cl = headers['content-length'];
  if (cl !== undefined) {
    if (!/^\d{1,15}$/.test(cl)) return 'invalid';
    const n = Number(cl);
    if (buf.length < bodyStart + n) return null;
    return { request: { ...head, body: buf.subarray(bodyStart, bodyStart + n) }, consumed: bodyStart + n };
  }
  return { request: { ...head, body: Buffer.alloc(0) }, consumed: bodyStart };
}

// ---------------------------------------------------------------------------------------------
// The framing corpus: requests an HTTP/1.1 listener of the proxy must refuse (400, close)
// ---------------------------------------------------------------------------------------------

export interface MalformedRequest {
  name: string;
  /** The rule it breaks (RFC 9112 / RFC 9110), or why we refuse where the RFC would let us accept. */
  why: string;
  /**
   * 'head': decidable from the request head alone, so not one byte of it may be forwarded.
   * 'body': the head is valid and the chunked body is not; a streaming proxy may already have
   * forwarded the head, but never a complete request, and nothing after the bad framing.
   */
  stage: 'head' | 'body';
  bytes: Buffer;
  /** In the request target of the entry itself: `/framing/<slug>`. */
  marker: string;
  /** The request target of a request hidden behind the bad framing (`/smuggled/<slug>`), if any. */
  smuggled: string | null;
}

/**
 * The corpus. Each entry starts with the bad request itself: no valid request precedes the bad
 * part, so a correct proxy forwards nothing of it (except, for 'body' entries, possibly the head).
 * Only requests that are invalid per RFC 9112 / 9110, or that the RFC lets a recipient either
 * reject or repair, are here; in the second case we are strict and `why` says so. Left out as
 * legal: `Transfer-Encoding:<TAB>chunked` (OWS is SP / HTAB), `Chunked` in any case.
 *
 * Each of llhttp's leniency flags lets some entry through (checked by turning each on in turn),
 * except `keep_alive` and `data_after_close`: the proxy closes after a `Connection: close` request
 * itself, which the framing test checks apart.
 */
export function malformedRequests(host = 'sink'): MalformedRequest[] {
  const out: MalformedRequest[] = [];
  const smuggledRequest = (slug: string) => `GET /smuggled/${slug} HTTP/1.1\r\nHost: ${host}\r\n\r\n`;
  const add = (stage: 'head' | 'body', slug: string, name: string, why: string, build: (path: string, hidden: string) => string, hides = true) => {
    const marker = `/framing/${slug}`;
    out.push({
      name,
      why,
      stage,
      bytes: Buffer.from(build(marker, smuggledRequest(slug)), 'latin1'),
      marker,
      smuggled: hides ? `/smuggled/${slug}` : null,
    });
  };
  const chunkedBody = '5\r\nhello\r\n0\r\n\r\n';

  // --- Content-Length and Transfer-Encoding together ---------------------------------------
  add('head', 'cl-te', 'CL.TE: Content-Length and Transfer-Encoding: chunked', 'RFC 9112 §6.1: a server MAY reject a request with both (and MUST close after answering); §6.3: ought to be handled as an error. We reject.', (p, s) => {
    const body = `0\r\n\r\n${s}`;
    return `POST ${p} HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\n\r\n${body}`;
  });
  add('head', 'te-cl', 'TE.CL: Transfer-Encoding: chunked, then Content-Length', 'as CL.TE; here a Content-Length reader would take the chunk body as a second request', (p, s) => {
    const body = `${s.length.toString(16)}\r\n${s}\r\n0\r\n\r\n`;
    return `POST ${p} HTTP/1.1\r\nHost: ${host}\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n${body}`;
  });

  // --- Content-Length ------------------------------------------------------------------------
  const cl = (slug: string, name: string, why: string, value: string, body = 'hello') =>
    add('head', slug, name, why, (p) => `POST ${p} HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${value}\r\n\r\n${body}`, false);
  const clWhy = 'Content-Length = 1*DIGIT (RFC 9110 §8.6); an invalid one without Transfer-Encoding: MUST 400 and close (RFC 9112 §6.3 rule 5)';
  add('head', 'cl-cl-differ', 'two Content-Length fields with different values', 'RFC 9110 §8.6 / RFC 9112 §6.3 rule 5: differing values are invalid framing: MUST 400 and close', (p, s) =>
    `POST ${p} HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 0\r\nContent-Length: ${s.length}\r\n\r\n${s}`);
  // Strict on purpose: RFC 9110 §8.6 lets a recipient collapse identical duplicates, but a proxy
  // that accepts them leaves the interpretation to whatever parser comes next.
  cl('cl-cl-same', 'two identical Content-Length fields (strict)', 'RFC 9110 §8.6: a recipient MAY reject identical duplicates or collapse them; we are strict and reject', '5\r\nContent-Length: 5');
  cl('cl-plus', 'Content-Length with a sign: +5', clWhy, '+5');
  cl('cl-minus', 'Content-Length negative: -5', clWhy, '-5');
  cl('cl-inner-space', 'Content-Length with a space inside: 1 0', clWhy, '1 0', 'helloworld');
  cl('cl-hex', 'Content-Length not digits: 0x5', `${clWhy} (Number() would accept it)`, '0x5');
  cl('cl-decimal', 'Content-Length not digits: 5.0', `${clWhy} (Number() would accept it)`, '5.0');
  cl('cl-empty', 'Content-Length empty', clWhy, '');
  cl('cl-list', 'Content-Length list: 5, 5 (strict)', 'RFC 9110 §8.6: a recipient MAY accept a list of identical values; we are strict and reject', '5, 5');
  cl('cl-overflow', 'Content-Length overflow: 99999999999999999999999', 'RFC 9110 §8.6: recipients MUST prevent integer overflow; a length no parser can hold is invalid framing', '99999999999999999999999');

  // --- Transfer-Encoding -------------------------------------------------------------------
  const teWhy = 'RFC 9112 §6.3 rule 4: chunked is not the final coding of a request: MUST 400 and close';
  const te = (slug: string, name: string, why: string, fields: string) =>
    add('head', slug, name, why, (p, s) => `POST ${p} HTTP/1.1\r\nHost: ${host}\r\n${fields}\r\n\r\n${chunkedBody}${s}`);
  te('te-chunked-identity', 'Transfer-Encoding: chunked, identity', teWhy, 'Transfer-Encoding: chunked, identity');
  te('te-xchunked', 'Transfer-Encoding: xchunked', teWhy, 'Transfer-Encoding: xchunked');
  te('te-two-fields', 'Transfer-Encoding: chunked, then a second Transfer-Encoding: identity', `field lines combine to "chunked, identity" (RFC 9110 §5.3); ${teWhy}`, 'Transfer-Encoding: chunked\r\nTransfer-Encoding: identity');
  te('te-space-before-colon', 'Transfer-Encoding : chunked (space before the colon)', 'RFC 9112 §5.1: a server MUST reject whitespace between field name and colon with 400', 'Transfer-Encoding : chunked');

  // --- Line endings and field syntax -------------------------------------------------------
  // Strict on purpose: RFC 9112 §2.2 lets a recipient accept a bare LF as a line terminator, but
  // parsers that disagree on it are a classic desync.
  add('head', 'bare-lf', 'bare LF line endings (request line and fields)', 'RFC 9112 §2.2: lines end with CRLF; a recipient MAY accept a bare LF; we are strict and reject', (p) => `GET ${p} HTTP/1.1\nHost: ${host}\n\n`, false);
  add('head', 'bare-lf-field', 'bare LF ending one field line', 'as above, one field line only: "Host: sink\\nX-Smuggle: 1" is one line to a CRLF-only parser', (p) => `GET ${p} HTTP/1.1\r\nHost: ${host}\nX-Smuggle: 1\r\n\r\n`, false);
  add('head', 'obs-fold', 'obs-fold (field line starting with a space)', 'RFC 9112 §5.2: a server MUST reject obs-fold with 400 or replace it with SP; we are strict and reject', (p) => `GET ${p} HTTP/1.1\r\nHost: ${host}\r\nX-Folded: a\r\n b\r\n\r\n`, false);
  add('head', 'nul-in-value', 'NUL byte in a field value', 'RFC 9110 §5.5: a field value with CR, LF or NUL MUST be rejected or the character replaced with SP; we are strict and reject', (p) => `GET ${p} HTTP/1.1\r\nHost: ${host}\r\nX-Nul: a\0b\r\n\r\n`, false);
  add('head', 'bad-field-name', 'invalid field name characters: X(Bad)', 'field-name = token (RFC 9110 §5.1), "(" is a delimiter; a request not matching the grammar: SHOULD 400 and close (RFC 9112 §2.2)', (p) => `GET ${p} HTTP/1.1\r\nHost: ${host}\r\nX(Bad): 1\r\n\r\n`, false);
  add('head', 'empty-field-name', 'field line without a name: ": 1"', 'field-name = token, at least one tchar (RFC 9110 §5.1)', (p) => `GET ${p} HTTP/1.1\r\nHost: ${host}\r\n: 1\r\n\r\n`, false);

  // --- Request line ----------------------------------------------------------------------------
  add('head', 'http09', 'HTTP/0.9 style request line: GET /', 'request-line = method SP request-target SP HTTP-version (RFC 9112 §3); not HTTP/1.x: SHOULD 400 and close (RFC 9112 §2.2)', (p) => `GET ${p}\r\n\r\n`, false);
  add('head', 'version-lowercase', 'HTTP version in lower case: http/1.1', 'HTTP-name = %s"HTTP", case-sensitive (RFC 9112 §2.3)', (p) => `GET ${p} http/1.1\r\nHost: ${host}\r\n\r\n`, false);
  add('head', 'version-unknown-minor', 'HTTP version 1.9 (strict)', 'RFC 9110 §6.2 lets a server take HTTP/1.9 for the highest 1.x it speaks; no client sends it, so we are strict (as llhttp is) and refuse every version but 1.0 and 1.1', (p) => `GET ${p} HTTP/1.9\r\nHost: ${host}\r\n\r\n`, false);
  add('head', 'version-two-digits', 'HTTP version with a two-digit minor: HTTP/1.10', 'HTTP-version = HTTP-name "/" DIGIT "." DIGIT (RFC 9112 §2.3)', (p) => `GET ${p} HTTP/1.10\r\nHost: ${host}\r\n\r\n`, false);

  add('head', 'two-spaces-method', 'two spaces after the method: "POST  /x"', 'request-line = method SP request-target SP HTTP-version, one SP each (RFC 9112 §3); read leniently, the method becomes "POST " and escapes every rule about POST', (p) => `POST  ${p} HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 0\r\n\r\n`, false);
  add('head', 'two-spaces-version', 'two spaces before the version: "GET /x  HTTP/1.1"', 'as above (RFC 9112 §3)', (p) => `GET ${p}  HTTP/1.1\r\nHost: ${host}\r\n\r\n`, false);

  // --- Connection naming the framing (RFC 9110 §7.6.1: a proxy removes what Connection names) ---
  const connWhy = 'RFC 9110 §7.6.1: a proxy removes the fields Connection names, which would unframe the message after the parser framed it by them; a sender MUST NOT name fields meant for every recipient. We refuse';
  add('head', 'conn-content-length', 'Connection: content-length, with Content-Length', connWhy, (p, s) => {
    const body = s.replace('\r\n\r\n', '\r\nx-skein-caller: spoofed\r\n\r\n');
    return `POST ${p} HTTP/1.1\r\nHost: ${host}\r\nConnection: content-length\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
  });
  add('head', 'conn-content-length-case', 'Connection: keep-alive, Content-Length (a list, any case)', connWhy, (p, s) => `POST ${p} HTTP/1.1\r\nHost: ${host}\r\nConnection: keep-alive, Content-Length\r\nContent-Length: ${s.length}\r\n\r\n${s}`);
  add('head', 'conn-transfer-encoding', 'Connection: close, Transfer-Encoding, with a chunked body', connWhy, (p, s) => `POST ${p} HTTP/1.1\r\nHost: ${host}\r\nConnection: close, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n${s.length.toString(16)}\r\n${s}\r\n0\r\n\r\n`);
  add('head', 'conn-te-second-field', 'a second Connection field naming transfer-encoding', connWhy, (p, s) => `POST ${p} HTTP/1.1\r\nHost: ${host}\r\nConnection: keep-alive\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n${s.length.toString(16)}\r\n${s}\r\n0\r\n\r\n`);
  add('head', 'conn-host', 'Connection: host', `${connWhy}; without Host the next hop would route by its own default`, (p) => `GET ${p} HTTP/1.1\r\nHost: ${host}\r\nConnection: host\r\n\r\n`, false);

  // --- Transfer-Encoding in HTTP/1.0 -------------------------------------------------------------
  add('head', 'http10-te', 'HTTP/1.0 request with Transfer-Encoding: chunked', 'RFC 9112 §6.1: a server that receives an HTTP/1.0 message with Transfer-Encoding MUST treat its framing as faulty', (p, s) => `POST ${p} HTTP/1.0\r\nHost: ${host}\r\nTransfer-Encoding: chunked\r\n\r\n${s.length.toString(16)}\r\n${s}\r\n0\r\n\r\n`);

  // --- Host ------------------------------------------------------------------------------------
  const hostWhy = 'RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host, with more than one Host field line, or with an invalid Host value';
  add('head', 'host-missing', 'HTTP/1.1 request without Host', hostWhy, (p) => `GET ${p} HTTP/1.1\r\nX-A: 1\r\n\r\n`, false);
  add('head', 'host-twice', 'two Host field lines', hostWhy, (p) => `GET ${p} HTTP/1.1\r\nHost: ${host}\r\nHost: other\r\n\r\n`, false);
  add('head', 'host-invalid', `Host with an invalid value: ${host}/x`, `${hostWhy}; "/" is not allowed in uri-host (RFC 3986 reg-name)`, (p) => `GET ${p} HTTP/1.1\r\nHost: ${host}/x\r\n\r\n`, false);

  // --- Chunked body (the head is valid) ----------------------------------------------------------
  const chunked = (slug: string, name: string, why: string, body: string) =>
    add('body', slug, name, why, (p, s) => `POST ${p} HTTP/1.1\r\nHost: ${host}\r\nTransfer-Encoding: chunked\r\n\r\n${body}${s}`);
  chunked('chunk-size-invalid', 'invalid chunk size: zz', 'chunk-size = 1*HEXDIG (RFC 9112 §7.1)', 'zz\r\nhello\r\n0\r\n\r\n');
  // 0x1_0000_0000_0000_0005 = 2^64 + 5: a parser that wraps at 64 bits reads 5, and then the
  // hidden request.
  chunked('chunk-size-overflow', 'chunk size overflow: 2^64 + 5', 'RFC 9112 §7.1: recipients MUST prevent integer overflow in chunk-size', '10000000000000005\r\nhello\r\n0\r\n\r\n');
  // A parser that skips two bytes after the data without looking reads the rest as valid.
  chunked('chunk-missing-crlf', 'chunk data not followed by CRLF', 'chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF (RFC 9112 §7.1)', '5\r\nhelloXX0\r\n\r\n');
  chunked('chunk-bare-lf', 'bare LF after the chunk size', 'chunk lines end with CRLF (RFC 9112 §7.1); the bare-LF allowance of §2.2 covers only the start line and fields', '5\nhello\r\n0\r\n\r\n');
  // llhttp's lenient_optional_crlf_after_chunk reads "hello" then the next size at once.
  chunked('chunk-no-crlf-after-data', 'no CRLF at all after the chunk data: 5 hello0', 'chunk = chunk-size CRLF chunk-data CRLF (RFC 9112 §7.1)', '5\r\nhello0\r\n\r\n');
  chunked('chunk-size-space', 'a space after the chunk size: "5 "', 'chunk-size = 1*HEXDIG, then optional chunk-ext starting with ";" (RFC 9112 §7.1); BWS before ";" is not there', '5 \r\nhello\r\n0\r\n\r\n');
  chunked('chunk-cr-without-lf', 'a CR not followed by LF after the chunk size', 'chunk lines end with CRLF (RFC 9112 §7.1)', '5\rhello\r\n0\r\n\r\n');
  return out;
}

export interface LegalRequest {
  name: string;
  bytes: Buffer;
  marker: string;
  /** The body the backend must receive (after de-chunking). */
  body: string;
}

/** Legal requests with bodies that must pass through (and that a too-strict parser might refuse). */
export function legalRequests(host = 'sink'): LegalRequest[] {
  const mk = (slug: string, name: string, fields: string, body: string, expected: string): LegalRequest => {
    const marker = `/framing/${slug}`;
    return { name, marker, body: expected, bytes: Buffer.from(`POST ${marker} HTTP/1.1\r\nHost: ${host}\r\n${fields}\r\n\r\n${body}`, 'latin1') };
  };
  return [
    mk('ok-content-length', 'Content-Length POST', 'Content-Length: 11', 'hello world', 'hello world'),
    mk('ok-chunked', 'chunked POST', 'Transfer-Encoding: chunked', '5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n', 'hello world'),
    mk('ok-chunked-tab', 'Transfer-Encoding:<TAB>chunked (OWS may be a tab)', 'Transfer-Encoding:\tchunked', '5\r\nhello\r\n0\r\n\r\n', 'hello'),
    mk('ok-chunked-case', 'Transfer-Encoding: Chunked (coding names are case-insensitive)', 'Transfer-Encoding: Chunked', '5\r\nhello\r\n0\r\n\r\n', 'hello'),
    mk('ok-content-length-ows', 'Content-Length with whitespace around the value', 'Content-Length: \t11 ', 'hello world', 'hello world'),
    mk('ok-chunk-ext', 'chunk extension', 'Transfer-Encoding: chunked', '5;name=value\r\nhello\r\n0\r\n\r\n', 'hello'),
    mk('ok-trailer', 'chunked with a trailer field', 'Transfer-Encoding: chunked', '5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n', 'hello'),
  ];
}

/** A GET whose header block is about `bytes` long: one big field, or many 1 KiB fields. */
export function bigHeaderRequest(path: string, bytes: number, shape: 'one-field' | 'many-fields', host = 'sink'): Buffer {
  const fields =
    shape === 'one-field'
      ? `X-Big: ${'a'.repeat(bytes)}\r\n`
      : Array.from({ length: Math.ceil(bytes / 1024) }, (_, i) => `X-Big-${i}: ${'a'.repeat(1024 - 12)}\r\n`).join('');
  return Buffer.from(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${fields}\r\n`, 'latin1');
}

// ---------------------------------------------------------------------------------------------
// Added for the proxy HTTP tests (proxy-http): a persistent raw connection that reads responses
// one at a time, response framing that knows HEAD, and Prometheus samples by label set.
// ---------------------------------------------------------------------------------------------

/**
 * The first complete response at the start of `buf`, and how many bytes it took; null while it is
 * incomplete. A response to HEAD (`head`), 1xx, 204 and 304 end with their head; a response
 * without Content-Length or chunked framing ends with the connection (`closed`).
 */
export function frameResponse(buf: Buffer, opts: { head?: boolean; closed?: boolean } = {}): { response: ParsedResponse; consumed: number } | null {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const headLen = end + 4;
  const head = parseResponse(buf.subarray(0, headLen)) as ParsedResponse;
  const rest = buf.subarray(headLen);
  const done = (body: Buffer, consumed: number) => ({ response: { ...head, body, complete: true }, consumed });
  if (opts.head === true || head.status === 204 || head.status === 304 || (head.status >= 100 && head.status < 200)) return done(Buffer.alloc(0), headLen);
  if (/chunked/i.test(head.headers['transfer-encoding'] ?? '')) {
    const d = decodeChunked(rest);
    if (d === 'invalid') throw new Error(`invalid chunked response body: ${JSON.stringify(rest.toString('latin1').slice(0, 200))}`);
    return d === null ? null : done(d.body, headLen + d.consumed);
  }
  const cl = head.headers['content-length'];
  if (cl !== undefined) {
    const n = Number(cl);
    return rest.length < n ? null : done(rest.subarray(0, n), headLen + n);
  }
  return opts.closed === true ? done(rest, buf.length) : null;
}

/** A client connection written and read as raw bytes, kept open across requests. */
export interface RawConnection {
  readonly socket: Socket;
  /** Bytes received and not yet taken (by `readResponse` or `take`). */
  readonly buffer: Buffer;
  /** Bytes received in all, taken or not. */
  readonly receivedBytes: number;
  /** The peer closed (FIN or RST). */
  readonly closed: boolean;
  /** A socket error (ECONNRESET, ...), if any. */
  readonly error: string | null;
  write(bytes: Buffer | string): void;
  /** Resolves once `pred(buffer)` holds; rejects at the deadline, or when the connection closes and it does not hold. */
  waitUntil(pred: (buf: Buffer) => boolean, opts?: { timeoutMs?: number; what?: string }): Promise<void>;
  /** Reads (and takes) the next complete response; `head`: it answers a HEAD request. */
  readResponse(opts?: { head?: boolean; timeoutMs?: number }): Promise<ParsedResponse>;
  /** Resolves once the peer closed; rejects at the deadline. */
  waitClosed(timeoutMs?: number): Promise<void>;
  /** Takes the first `n` bytes of the buffer (all of it by default). */
  take(n?: number): Buffer;
  end(): void;
  destroy(): void;
}

/** Connects to 127.0.0.1:port (or `host`); resolves once connected. */
export function openRaw(port: number, host = '127.0.0.1'): Promise<RawConnection> {
  return new Promise((resolve, reject) => {
    let buffer: Buffer = Buffer.alloc(0);
    let receivedBytes = 0;
    let closed = false;
    let error: string | null = null;
    const waiters = new Set<() => void>();
    const wake = () => {
      for (const w of [...waiters]) w();
    };
    const show = () => JSON.stringify(buffer.toString('latin1').slice(0, 300));
    const sock = createConnection({ host, port });
    sock.setNoDelay(true);
    const conn: RawConnection = {
      socket: sock,
      get buffer() {
        return buffer;
      },
      get receivedBytes() {
        return receivedBytes;
      },
      get closed() {
        return closed;
      },
      get error() {
        return error;
      },
      write(bytes) {
        sock.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes);
      },
      waitUntil(pred, opts = {}) {
        return new Promise<void>((res, rej) => {
          const what = opts.what ?? 'a condition on the received bytes';
          const check = () => {
            let ok: boolean;
            try {
              ok = pred(buffer);
            } catch (e) {
              settle(e as Error);
              return;
            }
            if (ok) settle(null);
            else if (closed) settle(new Error(`the connection closed (error: ${error}) before ${what}; unread bytes: ${show()}`));
          };
          const settle = (e: Error | null) => {
            clearTimeout(timer);
            waiters.delete(check);
            if (e === null) res();
            else rej(e);
          };
          const timer = setTimeout(() => settle(new Error(`timed out waiting for ${what}; unread bytes: ${show()}`)), opts.timeoutMs ?? 10_000);
          waiters.add(check);
          check();
        });
      },
      async readResponse(opts = {}) {
        const frame = () => frameResponse(buffer, { head: opts.head === true, closed });
        await conn.waitUntil(() => frame() !== null, { timeoutMs: opts.timeoutMs, what: 'a complete response' });
        const f = frame() as NonNullable<ReturnType<typeof frameResponse>>;
        buffer = buffer.subarray(f.consumed);
        return f.response;
      },
      waitClosed(timeoutMs = 10_000) {
        return new Promise<void>((res, rej) => {
          const check = () => {
            if (!closed) return;
            clearTimeout(timer);
            waiters.delete(check);
            res();
          };
          const timer = setTimeout(() => {
            waiters.delete(check);
            rej(new Error(`timed out waiting for the peer to close the connection; unread bytes: ${show()}`));
          }, timeoutMs);
          waiters.add(check);
          check();
        });
      },
      take(n) {
        const k = n ?? buffer.length;
        const out = buffer.subarray(0, k);
        buffer = buffer.subarray(k);
        return out;
      },
      end() {
        sock.end();
      },
      destroy() {
        sock.destroy();
      },
    };
    sock.on('data', (d: Buffer) => {
      receivedBytes += d.length;
      buffer = buffer.length === 0 ? d : Buffer.concat([buffer, d]);
      wake();
    });
    const onClosed = () => {
      closed = true;
      wake();
    };
    sock.on('end', onClosed);
    sock.on('close', onClosed);
    sock.once('connect', () => resolve(conn));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      if (sock.connecting) {
        reject(e);
        return;
      }
      error = e.code ?? e.message;
      onClosed();
    });
  });
}

/**
 * The sum of the samples of metric `name` (e.g. `skein_proxy_requests_total`) whose labels include
 * all of `labels` (in any order); undefined when no sample matches.
 */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  let sum: number | undefined;
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have: Record<string, string> = {};
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    let l: RegExpExecArray | null;
    while ((l = re.exec(m[2] ?? '')) !== null) have[l[1] as string] = (l[2] as string).replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum = (sum ?? 0) + Number(m[3]);
  }
  return sum;
}

/** The proxy's admin `/metrics` as text. */
export async function scrapeMetrics(proxy: ProxyProcess): Promise<string> {
  const res = await fetch(`${proxy.admin}/metrics`);
  if (res.status !== 200) throw new Error(`GET ${proxy.admin}/metrics: ${res.status}`);
  return res.text();
}

// ---------------------------------------------------------------------------------------------
// A steady load
// ---------------------------------------------------------------------------------------------

export interface LoadReply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One GET to 127.0.0.1:port over node:http (`agent`: a keep-alive pool, or a new connection). */
export function httpGet(port: number, path: string, opts: { agent?: http.Agent; headers?: Record<string, string>; timeoutMs?: number } = {}): Promise<LoadReply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'GET', headers: opts.headers ?? {}, agent: opts.agent ?? false, timeout: opts.timeoutMs ?? 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('no answer within the timeout')));
    req.on('error', reject);
    req.end();
  });
}

/**
 * A steady load: `concurrency` loops, each on its own keep-alive connection, sending GETs one
 * after the other until stopped. Every answer is recorded: which replica served it (`servedBy`),
 * and every answer that is not a 200 (or a request that got no answer) as a failure.
 */
export class Load {
  ok = 0;
  /** `started`: when the failed request was sent; `at`: when it failed. */
  readonly failures: Array<{ started: number; at: number; what: string }> = [];
  readonly servedBy = new Map<string, number>();
  private stopped = false;
  private readonly loops: Array<Promise<void>> = [];
  private readonly agent: http.Agent;

  constructor(
    private readonly port: number,
    private readonly path: string,
    concurrency: number,
    private readonly replicaOf: (body: any, r: LoadReply) => string | undefined,
    private readonly headers: Record<string, string> = {},
  ) {
    this.agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
    for (let i = 0; i < concurrency; i++) this.loops.push(this.loop());
  }

  get total(): number {
    return this.ok + this.failures.length;
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      const started = Date.now();
      try {
        const r = await httpGet(this.port, this.path, { agent: this.agent, headers: this.headers });
        if (r.status !== 200) {
          this.failures.push({ started, at: Date.now(), what: `${r.status} x-skein-error=${String(r.headers['x-skein-error'])} ${r.body.slice(0, 300)}` });
          continue;
        }
        this.ok++;
        let body: unknown;
        try {
          body = JSON.parse(r.body);
        } catch {
          body = undefined;
        }
        const who = this.replicaOf(body, r);
        if (who !== undefined) this.servedBy.set(who, (this.servedBy.get(who) ?? 0) + 1);
      } catch (e) {
        this.failures.push({ started, at: Date.now(), what: `no answer: ${(e as Error).message}` });
      }
    }
  }

  /** Waits until `n` more requests were answered (successfully or not). */
  async more(n: number, timeoutMs = 20_000): Promise<void> {
    const target = this.total + n;
    await waitFor(() => this.total >= target, { timeoutMs, what: `${n} more requests of the load` });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
    this.agent.destroy();
  }

  report(): string {
    return `${this.ok} ok, ${this.failures.length} failed; served by ${JSON.stringify(Object.fromEntries(this.servedBy))}; first failures:\n${this.failures
      .slice(0, 10)
      .map((f) => f.what)
      .join('\n')}`;
  }
}

/** A proxy's own error body: JSON `{ code, message }` naming `code`. */
export function assertErrorBody(body: Buffer, code: string): void {
  let parsed: { code?: unknown; message?: unknown };
  try {
    parsed = JSON.parse(body.toString('utf8')) as typeof parsed;
  } catch {
    assert.fail(`the error body is not JSON: ${JSON.stringify(body.toString('latin1').slice(0, 300))}`);
  }
  assert.equal(parsed.code, code);
  assert.equal(typeof parsed.message, 'string');
}

/** A join token of the control plane's CA for proxy `id` and its services (POST /v1/ca/tokens). */
export async function mintJoinToken(controlUrl: string, id: string, services: string[]): Promise<string> {
  const r = await api(controlUrl, 'POST', '/v1/ca/tokens', { proxy: id, services });
  if (r.status !== 201) throw new Error(`minting a join token for ${id} failed: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.token as string;
}

/**
 * A `skein proxy --mtls strict` with a fresh join token for the services of its workloads, ready
 * (its first snapshot in). The caller stops it.
 */
export async function startMeshProxy(controlUrl: string, id: string, services: string[], workloads: string[], args: string[] = []): Promise<ProxyProcess> {
  const token = await mintJoinToken(controlUrl, id, services);
  const p = await startProxy({ control: controlUrl, workloads, args: ['--mtls', 'strict', '--join-token', token, '--id', id, ...args] });
  try {
    await waitForProxyReady(p);
  } catch (e) {
    await p.stop();
    throw e;
  }
  return p;
}

/** What `meshTlsRequest` saw: whether the session was resumed, the status, the proxy's error code and reason, the session to resume. */
export interface MeshTlsExchange {
  reused: boolean;
  status: number;
  error: string | undefined;
  reason: string | undefined;
  session: Buffer | undefined;
}

/**
 * One request (`GET path`, `Host: host`, connection: close) to an inbound listener on `port` as a
 * meshed peer presenting `client` over mTLS (the mesh's ALPN), resuming `session` if given.
 */
export function meshTlsRequest(port: number, client: { key: string; cert: string; roots: string[] }, o: { host: string; path?: string; session?: Buffer | undefined }): Promise<MeshTlsExchange> {
  return new Promise((resolve, reject) => {
    let ticket: Buffer | undefined;
    let reused = false;
    const s: TLSSocket = tlsConnect({ host: '127.0.0.1', port, key: client.key, cert: client.cert, ca: client.roots, ALPNProtocols: [MESH_ALPN], rejectUnauthorized: false, checkServerIdentity: () => undefined, ...(o.session === undefined ? {} : { session: o.session }) });
    const chunks: Buffer[] = [];
    s.on('session', (t: Buffer) => (ticket = t));
    s.once('secureConnect', () => {
      reused = s.isSessionReused();
      s.write(`GET ${o.path ?? '/'} HTTP/1.1\r\nhost: ${o.host}\r\nconnection: close\r\n\r\n`);
    });
    s.on('data', (c: Buffer) => chunks.push(c));
    s.setTimeout(10_000, () => s.destroy(new Error('no answer within 10 s')));
    s.on('error', reject);
    s.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
      const error = /\r\nx-skein-error: ([^\r]+)/i.exec(text)?.[1];
      let reason: string | undefined;
      try {
        reason = (JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as { details?: { reason?: string } }).details?.reason;
      } catch {
        /* the app's answer */
      }
      resolve({ reused, status, error, reason, session: ticket });
    });
  });
}
