/**
 * The DNS server against the real `dig`: A, AAAA, SRV with glue, healthy-only answers, NXDOMAIN,
 * REFUSED, truncation over UDP and the sampled answer over TCP, 0x20 mixed case, a custom domain;
 * then the hardening of issue 11: the 1,232-byte UDP cap whatever EDNS size is asked, the cache's
 * bounds under thousands of variant queries, the answer sample over 20,000 instances, TCP idle
 * timeout and connection cap against slow clients, and per-source rate limiting.
 * Servers run in-process over MemoryStore registries on OS-picked ports.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { join } from 'node:path';
import dnsPacket from 'dns-packet';
import { Registry as PromRegistry } from '../src/telemetry/prom.js';
import { DNS_DEFAULTS } from '../src/api/dns.js';
import { parseInstance } from '../src/api/parse.js';
import { systemClock } from '../src/core/clock.js';
import { DnsServer, type DnsServerOptions } from '../src/control/dns/server.js';
import { Registry } from '../src/control/registry/registry.js';
import { MemoryStore } from '../src/control/store/store.js';
import { metricSample, run, tempDir, waitFor } from './helpers.js';

let registry: Registry;
let server: DnsServer;
let port: number;

before(async () => {
  registry = await Registry.open({ clock: systemClock, store: new MemoryStore() });
  const add = (service: string, id: string, address: string, p: number, weight = 1) => registry.register(parseInstance({ service, id, address, port: p, weight }));
  await add('web', 'w1', '10.0.0.1', 8080, 10);
  await add('web', 'w2', '10.0.0.2', 8081, 20);
  await add('web', 'w6', '2001:db8::6', 9090);
  for (let i = 1; i <= 100; i++) await add('big', `b${i}`, `10.1.0.${i}`, 7000);
  server = new DnsServer({ registry, port: 0 });
  port = (await server.start()).port;
});

after(async () => {
  await server?.stop();
});

/** Runs dig against a server; fails the test when dig itself fails (timeout, bad usage). */
async function dig(args: string[], p = port): Promise<string> {
  const r = await run('dig', ['@127.0.0.1', '-p', String(p), '+time=2', '+tries=3', ...args], { timeoutMs: 20_000 });
  assert.equal(r.code, 0, `dig ${args.join(' ')} failed (${r.code}): ${r.stdout}${r.stderr}`);
  return r.stdout;
}

const lines = (out: string) => out.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith(';'));
const sorted = (out: string) => lines(out).sort();
const status = (out: string) => /status: (\w+)/.exec(out)?.[1];
const flags = (out: string) => (/;; flags: ([a-z ]*);/.exec(out)?.[1] ?? '').trim().split(' ');

test('A and AAAA: the healthy instances, authoritative, no recursion offered', async () => {
  assert.deepEqual(sorted(await dig(['+short', 'web.service.skein', 'A'])), ['10.0.0.1', '10.0.0.2']);
  assert.deepEqual(sorted(await dig(['+short', 'web.service.skein', 'AAAA'])), ['2001:db8::6']);
  const full = await dig(['+norecurse', 'web.service.skein', 'A']);
  assert.equal(status(full), 'NOERROR');
  assert.ok(flags(full).includes('aa'), full);
  assert.ok(!flags(full).includes('ra'), full);
  assert.match(full, /web\.service\.skein\.\s+5\s+IN\s+A\s+10\.0\.0\.1/);
});

test('SRV: priority 1, weights, ports, hex targets, and their addresses in the additional section', async () => {
  const out = await dig(['+noall', '+answer', '+additional', 'web.service.skein', 'SRV']);
  const rrs = lines(out).map((l) => l.split(/\s+/));
  const srv = rrs.filter((f) => f[3] === 'SRV').map((f) => f.slice(4).join(' ')).sort();
  assert.deepEqual(srv, ['1 1 9090 20010db8000000000000000000000006.addr.skein.', '1 10 8080 0a000001.addr.skein.', '1 20 8081 0a000002.addr.skein.']);
  const glue = rrs.filter((f) => f[3] === 'A' || f[3] === 'AAAA').map((f) => `${f[0]} ${f[3]} ${f[4]}`).sort();
  assert.deepEqual(glue, ['0a000001.addr.skein. A 10.0.0.1', '0a000002.addr.skein. A 10.0.0.2', '20010db8000000000000000000000006.addr.skein. AAAA 2001:db8::6']);
  // The RFC 2782 spelling, and the targets themselves.
  assert.equal(sorted(await dig(['+short', '_web._tcp.service.skein', 'SRV'])).length, 3);
  assert.deepEqual(sorted(await dig(['+short', '0a000002.addr.skein', 'A'])), ['10.0.0.2']);
});

test('an unhealthy instance disappears, and comes back when healthy', async () => {
  await registry.setStatus('web', 'w1', 'unhealthy', 'test');
  try {
    await waitFor(async () => sorted(await dig(['+short', 'web.service.skein', 'A'])).join() === '10.0.0.2', { what: 'w1 to leave the A answer' });
    assert.equal(sorted(await dig(['+short', 'web.service.skein', 'SRV'])).length, 2);
  } finally {
    await registry.setStatus('web', 'w1', 'healthy', 'test');
  }
  await waitFor(async () => sorted(await dig(['+short', 'web.service.skein', 'A'])).length === 2, { what: 'w1 back in the A answer' });
});

test('NXDOMAIN in the zone with its SOA; NODATA for a type a name lacks; SOA and NS at the apex', async () => {
  const nx = await dig(['+norecurse', 'nope.service.skein', 'A']);
  assert.equal(status(nx), 'NXDOMAIN');
  assert.ok(flags(nx).includes('aa'), nx);
  assert.match(nx, /AUTHORITY SECTION:\s*\nskein\.\s+5\s+IN\s+SOA\s+ns\.skein\. hostmaster\.skein\./);
  const nodata = await dig(['+norecurse', 'web.service.skein', 'MX']);
  assert.equal(status(nodata), 'NOERROR');
  assert.match(nodata, /ANSWER: 0,/);
  assert.match(nodata, /IN\s+SOA/);
  assert.match(await dig(['+short', 'skein', 'SOA']), /^ns\.skein\. hostmaster\.skein\. \d+ 3600 600 86400 5$/m);
  assert.deepEqual(sorted(await dig(['+short', 'skein', 'NS'])), ['ns.skein.']);
  assert.deepEqual(sorted(await dig(['+short', 'ns.skein', 'A'])), ['127.0.0.1']);
});

test('REFUSED outside the zone: never an open resolver', async () => {
  for (const name of ['example.com', 'skein.example.com', '.']) {
    const out = await dig(['+recurse', name, 'A']);
    assert.equal(status(out), 'REFUSED', out);
    assert.ok(!flags(out).includes('aa') && !flags(out).includes('ra'), out);
    assert.match(out, /ANSWER: 0,/);
  }
});

const msgSize = (out: string) => Number(/MSG SIZE\s+rcvd: (\d+)/.exec(out)?.[1] ?? NaN);

test('a big answer sets TC over UDP without EDNS, and comes over TCP as a sample of 64 of its 100 instances', async () => {
  const udp = await dig(['+ignore', '+noedns', 'big.service.skein', 'A']);
  assert.ok(flags(udp).includes('tc'), udp);
  assert.ok(msgSize(udp) <= 512, udp);
  const tcp = await dig(['+tcp', '+short', 'big.service.skein', 'A']);
  assert.equal(lines(tcp).length, DNS_DEFAULTS.answerSample);
  assert.equal(new Set(lines(tcp)).size, DNS_DEFAULTS.answerSample);
  // Without +ignore, dig itself retries over TCP on TC.
  assert.equal(lines(await dig(['+noedns', '+short', 'big.service.skein', 'SRV'])).length, DNS_DEFAULTS.answerSample);
});

test('UDP answers never exceed 1,232 bytes and set TC for a big service, whatever EDNS size dig asks', async () => {
  for (const type of ['A', 'SRV', 'ANY']) {
    for (const bufsize of [512, 1000, 1231, 1232, 1400, 1439, 4096, 65535]) {
      for (const dnssec of ['+nodnssec', '+dnssec']) {
        // +notcp: dig asks ANY over TCP by default.
        const out = await dig(['+notcp', '+ignore', `+bufsize=${bufsize}`, dnssec, 'big.service.skein', type]);
        const limit = bufsize >= 1232 ? 1232 : 512;
        const what = `${type} +bufsize=${bufsize} ${dnssec}`;
        assert.ok(msgSize(out) <= limit, `${what}: ${msgSize(out)} bytes\n${out}`);
        assert.ok(flags(out).includes('tc'), `${what}: no TC\n${out}`);
        assert.match(out, /; EDNS: version: 0, flags:[ a-z]*; udp: 1232/, what);
      }
    }
  }
});

test('0x20 mixed case: answered, and the question echoed exactly as asked', async () => {
  const out = await dig(['+noall', '+question', '+answer', 'wEb.SeRvIcE.sKeIn', 'A']);
  assert.match(out, /^;wEb\.SeRvIcE\.sKeIn\.\s+IN\s+A$/m);
  assert.equal(lines(out).filter((l) => /\sA\s/.test(l)).length, 2);
  const tcp = await dig(['+tcp', '+noall', '+question', '+answer', 'WEB.SERVICE.SKEIN', 'SRV']);
  assert.match(tcp, /^;WEB\.SERVICE\.SKEIN\.\s+IN\s+SRV$/m);
});

test('a custom domain on its own server', async () => {
  const custom = new DnsServer({ registry, port: 0, domain: 'mesh.local', ttlSeconds: 30 });
  const p = (await custom.start()).port;
  try {
    const out = await dig(['+noall', '+answer', 'web.service.mesh.local', 'A'], p);
    assert.match(out, /web\.service\.mesh\.local\.\s+30\s+IN\s+A\s+10\.0\.0\.1/);
    assert.equal(status(await dig(['web.service.skein', 'A'], p)), 'REFUSED');
    assert.equal(lines(await dig(['+short', 'web.service.mesh.local', 'SRV'], p)).filter((l) => l.includes('.addr.mesh.local.')).length, 3);
  } finally {
    await custom.stop();
  }
});

// ---------------------------------------------------------------- hardening (issue 11)

/** A server of its own over a registry that `fill` populates; stopped by the caller. */
async function ownServer(fill: (add: (service: string, id: string, address: string, port: number) => Promise<unknown>) => Promise<void>, opts: Partial<DnsServerOptions> = {}) {
  const reg = await Registry.open({ clock: systemClock, store: new MemoryStore() });
  await fill((service, id, address, p) => reg.register(parseInstance({ service, id, address, port: p })));
  const srv = new DnsServer({ registry: reg, port: 0, ...opts });
  return { registry: reg, server: srv, port: (await srv.start()).port };
}

/** Runs dig over a batch file (one query a line, `dig -f`); returns its output. */
async function digBatch(p: number, queryLines: string[]): Promise<string> {
  const dir = await tempDir('skein-dns-batch-');
  try {
    const file = join(dir.path, 'queries.txt');
    await writeFile(file, queryLines.join('\n') + '\n');
    const r = await run('dig', ['@127.0.0.1', '-p', String(p), '+time=2', '+tries=3', '-f', file], { timeoutMs: 120_000 });
    assert.equal(r.code, 0, `dig -f failed (${r.code}): ${r.stderr}`);
    return r.stdout;
  } finally {
    await dir.remove();
  }
}

test('3,588 variant queries (EDNS 512-4096, DO bit) to one name of 200 instances make 5 cache entries', async () => {
  const own = await ownServer(async (add) => {
    for (let i = 1; i <= 200; i++) await add('web', `w${i}`, `10.2.${i >> 8}.${i & 255}`, 8000 + i);
  });
  try {
    const variants: string[] = [];
    for (let size = 512; size <= 4096; size++) variants.push(`web.service.skein SRV +ignore +bufsize=${size} ${size % 2 === 0 ? '+dnssec' : '+nodnssec'}`);
    variants.push('web.service.skein SRV +ignore +noedns', 'web.service.skein SRV +ignore +bufsize=600 +dnssec', 'web.service.skein SRV +ignore +bufsize=1300 +nodnssec');
    const out = await digBatch(own.port, variants);
    const sizes = [...out.matchAll(/MSG SIZE\s+rcvd: (\d+)/g)].map((m) => Number(m[1]));
    assert.equal(sizes.length, variants.length);
    assert.ok(Math.max(...sizes) <= 1232, `largest UDP answer ${Math.max(...sizes)}`);
    // 3,588 queries, 5 variants: no EDNS; EDNS under 1,232 with DO off / on; 1,232 and up, DO off / on.
    const st = own.server.stats().cache;
    assert.equal(st.entries, 5, JSON.stringify(st));
    assert.equal(st.misses, 5);
    assert.ok(st.bytes < 100_000, `${st.bytes} bytes for 5 entries`);
  } finally {
    await own.server.stop();
  }
});

test('the cache stays within its entry and byte bounds under many names and variants (metrics say so)', async () => {
  const metrics = new PromRegistry();
  const maxCacheEntries = 60;
  const maxCacheBytes = 120_000;
  const own = await ownServer(
    async (add) => {
      for (let s = 1; s <= 20; s++) for (let i = 1; i <= 30; i++) await add(`svc${s}`, `i${i}`, `10.3.${s}.${i}`, 9000 + i);
    },
    { maxCacheEntries, maxCacheBytes, metrics },
  );
  try {
    const queries: string[] = [];
    for (let round = 0; round < 2; round++) {
      for (let s = 1; s <= 20; s++) {
        for (const type of ['A', 'SRV', 'TXT', 'TYPE65']) {
          queries.push(`svc${s}.service.skein ${type} +ignore +bufsize=${512 + s * 97} +dnssec`, `svc${s}.service.skein ${type} +ignore +noedns`, `svc${s}.service.skein ${type} +tcp`);
        }
      }
      for (let i = 0; i < 300; i++) queries.push(`0a03${(i >> 8).toString(16).padStart(2, '0')}${(i & 255).toString(16).padStart(2, '0')}.addr.skein A +ignore +bufsize=${1232 + i}`);
    }
    const out = await digBatch(own.port, queries);
    assert.equal([...out.matchAll(/status: NOERROR/g)].length, queries.length);
    const st = own.server.stats().cache;
    assert.ok(st.entries <= maxCacheEntries && st.bytes <= maxCacheBytes, JSON.stringify(st));
    assert.ok(st.misses > maxCacheEntries, 'more distinct responses than the cache holds went through it');
    const text = await metrics.metrics();
    assert.equal(metricSample(text, 'skein_dns_cache_entries'), st.entries);
    assert.equal(metricSample(text, 'skein_dns_cache_bytes'), st.bytes);
  } finally {
    await own.server.stop();
  }
});

test('a miss over a service of 20,000 instances builds only the sample of 64 (and its glue)', async () => {
  const own = await ownServer(async (add) => {
    for (let i = 0; i < 20_000; i++) await add('huge', `h${i}`, `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`, 7000);
  });
  try {
    const before = own.server.stats().cache.recordsBuilt;
    const srv = lines(await dig(['+tcp', '+noall', '+answer', 'huge.service.skein', 'SRV'], own.port));
    assert.equal(srv.length, DNS_DEFAULTS.answerSample);
    assert.equal(new Set(srv.map((l) => l.split(/\s+/).slice(-1)[0])).size, DNS_DEFAULTS.answerSample, 'distinct targets');
    assert.equal(own.server.stats().cache.recordsBuilt - before, 2 * DNS_DEFAULTS.answerSample, '64 SRV records and their 64 glue records');
    const a = await dig(['+ignore', '+bufsize=4096', 'huge.service.skein', 'A'], own.port);
    assert.ok(flags(a).includes('tc') && msgSize(a) <= 1232, a);
    assert.equal(own.server.stats().cache.recordsBuilt - before, 3 * DNS_DEFAULTS.answerSample);
  } finally {
    await own.server.stop();
  }
});

/**
 * A TCP client that sends a query's length prefix and first bytes, then one more byte every 50 ms:
 * a query of about 250 bytes takes it some 12 s, and it never sends the last byte.
 */
async function slowClient(p: number): Promise<{ sock: Socket; closed: Promise<{ at: number; trickling: boolean }> }> {
  const sock = connect(p, '127.0.0.1');
  await once(sock, 'connect');
  const name = `${'a'.repeat(60)}.${'b'.repeat(60)}.${'c'.repeat(60)}.${'d'.repeat(40)}.service.skein`;
  const q = dnsPacket.encode({ type: 'query', id: 5, questions: [{ type: 'A', name }] });
  const framed = Buffer.concat([Buffer.from([q.length >> 8, q.length & 255]), q]);
  sock.write(framed.subarray(0, 4));
  let sent = 4;
  const trickle = setInterval(() => {
    if (sent < framed.length - 1 && !sock.destroyed) sock.write(framed.subarray(sent, ++sent));
  }, 50);
  sock.on('error', () => {});
  const closed = new Promise<{ at: number; trickling: boolean }>((resolve) =>
    sock.once('close', () => {
      clearInterval(trickle);
      resolve({ at: Date.now(), trickling: sent < framed.length - 1 });
    }),
  );
  return { sock, closed };
}

test('TCP: a connection trickling bytes without completing a query is closed after the idle timeout', async () => {
  const own = await ownServer(async (add) => void (await add('web', 'w1', '10.0.0.1', 80)), { tcpIdleTimeoutMs: 1000 });
  try {
    const t0 = Date.now();
    const slow = await slowClient(own.port);
    const closed = await slow.closed;
    assert.ok(closed.at - t0 >= 950, `closed after ${closed.at - t0} ms, before the idle timeout`);
    assert.ok(closed.trickling, `closed after ${closed.at - t0} ms, only when the client had nothing more to send`);
    assert.equal(own.server.stats().tcp.idleClosed, 1);
    // A client that keeps asking stays open past the timeout.
    const sock = connect(own.port, '127.0.0.1');
    await once(sock, 'connect');
    const q = dnsPacket.encode({ type: 'query', id: 6, questions: [{ type: 'A', name: 'web.service.skein' }] });
    let answers = 0;
    sock.on('data', () => answers++);
    for (let i = 0; i < 10; i++) {
      sock.write(Buffer.concat([Buffer.from([0, q.length]), q]));
      await waitFor(() => answers > i, { what: `answer ${i + 1}` });
      await new Promise((r) => setTimeout(r, 200)); // the client's pace (a query every 200 ms), not a wait for the server
    }
    assert.ok(!sock.destroyed, 'an active client outlived the idle timeout');
    sock.destroy();
  } finally {
    await own.server.stop();
  }
});

test('TCP: at the connection cap a fresh dig query is still answered; the idlest connection makes room', async () => {
  const cap = 20;
  const own = await ownServer(async (add) => void (await add('web', 'w1', '10.0.0.1', 80)), { maxTcpConnections: cap, tcpIdleTimeoutMs: 60_000 });
  const slow: Array<Awaited<ReturnType<typeof slowClient>>> = [];
  try {
    for (let i = 0; i < cap; i++) slow.push(await slowClient(own.port));
    for (let i = 1; i <= 3; i++) {
      await waitFor(() => own.server.stats().tcp.open === cap, { what: `${cap} connections open` });
      assert.deepEqual(sorted(await dig(['+tcp', '+short', 'web.service.skein', 'A'], own.port)), ['10.0.0.1']);
      assert.equal(own.server.stats().tcp.evicted, i);
      // The slow client idle longest was the one closed; dig's own connection closes after it.
      await slow[i - 1]?.closed;
      assert.ok(slow.slice(i).every((c) => !c.sock.destroyed));
      await waitFor(() => own.server.stats().tcp.open === cap - 1, { what: "dig's connection to close" });
      slow.push(await slowClient(own.port));
    }
    assert.equal(own.server.stats().tcp.open, cap);
  } finally {
    for (const c of slow) c.sock.destroy();
    await own.server.stop();
  }
});

test('rate limiting: one source past its rate gets its burst and rate, then alternately a drop and a truncated slip', async () => {
  const rateLimit = { enabled: true, responsesPerSecond: 5, burst: 10, slip: 2 };
  const own = await ownServer(async (add) => void (await add('web', 'w1', '10.0.0.1', 80)), { rateLimit });
  const sock = createSocket('udp4');
  try {
    const replies: dnsPacket.DecodedPacket[] = [];
    sock.on('message', (m: Buffer) => replies.push(dnsPacket.decode(m)));
    await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
    const n = 100;
    const t0 = Date.now();
    for (let i = 0; i < n; i++) sock.send(dnsPacket.encode({ type: 'query', id: i, questions: [{ type: 'A', name: 'web.service.skein' }] }), own.port, '127.0.0.1');
    await waitFor(() => (own.server.stats().rateLimit?.dropped ?? 0) + replies.length >= n, { what: 'every query answered, slipped or dropped' });
    const seconds = (Date.now() - t0) / 1000;
    const full = replies.filter((r) => !r.flag_tc);
    const slipped = replies.filter((r) => r.flag_tc);
    assert.ok(full.length >= rateLimit.burst && full.length <= rateLimit.burst + Math.ceil(rateLimit.responsesPerSecond * seconds) + 1, `${full.length} full answers in ${seconds} s`);
    assert.ok(full.every((r) => r.answers?.length === 1));
    assert.ok(slipped.every((r) => r.answers?.length === 0 && r.questions?.length === 1), 'slips carry only the question');
    const limited = n - full.length;
    const rrl = own.server.stats().rateLimit;
    assert.deepEqual(rrl, { dropped: limited - Math.floor(limited / 2), slipped: Math.floor(limited / 2), sources: 1 });
  } finally {
    sock.close();
    await own.server.stop();
  }
});

test('rate limiting: a slipped truncated response sends dig to TCP, which is never limited', async () => {
  // One response a second and every limited one slipped: dig's query right after a burst is limited.
  const own = await ownServer(async (add) => void (await add('web', 'w1', '10.0.0.1', 80)), { rateLimit: { enabled: true, responsesPerSecond: 1, burst: 1, slip: 1 } });
  try {
    await dig(['+noedns', '+ignore', 'web.service.skein', 'A'], own.port);
    const out = await dig(['+noedns', 'web.service.skein', 'A'], own.port);
    assert.match(out, /Truncated, retrying in TCP mode/);
    assert.match(out, /web\.service\.skein\.\s+5\s+IN\s+A\s+10\.0\.0\.1/);
    assert.match(out, /\(TCP\)/);
    assert.equal(own.server.stats().rateLimit?.slipped, 1);
  } finally {
    await own.server.stop();
  }
});

test('rate limiting is on by default only beyond loopback', async () => {
  const reg = await Registry.open({ clock: systemClock, store: new MemoryStore() });
  // Not started: nothing listens on the wildcard address.
  assert.notEqual(new DnsServer({ registry: reg, host: '0.0.0.0' }).stats().rateLimit, null);
  assert.notEqual(new DnsServer({ registry: reg, host: '::' }).stats().rateLimit, null);
  assert.equal(new DnsServer({ registry: reg, host: '127.0.0.1' }).stats().rateLimit, null);
  assert.equal(new DnsServer({ registry: reg, host: '::1' }).stats().rateLimit, null);
  assert.equal(new DnsServer({ registry: reg, host: '0.0.0.0', rateLimit: { enabled: false } }).stats().rateLimit, null);
  assert.equal(server.stats().rateLimit, null);
});
