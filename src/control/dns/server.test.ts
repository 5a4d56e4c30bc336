import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { connect, createServer, type Socket } from 'node:net';
import { once } from 'node:events';
import dnsPacket, { type Answer, type DecodedPacket, type RecordType } from 'dns-packet';
import { Registry as PromRegistry } from '../../telemetry/prom.js';
import { DNS_DEFAULTS } from '../../api/dns.js';
import { parseInstance } from '../../api/parse.js';
import { systemClock } from '../../core/clock.js';
import { SkeinError } from '../../core/errors.js';
import { Registry } from '../registry/registry.js';
import { MemoryStore } from '../store/store.js';
import { DnsServer } from './server.js';

async function started(opts: Partial<ConstructorParameters<typeof DnsServer>[0]> = {}) {
  const registry = await Registry.open({ clock: systemClock, store: new MemoryStore() });
  await registry.register(parseInstance({ service: 'web', id: 'w1', address: '10.0.0.1', port: 8080 }));
  await registry.register(parseInstance({ service: 'web', id: 'w2', address: '10.0.0.2', port: 8080 }));
  const server = new DnsServer({ registry, port: 0, ...opts });
  const addr = await server.start();
  return { registry, server, port: addr.port, host: addr.host };
}

function query(name: string, type: RecordType = 'A', id = 1): Buffer {
  return dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }] });
}

/**
 * Sends a query and waits for its reply, resending every 200 ms (UDP may drop it: the fuzz test
 * fills the server's receive buffer on purpose) for up to 5 s.
 */
async function udp(port: number, msg: Buffer): Promise<DecodedPacket> {
  const sock = createSocket('udp4');
  const id = msg.readUInt16BE(0);
  try {
    return await new Promise<DecodedPacket>((resolve, reject) => {
      sock.on('message', (reply: Buffer) => {
        if (reply.readUInt16BE(0) === id) resolve(dnsPacket.decode(reply));
      });
      const send = () => sock.send(msg, port, '127.0.0.1');
      const resend = setInterval(send, 200);
      const deadline = setTimeout(() => reject(new Error('no UDP reply within 5 s')), 5000);
      sock.once('close', () => {
        clearInterval(resend);
        clearTimeout(deadline);
      });
      send();
    });
  } finally {
    sock.close();
  }
}

/** Reads length-prefixed messages from a TCP socket. */
function tcpReader(sock: Socket): { next(): Promise<DecodedPacket> } {
  let buf = Buffer.alloc(0);
  const waiting: Array<() => void> = [];
  sock.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    waiting.splice(0).forEach((w) => w());
  });
  return {
    async next() {
      while (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) {
        await new Promise<void>((resolve, reject) => {
          waiting.push(resolve);
          sock.once('close', () => reject(new Error('connection closed')));
        });
      }
      const len = buf.readUInt16BE(0);
      const msg = buf.subarray(2, 2 + len);
      buf = buf.subarray(2 + len);
      return dnsPacket.decode(msg);
    },
  };
}

function framed(msg: Buffer): Buffer {
  const len = Buffer.alloc(2);
  len.writeUInt16BE(msg.length);
  return Buffer.concat([len, msg]);
}

const addresses = (res: DecodedPacket) => (res.answers ?? []).map((r: Answer) => String((r as { data?: unknown }).data)).sort();

test('UDP and TCP listen on the same OS-picked port and answer', async () => {
  const { server, port } = await started();
  try {
    assert.ok(port > 0);
    assert.deepEqual(addresses(await udp(port, query('web.service.skein'))), ['10.0.0.1', '10.0.0.2']);
    const sock = connect(port, '127.0.0.1');
    await once(sock, 'connect');
    const reader = tcpReader(sock);
    // Two queries in one write, then a third split across writes: answered in order.
    sock.write(Buffer.concat([framed(query('web.service.skein', 'A', 11)), framed(query('skein', 'SOA', 12))]));
    const third = framed(query('nope.service.skein', 'A', 13));
    sock.write(third.subarray(0, 5));
    const a = await reader.next();
    const b = await reader.next();
    sock.write(third.subarray(5));
    const c = await reader.next();
    assert.deepEqual([a.id, b.id, c.id], [11, 12, 13]);
    assert.deepEqual(addresses(a), ['10.0.0.1', '10.0.0.2']);
    assert.equal(b.answers?.[0]?.type, 'SOA');
    assert.equal((c as DecodedPacket & { rcode: string }).rcode, 'NXDOMAIN');
    sock.destroy();
  } finally {
    await server.stop();
  }
});

test('TCP: a client that writes many queries before reading gets every answer, in order', async () => {
  const { registry, server, port } = await started();
  for (let i = 1; i <= 100; i++) await registry.register(parseInstance({ service: 'big', id: `b${i}`, address: `10.1.0.${i}`, port: 80 }));
  try {
    const sock = connect(port, '127.0.0.1');
    await once(sock, 'connect');
    // About 2.1 kB per answer (a sample of 64), 4.3 MB in all, for queries that arrive in a few reads: the server's
    // writes outrun the socket, and it stops reading until they drain.
    const n = 2000;
    sock.write(Buffer.concat(Array.from({ length: n }, (_, i) => framed(query('big.service.skein', 'A', i)))));
    const reader = tcpReader(sock);
    for (let i = 0; i < n; i++) {
      const res = await reader.next();
      assert.equal(res.id, i);
      assert.equal(res.answers?.length, DNS_DEFAULTS.answerSample, 'a sample of the 100 instances');
    }
    sock.destroy();
  } finally {
    await server.stop();
  }
});

test('the cache follows health changes seen over the wire', async () => {
  const { registry, server, port } = await started();
  try {
    assert.deepEqual(addresses(await udp(port, query('web.service.skein'))), ['10.0.0.1', '10.0.0.2']);
    await registry.setStatus('web', 'w1', 'unhealthy', 'test');
    assert.deepEqual(addresses(await udp(port, query('web.service.skein'))), ['10.0.0.2']);
    await registry.deregister('web', 'w2');
    assert.deepEqual(addresses(await udp(port, query('web.service.skein'))), []);
  } finally {
    await server.stop();
  }
});

test('TCP: an oversized message or an idle connection is closed; stop() closes open connections', async () => {
  const { server, port } = await started({ tcpIdleTimeoutMs: 200 });
  try {
    const big = connect(port, '127.0.0.1');
    await once(big, 'connect');
    big.write(Buffer.from([0xff, 0xff]));
    await once(big, 'close');

    const idle = connect(port, '127.0.0.1');
    await once(idle, 'connect');
    const t0 = Date.now();
    await once(idle, 'close');
    assert.ok(Date.now() - t0 >= 150, 'closed by the idle timeout, not at once');

    const open = connect(port, '127.0.0.1');
    await once(open, 'connect');
    const closed = once(open, 'close');
    await server.stop();
    await closed;
  } finally {
    await server.stop();
  }
});

test('fuzz over UDP: thousands of junk datagrams, then a valid query is still answered', async () => {
  const { server, port } = await started();
  const sock = createSocket('udp4');
  try {
    let replies = 0;
    sock.on('message', () => replies++);
    let x = 12345;
    const rand = (n: number) => {
      x = (x * 1103515245 + 12345) & 0x7fffffff;
      return x % n;
    };
    const seed = query('web.service.skein', 'SRV');
    for (let i = 0; i < 3000; i++) {
      const msg = i % 2 === 0 ? Buffer.from(Array.from({ length: rand(64) }, () => rand(256))) : Buffer.from(seed.subarray(0, rand(seed.length + 1)));
      if (i % 2 === 1) for (let k = 0; k < 3; k++) if (msg.length > 0) msg[rand(msg.length)] = rand(256);
      sock.send(msg, port, '127.0.0.1');
      if (i % 200 === 0) await new Promise((r) => setImmediate(r)); // let replies drain
    }
    const res = await udp(port, query('web.service.skein', 'SRV', 4242));
    assert.equal(res.id, 4242);
    assert.equal(res.answers?.length, 2);
    assert.ok(replies > 0);
  } finally {
    sock.close();
    await server.stop();
  }
});

test('metrics: queries by transport and rcode, and cache hits, in the given registry', async () => {
  const metrics = new PromRegistry();
  const { server, port } = await started({ metrics });
  try {
    await udp(port, query('web.service.skein'));
    await udp(port, query('web.service.skein'));
    await udp(port, query('example.com'));
    const text = await metrics.metrics();
    // At least: a reply slower than 200 ms makes the client resend.
    const value = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
    assert.ok(value(/skein_dns_queries_total\{transport="udp",rcode="NOERROR"\} (\d+)/) >= 2, text);
    assert.ok(value(/skein_dns_queries_total\{transport="udp",rcode="REFUSED"\} (\d+)/) >= 1, text);
    assert.ok(value(/skein_dns_cache_hits_total (\d+)/) >= 1, text);
  } finally {
    await server.stop();
  }
});

test('a custom domain, and options are checked', async () => {
  const { server, port } = await started({ domain: 'Mesh.Internal.' });
  try {
    assert.deepEqual(addresses(await udp(port, query('web.service.mesh.internal'))), ['10.0.0.1', '10.0.0.2']);
    assert.equal(((await udp(port, query('web.service.skein'))) as DecodedPacket & { rcode: string }).rcode, 'REFUSED');
  } finally {
    await server.stop();
  }
  const registry = await Registry.open({ clock: systemClock, store: new MemoryStore() });
  assert.throws(() => new DnsServer({ registry, domain: 'bad domain' }), (e) => e instanceof SkeinError && e.field === 'domain');
  assert.throws(() => new DnsServer({ registry, ttlSeconds: -1 }), (e) => e instanceof SkeinError && e.field === 'ttlSeconds');
  const bad: Array<[Partial<ConstructorParameters<typeof DnsServer>[0]>, string]> = [
    [{ answerSample: 0 }, 'answerSample'],
    [{ maxCacheBytes: -1 }, 'maxCacheBytes'],
    [{ maxCacheEntries: 1.5 }, 'maxCacheEntries'],
    [{ tcpIdleTimeoutMs: 0 }, 'tcpIdleTimeoutMs'],
    [{ maxTcpConnections: 0 }, 'maxTcpConnections'],
    [{ rateLimit: { enabled: true, slip: 11 } }, 'rateLimit.slip'],
    [{ rateLimit: { enabled: true, responsesPerSecond: 0 } }, 'rateLimit.responsesPerSecond'],
  ];
  for (const [opts, field] of bad) {
    assert.throws(() => new DnsServer({ registry, ...opts }), (e) => e instanceof SkeinError && e.field === field && e.message.includes(field), field);
  }
});

test('a port already taken (TCP side) fails with SKEIN_E_ADDRESS_IN_USE', async () => {
  const blocker = createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  const port = (blocker.address() as { port: number }).port;
  try {
    const registry = await Registry.open({ clock: systemClock, store: new MemoryStore() });
    const server = new DnsServer({ registry, port });
    await assert.rejects(server.start(), (e) => e instanceof SkeinError && e.code === 'SKEIN_E_ADDRESS_IN_USE');
    await server.stop();
  } finally {
    blocker.close();
  }
});

test('a server given no host or port listens on DNS_DEFAULTS.host:DNS_DEFAULTS.port (the CLI default)', async () => {
  // Hold the default port's TCP side (or find it held already): start() must then name that address.
  const blocker = createServer();
  const held = await new Promise<boolean>((resolve) => {
    blocker.once('error', () => resolve(false));
    blocker.listen(DNS_DEFAULTS.port, DNS_DEFAULTS.host, () => resolve(true));
  });
  try {
    const registry = await Registry.open({ clock: systemClock, store: new MemoryStore() });
    const server = new DnsServer({ registry });
    const outcome = await server.start().then(
      (where) => where,
      (e: unknown) => e,
    );
    await server.stop();
    assert.ok(outcome instanceof SkeinError && outcome.code === 'SKEIN_E_ADDRESS_IN_USE', `it listened on ${JSON.stringify(outcome)}, not on the default port`);
    assert.match(outcome.message, new RegExp(`^DNS server cannot listen on ${DNS_DEFAULTS.host.replaceAll('.', '\\.')}:${DNS_DEFAULTS.port}: `));
  } finally {
    if (held) await new Promise((r) => blocker.close(r));
  }
});
