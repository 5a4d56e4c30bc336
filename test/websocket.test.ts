/**
 * WebSocket (an HTTP/1.1 Upgrade) through two `skein proxy` processes with mTLS between them:
 * Node's global `WebSocket` client (undici) -> the caller's outbound listener (pinned to the chat
 * service) ==mTLS==> the callee's inbound listener -> a small WebSocket server written here on
 * node:http's 'upgrade' (RFC 6455 handshake and framing by hand). Messages both ways, text and
 * binary, and close codes from either side.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { Duplex } from 'node:stream';
import { join } from 'node:path';
import { api, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { metricValue, registerInstance, scrapeMetrics, startMeshProxy, type ProxyProcess } from './proxy-helpers.js';

const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** One unmasked server frame (FIN set). */
function frame(opcode: number, payload: Buffer): Buffer {
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x80 | opcode, n]) : n < 65536 ? Buffer.from([0x80 | opcode, 126, n >> 8, n & 0xff]) : Buffer.concat([Buffer.from([0x80 | opcode, 127]), (() => { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(n)); return b; })()]);
  return Buffer.concat([head, payload]);
}

const closeFrame = (code: number, reason: string) => {
  const p = Buffer.alloc(2 + Buffer.byteLength(reason));
  p.writeUInt16BE(code, 0);
  p.write(reason, 2);
  return frame(0x8, p);
};

/** Reads the client's (masked) frames off a buffer as they come. */
function* frames(buf: { data: Buffer }): Generator<{ opcode: number; payload: Buffer }> {
  for (;;) {
    const b = buf.data;
    if (b.length < 2) return;
    let len = (b[1] as number) & 0x7f;
    let off = 2;
    if (len === 126) {
      if (b.length < 4) return;
      len = b.readUInt16BE(2);
      off = 4;
    } else if (len === 127) {
      if (b.length < 10) return;
      len = Number(b.readBigUInt64BE(2));
      off = 10;
    }
    if (b.length < off + 4 + len) return;
    const mask = b.subarray(off, off + 4);
    const payload = Buffer.from(b.subarray(off + 4, off + 4 + len));
    for (let i = 0; i < payload.length; i++) payload[i] = (payload[i] as number) ^ (mask[i % 4] as number);
    buf.data = b.subarray(off + 4 + len);
    yield { opcode: (b[0] as number) & 0x0f, payload };
  }
}

/** Close frames the server got: code and reason. */
const serverGotClose: Array<{ code: number; reason: string }> = [];

/**
 * The chat server: greets on open, echoes text ("echo: ...") and binary (as it came), closes with
 * 4002 when told "close-me", and answers a client's close with the same code and reason.
 */
async function chatServer(): Promise<number> {
  const server = http.createServer((_req, res) => res.writeHead(426).end('websocket only'));
  const sockets = new Set<Duplex>();
  server.on('upgrade', (req, socket: Duplex) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    const key = req.headers['sec-websocket-key'];
    if (req.headers.upgrade?.toLowerCase() !== 'websocket' || typeof key !== 'string') {
      socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
      return;
    }
    const accept = createHash('sha1').update(key + GUID).digest('base64');
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n\r\n`);
    socket.write(frame(0x1, Buffer.from(`hello from chat (path ${req.url})`)));
    const buf = { data: Buffer.alloc(0) };
    socket.on('data', (d: Buffer) => {
      buf.data = Buffer.concat([buf.data, d]);
      for (const f of frames(buf)) {
        if (f.opcode === 0x8) {
          const code = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005;
          const reason = f.payload.subarray(2).toString();
          serverGotClose.push({ code, reason });
          socket.end(closeFrame(code, reason));
          return;
        }
        if (f.opcode === 0x1 && f.payload.toString() === 'close-me') {
          socket.write(closeFrame(4002, 'server says bye'));
          continue;
        }
        if (f.opcode === 0x1) socket.write(frame(0x1, Buffer.from(`echo: ${f.payload.toString()}`)));
        else if (f.opcode === 0x2) socket.write(frame(0x2, f.payload));
        else if (f.opcode === 0x9) socket.write(frame(0xa, f.payload));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  return (server.address() as { port: number }).port;
}

let cp: ControlProcess;
let caller: ProxyProcess;
let callee: ProxyProcess;

/** A WebSocket through the caller's listener, its messages queued as they come. */
function open(path: string): { ws: WebSocket; next(): Promise<string | Buffer>; closed: Promise<{ code: number; reason: string; wasClean: boolean }> } {
  const ws = new WebSocket(`ws://127.0.0.1:${caller.workload('chat-port').outbound!.port}${path}`);
  ws.binaryType = 'arraybuffer';
  const queue: Array<string | Buffer> = [];
  const waiting: Array<(m: string | Buffer) => void> = [];
  ws.addEventListener('message', (e: MessageEvent) => {
    const m = typeof e.data === 'string' ? e.data : Buffer.from(e.data as ArrayBuffer);
    const w = waiting.shift();
    if (w !== undefined) w(m);
    else queue.push(m);
  });
  const closed = new Promise<{ code: number; reason: string; wasClean: boolean }>((resolve) => ws.addEventListener('close', (e: CloseEvent) => resolve({ code: e.code, reason: e.reason, wasClean: e.wasClean })));
  return {
    ws,
    next: () => {
      const m = queue.shift();
      if (m !== undefined) return Promise.resolve(m);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no message within 5 s (readyState ${ws.readyState})`)), 5000);
        waiting.push((x) => {
          clearTimeout(t);
          resolve(x);
        });
      });
    },
    closed,
  };
}

before(async () => {
  const dir = await tempDir('skein-ws-');
  cleanups.push(dir.remove);
  cp = await startControl({ dataDir: join(dir.path, 'data'), args: ['--dns', 'off'] });
  cleanups.push(() => cp.stop());
  const chat = await chatServer();
  assert.ok([200, 201].includes((await api(cp.http, 'PUT', '/v1/services/chat', {})).status));
  callee = await startMeshProxy(cp.http, 'callee', ['chat'], [`name=chat-1,service=chat,inbound=127.0.0.1:0,app=127.0.0.1:${chat}`]);
  cleanups.push(() => callee.stop());
  caller = await startMeshProxy(cp.http, 'caller', ['web'], ['name=chat-port,service=web,outbound=127.0.0.1:0,pin=chat']);
  cleanups.push(() => caller.stop());
  await registerInstance(cp.http, 'chat', 'chat-1', callee.workload('chat-1').inbound!.port, { labels: { 'skein.io/inbound-proxy': 'true' } });
  await waitFor(async () => (await fetch(`http://127.0.0.1:${caller.workload('chat-port').outbound!.port}/`)).status === 426, { timeoutMs: 15_000, what: 'chat through the caller' });
}, { timeout: 60_000 });

describe('WebSocket through two proxies with mTLS', { timeout: 30_000 }, () => {
  test('messages both ways (text and binary), then the client closes with 4001: both sides see the code and reason', async () => {
    const mtlsRequests = async () => metricValue(await scrapeMetrics(callee), 'skein_proxy_mtls_requests_total', { direction: 'inbound', service: 'chat' }) ?? 0;
    const mtls0 = await mtlsRequests();
    const c = open('/room/1');
    assert.equal(await c.next(), 'hello from chat (path /room/1)', 'the server spoke first, right after the 101');
    c.ws.send('one');
    c.ws.send('two');
    assert.equal(await c.next(), 'echo: one');
    assert.equal(await c.next(), 'echo: two');
    const big = Buffer.alloc(200_000, 7);
    big[199_999] = 9;
    c.ws.send(big);
    const back = (await c.next()) as Buffer;
    assert.equal(back.length, 200_000);
    assert.equal(back[199_999], 9);
    c.ws.close(4001, 'bye');
    assert.deepEqual(await c.closed, { code: 4001, reason: 'bye', wasClean: true });
    assert.deepEqual(serverGotClose.at(-1), { code: 4001, reason: 'bye' });
    // Recorded when the tunnel ends: the upgrade request came to the callee over mTLS.
    await waitFor(async () => (await mtlsRequests()) === mtls0 + 1, { what: 'the tunnel recorded as an mTLS request by the callee' });
  });

  test('the server closes with 4002: the client gets its code and reason', async () => {
    const c = open('/room/2');
    assert.equal(await c.next(), 'hello from chat (path /room/2)');
    c.ws.send('close-me');
    assert.deepEqual(await c.closed, { code: 4002, reason: 'server says bye', wasClean: true });
  });

  test('the upgrade is recorded as a 101 by both proxies', async () => {
    await waitFor(async () => (metricValue(await scrapeMetrics(caller), 'skein_proxy_requests_total', { direction: 'outbound', service: 'chat', status: '101' }) ?? 0) >= 2, { what: 'the caller recorded the tunnels' });
    assert.ok((metricValue(await scrapeMetrics(callee), 'skein_proxy_requests_total', { direction: 'inbound', service: 'chat', status: '101' }) ?? 0) >= 2);
  });
});
