/**
 * The DNS server against the real `dig`: A, AAAA, SRV with glue, healthy-only answers, NXDOMAIN,
 * REFUSED, truncation over UDP and the full answer over TCP, 0x20 mixed case, a custom domain.
 * The server runs in-process over a MemoryStore registry on an OS-picked port.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseInstance } from '../src/api/parse.js';
import { systemClock } from '../src/core/clock.js';
import { DnsServer } from '../src/control/dns/server.js';
import { Registry } from '../src/control/registry/registry.js';
import { MemoryStore } from '../src/control/store/store.js';
import { run, waitFor } from './helpers.js';

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

test('a big answer sets TC over UDP without EDNS, and comes whole over TCP', async () => {
  const udp = await dig(['+ignore', '+noedns', 'big.service.skein', 'A']);
  assert.ok(flags(udp).includes('tc'), udp);
  assert.match(udp, /MSG SIZE\s+rcvd: (\d+)/);
  assert.ok(Number(/MSG SIZE\s+rcvd: (\d+)/.exec(udp)?.[1]) <= 512, udp);
  const tcp = await dig(['+tcp', '+short', 'big.service.skein', 'A']);
  assert.equal(lines(tcp).length, 100);
  // Without +ignore, dig itself retries over TCP on TC.
  assert.equal(lines(await dig(['+noedns', '+short', 'big.service.skein', 'SRV'])).length, 100);
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
