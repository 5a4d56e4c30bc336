/**
 * DNS hardening (issue 11 §4): what the DNS server's bounds hold under the probe's abuse.
 *
 *   node dist/bench/dns-hardening.js [--huge 26579] [--variants 14340] [--slow 1000] [--fill-services 400]
 *
 * 1. Memory: 14,340 UDP queries to one name of 200 instances, every EDNS size 512-4096 with the DO
 *    bit off and on, for A and SRV (the probe's flood); then the cache filled to its byte bound
 *    with TCP SRV answers of many 64-instance services. RSS of the server after a GC, and its
 *    cache's own count.
 * 2. The cost of a miss over a service of 26,579 instances, in-process: the 64-instance sample
 *    against building the answer from every instance (answerSample = all), side by side.
 * 3. Event-loop block: 40 SRV queries with EDNS sizes 1400-1439 for that service, sent at once;
 *    the server's longest event-loop delay and the time until all 40 are answered.
 * 4. Amplification: the largest UDP response to one query against its size; then a flood from one
 *    source with the rate limiter on, bytes out against bytes in.
 * 5. TCP: 1,000 connections trickling a query a byte at a time, then fresh TCP queries.
 *
 * The server runs in a child process (`--serve`, with --expose-gc), its event loop its own; the
 * clients run here. Children are killed at the end, also on errors.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createInterface, type Interface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import dnsPacket from 'dns-packet';
import { DNS_DEFAULTS } from '../src/api/dns.js';
import { parseInstance } from '../src/api/parse.js';
import { systemClock } from '../src/core/clock.js';
import { Responder } from '../src/control/dns/responder.js';
import { DnsServer, type DnsServerStats } from '../src/control/dns/server.js';
import { Zone } from '../src/control/dns/zone.js';
import { Registry } from '../src/control/registry/registry.js';
import { MemoryStore } from '../src/control/store/store.js';
import { machine, percentile, printResult, round, runMain, stopChild, table, track, warnIfBusy } from './lib.js';

const { values } = parseArgs({
  options: {
    serve: { type: 'boolean', default: false },
    services: { type: 'string', default: 'web:200' },
    'rate-limit': { type: 'boolean', default: false },
    huge: { type: 'string', default: '26579' },
    variants: { type: 'string', default: '14340' },
    slow: { type: 'string', default: '1000' },
    'fill-services': { type: 'string', default: '400' },
  },
});

/**
 * `name:count,...` (one service of that many instances) or `name*K:count` (K services, name0 to
 * name<K-1>), each instance on its own IPv4 address within its service.
 */
async function registryWith(spec: string): Promise<Registry> {
  const registry = await Registry.open({ clock: systemClock, store: new MemoryStore() });
  let s = 0;
  for (const part of spec.split(',')) {
    const m = /^([a-z0-9-]+)(?:\*(\d+))?:(\d+)$/.exec(part);
    if (m === null) throw new Error(`bad service spec "${part}"`);
    const [, name = '', many, count] = m;
    const names = many === undefined ? [name] : Array.from({ length: Number(many) }, (_, k) => `${name}${k}`);
    for (const svc of names) {
      s++;
      for (let i = 0; i < Number(count); i++) {
        await registry.register(parseInstance({ service: svc, id: `i${i}`, address: `10.${s & 255}.${(i >> 8) & 255}.${i & 255}`, port: 7000 + (i % 1000) }));
      }
    }
  }
  return registry;
}

// ---------------------------------------------------------------- --serve: the server side

/** Serves until SIGTERM; answers `stats`, `gc` and `lag-reset` lines on stdin with a JSON line. */
async function serve(): Promise<void> {
  const registry = await registryWith(values.services as string);
  const server = new DnsServer({ registry, port: 0, ...(values['rate-limit'] === true ? { rateLimit: { enabled: true } } : {}) });
  const { port } = await server.start();
  const lag = monitorEventLoopDelay({ resolution: 1 });
  lag.enable();
  const gc = (globalThis as { gc?: () => void }).gc;
  createInterface({ input: process.stdin }).on('line', async (cmd) => {
    // Twice, a moment apart: freed Buffers' memory is swept after the collection that finds them.
    for (let i = 0; cmd === 'gc' && i < 2; i++) {
      gc?.();
      await new Promise((r) => setTimeout(r, 100));
    }
    if (cmd === 'lag-reset') lag.reset();
    const mem = process.memoryUsage();
    process.stdout.write(JSON.stringify({ stats: server.stats(), rssBytes: mem.rss, heapUsed: mem.heapUsed, arrayBuffers: mem.arrayBuffers, lagMaxMs: lag.max / 1e6 }) + '\n');
  });
  process.stdout.write(JSON.stringify({ port }) + '\n');
}

interface ServerReport {
  stats: DnsServerStats;
  rssBytes: number;
  heapUsed: number;
  arrayBuffers: number;
  lagMaxMs: number;
}

interface Child {
  proc: ChildProcess;
  port: number;
  ask(cmd: 'stats' | 'gc' | 'lag-reset'): Promise<ServerReport>;
}

async function startServer(services: string, rateLimit = false): Promise<Child> {
  const args = ['--expose-gc', fileURLToPath(import.meta.url), '--serve', '--services', services, ...(rateLimit ? ['--rate-limit'] : [])];
  const proc = track(spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'inherit'] }));
  const lines: Interface = createInterface({ input: proc.stdout as NodeJS.ReadableStream });
  const next = () =>
    new Promise<string>((resolve, reject) => {
      lines.once('line', resolve);
      proc.once('exit', (code) => reject(new Error(`dns server exited with ${code}`)));
    });
  const { port } = JSON.parse(await next()) as { port: number };
  return {
    proc,
    port,
    async ask(cmd) {
      const reply = next();
      proc.stdin?.write(cmd + '\n');
      return JSON.parse(await reply) as ServerReport;
    },
  };
}

// ---------------------------------------------------------------- clients

interface Query {
  name: string;
  /** dns-packet's types lack ANY, which it encodes all the same. */
  type: dnsPacket.RecordType | 'ANY';
  edns?: number;
  dnssecOk?: boolean;
}

function encodeQuery(q: Query, id: number): Buffer {
  const opt = { type: 'OPT', name: '.', udpPayloadSize: q.edns, flags: q.dnssecOk === true ? dnsPacket.DNSSEC_OK : 0 } as dnsPacket.OptAnswer;
  return dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: q.type as dnsPacket.RecordType, name: q.name }], additionals: q.edns === undefined ? [] : [opt] });
}

/**
 * Sends queries over UDP with at most `window` outstanding, resending any unanswered after
 * 500 ms (a full receive buffer drops datagrams); resolves with each response's size.
 */
async function udpQueries(port: number, queries: Query[], window = 100): Promise<number[]> {
  const sock = createSocket('udp4');
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
  const sizes = new Array<number>(queries.length).fill(-1);
  const sentAt = new Map<number, number>();
  let nextToSend = 0;
  let answered = 0;
  const send = (i: number) => {
    sentAt.set(i, Date.now());
    sock.send(encodeQuery(queries[i] as Query, i & 0xffff), port, '127.0.0.1');
  };
  const done = new Promise<void>((resolve) => {
    const fill = () => {
      while (nextToSend < queries.length && sentAt.size < window) send(nextToSend++);
      if (answered === queries.length) resolve();
    };
    sock.on('message', (m: Buffer) => {
      const id = m.readUInt16BE(0);
      // Ids repeat every 65,536 queries; the outstanding one with this id is the one answered.
      for (const i of sentAt.keys()) {
        if ((i & 0xffff) !== id) continue;
        sentAt.delete(i);
        sizes[i] = m.length;
        answered++;
        break;
      }
      fill();
    });
    const resend = setInterval(() => {
      for (const [i, at] of sentAt) if (Date.now() - at > 500) send(i);
    }, 100);
    sock.once('close', () => clearInterval(resend));
    fill();
  });
  await done;
  sock.close();
  return sizes;
}

/** Sends queries over one TCP connection, pipelined; resolves with each response's size. */
async function tcpQueries(port: number, queries: Query[]): Promise<number[]> {
  const sock = connect(port, '127.0.0.1');
  await once(sock, 'connect');
  const sizes: number[] = [];
  let buf = Buffer.alloc(0);
  const done = new Promise<void>((resolve, reject) => {
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        sizes.push(buf.readUInt16BE(0));
        buf = buf.subarray(2 + buf.readUInt16BE(0));
      }
      if (sizes.length === queries.length) resolve();
    });
    sock.once('close', () => reject(new Error(`TCP connection closed after ${sizes.length} of ${queries.length} answers`)));
  });
  sock.write(Buffer.concat(queries.map((q, i) => framed(encodeQuery(q, i & 0xffff)))));
  await done;
  sock.destroy();
  return sizes;
}

function framed(msg: Buffer): Buffer {
  return Buffer.concat([Buffer.from([msg.length >> 8, msg.length & 255]), msg]);
}

const MB = 1024 * 1024;

// ---------------------------------------------------------------- 1. memory

/** The probe's flood: every EDNS size 512-4096, DO off and on, A and SRV (3,585 x 2 x 2 = 14,340). */
function variantFlood(name: string, count: number): Query[] {
  const out: Query[] = [];
  for (let size = 512; out.length < count; size = size >= 4096 ? 512 : size + 1) {
    for (const type of ['A', 'SRV'] as const) for (const dnssecOk of [false, true]) out.push({ name, type, edns: size, dnssecOk });
  }
  return out.slice(0, count);
}

async function memory(): Promise<Record<string, unknown>> {
  const web = await startServer('web:200');
  try {
    const before = await web.ask('gc');
    const sizes = await udpQueries(web.port, variantFlood('web.service.skein', Number(values.variants)));
    const after = await web.ask('gc');
    const flood = {
      queries: sizes.length,
      largestResponse: Math.max(...sizes),
      rssGrowthMB: (after.rssBytes - before.rssBytes) / MB,
      liveGrowthMB: (after.heapUsed + after.arrayBuffers - before.heapUsed - before.arrayBuffers) / MB,
      cacheEntries: after.stats.cache.entries,
      cacheBytes: after.stats.cache.bytes,
      misses: after.stats.cache.misses,
    };
    table(
      `1a. ${sizes.length} UDP queries to one name of 200 instances (EDNS 512-4096, DO off/on, A and SRV); the server after a GC`,
      ['largest response B', 'RSS growth MB', 'heap + Buffer growth MB', 'cache entries', 'cache bytes', 'misses'],
      [[flood.largestResponse, flood.rssGrowthMB, flood.liveGrowthMB, flood.cacheEntries, flood.cacheBytes, flood.misses]],
    );
    return { flood, fill: await fillToBound() };
  } finally {
    await stopChild(web.proc);
  }
}

/** Many 64-instance services, their SRV answers over TCP and UDP variants: the byte bound holds. */
async function fillToBound(): Promise<Record<string, unknown>> {
  const n = Number(values['fill-services']);
  const server = await startServer(`svc*${n}:64`);
  try {
    const before = await server.ask('gc');
    const queries: Query[] = [];
    for (let s = 0; s < n; s++) queries.push({ name: `svc${s}.service.skein`, type: 'SRV' }, { name: `svc${s}.service.skein`, type: 'A', edns: 1232, dnssecOk: true });
    await tcpQueries(server.port, queries);
    await udpQueries(server.port, queries);
    const after = await server.ask('gc');
    const c = after.stats.cache;
    const fill = {
      services: n,
      queries: queries.length * 2,
      cacheEntries: c.entries,
      cacheMB: c.bytes / MB,
      maxCacheMB: c.maxBytes / MB,
      rssGrowthMB: (after.rssBytes - before.rssBytes) / MB,
      liveGrowthMB: (after.heapUsed + after.arrayBuffers - before.heapUsed - before.arrayBuffers) / MB,
    };
    table(
      `1b. ${n} services x 64 instances, SRV and A over TCP and UDP for each: the cache at its byte bound`,
      ['queries', 'cache entries', 'cache MB (its estimate)', 'bound MB', 'heap + Buffer growth MB', 'RSS growth MB'],
      [[fill.queries, fill.cacheEntries, fill.cacheMB, fill.maxCacheMB, fill.liveGrowthMB, fill.rssGrowthMB]],
    );
    return fill;
  } finally {
    await stopChild(server.proc);
  }
}

// ---------------------------------------------------------------- 2. the cost of a miss

async function missCost(huge: number): Promise<Record<string, unknown>> {
  const registry = await registryWith(`huge:${huge}`);
  const make = (answerSample: number) => new Responder({ zone: new Zone({ registry, domain: 'skein', ttlSeconds: 5, nsAddress: null, serial: 1, answerSample }) });
  const sides = { sample: make(DNS_DEFAULTS.answerSample), whole: make(huge) };
  const rows: Array<Array<string | number>> = [];
  const result: Record<string, unknown> = {};
  for (const [type, transport] of [['A', 'udp'], ['SRV', 'udp'], ['SRV', 'tcp']] as const) {
    const msg = encodeQuery({ name: 'huge.service.skein', type, edns: 1232 }, 1);
    const ms: Record<string, number[]> = { sample: [], whole: [] };
    // Alternating, so that the machine's other load hits both sides alike.
    for (let round = 0; round < 20; round++) {
      for (const side of ['sample', 'whole'] as const) {
        sides[side].clear();
        const t0 = performance.now();
        sides[side].respond(msg, transport);
        ms[side]?.push(performance.now() - t0);
      }
    }
    // Hits: the median of 20 batches of 500, so that collecting the misses' garbage (a GC pause
    // landing in one batch) does not count as the cost of a hit.
    sides.sample.respond(msg, transport);
    const batches: number[] = [];
    for (let b = 0; b < 21; b++) {
      const t0 = performance.now();
      for (let i = 0; i < 500; i++) sides.sample.respond(msg, transport);
      if (b > 0) batches.push((performance.now() - t0) / 500); // the first warms up the JIT
    }
    const hitMs = percentile(batches, 50);
    const med = (side: string) => percentile(ms[side] as number[], 50);
    rows.push([`${type} over ${transport}`, med('sample'), percentile(ms['sample'] as number[], 100), med('whole'), med('whole') / med('sample'), hitMs * 1000]);
    result[`${type}-${transport}`] = { sampleMs: med('sample'), sampleMaxMs: percentile(ms['sample'] as number[], 100), wholeMs: med('whole'), ratio: med('whole') / med('sample'), hitUs: hitMs * 1000 };
  }
  table(
    `2. A miss over one service of ${huge} instances (in-process, 20 alternating misses each; medians)`,
    ['query', 'sample of 64: ms', 'max ms', 'every instance: ms', 'every / sample', 'hit µs'],
    rows,
  );
  return result;
}

// ---------------------------------------------------------------- 3. event-loop block

async function eventLoopBlock(server: Child): Promise<Record<string, unknown>> {
  const run = async (what: string, queries: Query[]) => {
    await server.ask('lag-reset');
    const before = (await server.ask('stats')).stats.cache.misses;
    const t0 = performance.now();
    await udpQueries(server.port, queries, queries.length);
    const wallMs = performance.now() - t0;
    const after = await server.ask('stats');
    return { what, queries: queries.length, wallMs, lagMaxMs: after.lagMaxMs, misses: after.stats.cache.misses - before };
  };
  const probe = Array.from({ length: 40 }, (_, i): Query => ({ name: 'huge.service.skein', type: 'SRV', edns: 1400 + i }));
  // Near the worst one name allows: each query a variant of its own (types that read the
  // instances x EDNS modes x sizes), each a miss (SRV at EDNS 1,300 was cached by the 40 above).
  const worst: Query[] = [];
  for (const type of ['A', 'AAAA', 'SRV', 'ANY'] as const) {
    for (const v of [{}, { edns: 600 }, { edns: 600, dnssecOk: true }, { edns: 1300 }, { edns: 1300, dnssecOk: true }]) worst.push({ name: 'huge.service.skein', type, ...v });
  }
  const rows = [await run('40 SRV, EDNS 1400-1439', probe), await run(`${worst.length} distinct variants of a fresh name`, worst)];
  table(
    '3. Queries for the 26,579-instance service sent at once: the server\'s longest event-loop delay',
    ['queries', 'n', 'all answered after ms', 'longest event-loop delay ms', 'misses'],
    rows.map((r) => [r.what, r.queries, r.wallMs, r.lagMaxMs, r.misses]),
  );
  return { probe: rows[0], worstVariants: rows[1] };
}

// ---------------------------------------------------------------- 4. amplification

async function amplification(server: Child): Promise<Record<string, unknown>> {
  const rows: Array<Array<string | number>> = [];
  let worst = 0;
  for (const type of ['A', 'SRV', 'ANY'] as const) {
    const q: Query = { name: 'web.service.skein', type, edns: 4096 };
    const [size = 0] = await udpQueries(server.port, [q]);
    const qlen = encodeQuery(q, 1).length;
    worst = Math.max(worst, size / qlen);
    rows.push([`${type}, EDNS 4096`, qlen, size, size / qlen]);
  }
  table('4a. One UDP query for a 200-instance service: response against query size', ['query', 'query B', 'response B', 'ratio'], rows);
  const limited = await startServer('web:200', true);
  try {
    const q = encodeQuery({ name: 'web.service.skein', type: 'SRV', edns: 4096 }, 7);
    const sock = createSocket('udp4');
    let bytesOut = 0;
    let replies = 0;
    sock.on('message', (m: Buffer) => {
      bytesOut += m.length;
      replies++;
    });
    await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
    const n = 10_000;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      sock.send(q, limited.port, '127.0.0.1');
      if (i % 100 === 99) await new Promise((r) => setTimeout(r, 10)); // about 10,000 queries/s
    }
    const seconds = (performance.now() - t0) / 1000;
    await new Promise((r) => setTimeout(r, 200)); // the last replies in flight
    const s = await limited.ask('stats');
    sock.close();
    const flood = { queries: n, seconds, bytesIn: n * q.length, replies, bytesOut, ratio: bytesOut / (n * q.length), dropped: s.stats.rateLimit?.dropped, slipped: s.stats.rateLimit?.slipped };
    table(
      `4b. ${n} SRV queries from one source in ${round(seconds)} s, rate limiter on (defaults: 100/s, burst 200, slip 2)`,
      ['bytes in', 'replies', 'bytes out', 'out / in', 'dropped', 'slipped'],
      [[flood.bytesIn, flood.replies, flood.bytesOut, flood.ratio, flood.dropped ?? 0, flood.slipped ?? 0]],
    );
    return { singleQueryWorstRatio: worst, rateLimitedFlood: flood };
  } finally {
    await stopChild(limited.proc);
  }
}

// ---------------------------------------------------------------- 5. slow TCP connections

/** A connection that sends a length prefix and then one byte of its query every 200 ms. */
async function slowConnection(port: number): Promise<Socket> {
  const sock = connect(port, '127.0.0.1');
  sock.on('error', () => {});
  await once(sock, 'connect');
  const q = framed(encodeQuery({ name: 'web.service.skein', type: 'A' }, 9));
  let sent = 2;
  sock.write(q.subarray(0, sent));
  const t = setInterval(() => (sent < q.length - 1 && !sock.destroyed ? sock.write(q.subarray(sent, ++sent)) : undefined), 200);
  sock.once('close', () => clearInterval(t));
  return sock;
}

async function slowTcp(server: Child): Promise<Record<string, unknown>> {
  const n = Number(values.slow);
  const slow: Socket[] = [];
  try {
    for (let i = 0; i < n; i++) slow.push(await slowConnection(server.port));
    const ms: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      await tcpQueries(server.port, [{ name: 'web.service.skein', type: 'A' }]);
      ms.push(performance.now() - t0);
    }
    const s = (await server.ask('stats')).stats.tcp;
    const r = { slowConnections: n, freshQueries: ms.length, medianMs: percentile(ms, 50), maxMs: percentile(ms, 100), evicted: s.evicted, open: s.open };
    table(
      `5. ${n} connections trickling a query a byte at a time, then 20 fresh TCP queries one after another`,
      ['answered', 'median ms', 'max ms', 'slow ones closed at the cap', 'open'],
      [[`${r.freshQueries} of 20`, r.medianMs, r.maxMs, r.evicted, r.open]],
    );
    return r;
  } finally {
    for (const s of slow) s.destroy();
  }
}

async function main(): Promise<void> {
  const info = machine();
  warnIfBusy(info);
  const huge = Number(values.huge);
  const mem = await memory();
  const miss = await missCost(huge);
  const server = await startServer(`web:200,huge:${huge}`);
  try {
    const block = await eventLoopBlock(server);
    const amp = await amplification(server);
    const tcp = await slowTcp(server);
    printResult('dns-hardening', { machine: info, huge, memory: mem, miss, eventLoop: block, amplification: amp, tcp });
  } finally {
    await stopChild(server.proc);
  }
}

if (values.serve) {
  serve().catch((e: unknown) => {
    process.stderr.write(`dns-hardening server failed: ${String(e)}\n`);
    process.exit(1);
  });
} else {
  runMain(main);
}
