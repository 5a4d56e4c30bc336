/**
 * Load generators for the proxy benchmarks, over a minimal keep-alive HTTP/1.1 client (bench/proxy-ab.ts):
 * - `closedLoop`: n requests with a fixed number in flight, as fast as they go (for CPU per request);
 * - `openLoop`: a constant rate, each request started on its schedule whether or not earlier ones
 *   have answered, its latency counted from its scheduled start (no coordinated omission: a stall
 *   of the server shows in the latency of every request scheduled during it).
 * Requests are `GET /api/v1/items/<i>?q=1` with `Host: app`; a status other than 200 counts as an error.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';

/**
 * The backend of the proxy benchmarks: a node:http server answering `ok` on 127.0.0.1, in its own
 * process (so its work does not share the load generator's event loop). The caller stops it.
 */
export async function startOkBackend(): Promise<{ child: ChildProcess; port: number }> {
  const code = `const s=require('node:http').createServer((q,r)=>r.end('ok'));s.keepAliveTimeout=60000;s.listen(0,'127.0.0.1',()=>console.log(s.address().port));`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((res, rej) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).once('line', (l) => res(Number(l)));
    child.once('exit', (c) => rej(new Error(`the backend exited with ${c}`)));
  });
  return { child, port };
}

/** Connections the open-loop generator may open before requests wait for one. */
export const MAX_OPEN_LOOP_CONNECTIONS = 256;

/**
 * A minimal keep-alive HTTP/1.1 client: one request at a time per connection, responses framed by
 * Content-Length or chunked encoding. Cheaper and steadier than node:http's client, which matters
 * on a small machine where the generator shares the cores with what it measures.
 */
export class Pool {
  private readonly idle: Conn[] = [];
  private readonly waiting: Array<{ path: string; done: (ok: boolean) => void }> = [];
  private open = 0;
  errors = 0;
  opened = 0;

  constructor(
    private readonly port: number,
    private readonly maxConnections: number,
  ) {}

  send(path: string, done: (ok: boolean) => void): void {
    const c = this.idle.pop();
    if (c !== undefined) c.send(path, done);
    else if (this.open < this.maxConnections) {
      this.open++;
      this.opened++;
      new Conn(this, this.port).send(path, done);
    } else this.waiting.push({ path, done });
  }

  /** A connection is free again: the next waiting request takes it. */
  release(c: Conn): void {
    const w = this.waiting.shift();
    if (w !== undefined) c.send(w.path, w.done);
    else this.idle.push(c);
  }

  closed(c: Conn): void {
    this.open--;
    const i = this.idle.indexOf(c);
    if (i >= 0) this.idle.splice(i, 1);
    const w = this.waiting.shift();
    if (w !== undefined) this.send(w.path, w.done);
  }

  destroy(): void {
    for (const c of this.idle.splice(0)) c.sock.destroy();
  }
}

class Conn {
  readonly sock: Socket;
  private buf: Buffer = Buffer.alloc(0);
  private done: ((ok: boolean) => void) | null = null;

  constructor(
    private readonly pool: Pool,
    port: number,
  ) {
    this.sock = connect({ port, host: '127.0.0.1', noDelay: true });
    this.sock.on('data', (d: Buffer) => this.onData(d));
    this.sock.on('error', () => undefined);
    this.sock.on('close', () => {
      const done = this.done;
      this.done = null;
      if (done !== null) {
        this.pool.errors++;
        done(false);
      }
      this.pool.closed(this);
    });
  }

  send(path: string, done: (ok: boolean) => void): void {
    this.done = done;
    this.sock.write(`GET ${path} HTTP/1.1\r\nHost: app\r\n\r\n`);
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = this.buf.toString('latin1', 0, end);
    let total: number;
    const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    if (cl !== null) total = end + 4 + Number(cl[1]);
    else if (/\r\ntransfer-encoding:[^\r]*chunked/i.test(head)) {
      const last = this.buf.indexOf('\r\n0\r\n\r\n', end + 2);
      if (last < 0) return;
      total = last + 7;
    } else total = end + 4;
    if (this.buf.length < total) return;
    this.buf = this.buf.subarray(total);
    const ok = head.startsWith('HTTP/1.1 200');
    const done = this.done;
    this.done = null;
    if (!ok) this.pool.errors++;
    this.pool.release(this);
    done?.(ok);
  }
}

/** `n` requests, `concurrency` in flight, as fast as they go. */
export function closedLoop(port: number, n: number, concurrency: number): Promise<number> {
  const pool = new Pool(port, concurrency);
  let sent = 0;
  let finished = 0;
  return new Promise((res) => {
    const next = (): void => {
      if (sent >= n) {
        if (++finished === concurrency) {
          pool.destroy();
          res(pool.errors);
        }
        return;
      }
      pool.send(`/api/v1/items/${sent++}?q=1`, next);
    };
    for (let k = 0; k < concurrency; k++) next();
  });
}

export interface OpenLoop {
  /** Latency from each request's scheduled start, ms. */
  latency: Float64Array;
  /** Latency from when the generator handed it to a connection, ms. */
  fromSend: Float64Array;
  /** How late the generator sent, ms. */
  lateness: Float64Array;
  errors: number;
  connections: number;
  seconds: number;
}

/**
 * `rate` requests/s for `seconds`: request i is due at t0 + i * 1000/rate ms; a timer and every
 * response send whatever is due, so a slow answer never holds back the requests behind it.
 */
export function openLoop(port: number, rate: number, seconds: number): Promise<OpenLoop> {
  const n = rate * seconds;
  const interval = 1000 / rate;
  const pool = new Pool(port, MAX_OPEN_LOOP_CONNECTIONS);
  const latency = new Float64Array(n);
  const fromSend = new Float64Array(n);
  const lateness = new Float64Array(n);
  const t0 = performance.now() + 5;
  let next = 0;
  let answered = 0;
  let timer: NodeJS.Timeout | null = null;
  return new Promise((res) => {
    const pump = (): void => {
      const now = performance.now();
      while (next < n && t0 + next * interval <= now) {
        const i = next++;
        const due = t0 + i * interval;
        const sent = performance.now();
        lateness[i] = sent - due;
        pool.send(`/api/v1/items/${i}?q=1`, () => {
          const end = performance.now();
          latency[i] = end - due;
          fromSend[i] = end - sent;
          if (++answered === n) {
            pool.destroy();
            res({ latency, fromSend, lateness, errors: pool.errors, connections: pool.opened, seconds: (end - t0) / 1000 });
          } else pump();
        });
      }
      if (next < n && timer === null) {
        timer = setTimeout(() => {
          timer = null;
          pump();
        }, Math.max(0, t0 + next * interval - performance.now()));
      }
    };
    pump();
  });
}
