import { test } from 'node:test';
import assert from 'node:assert/strict';
import dnsPacket, { type Answer, type DecodedPacket, type Packet, type RecordType } from 'dns-packet';
import { DNS_DEFAULTS } from '../../api/dns.js';
import { parseInstance } from '../../api/parse.js';
import { ManualClock, systemClock, type Clock } from '../../core/clock.js';
import { Registry } from '../registry/registry.js';
import { MemoryStore } from '../store/store.js';
import { Responder, type Transport } from './responder.js';
import { Zone } from './zone.js';
import { seededRandom } from '../../core/seeded-random.js';

async function setup(opts: { maxCacheEntries?: number; maxCacheBytes?: number; answerSample?: number; clock?: Clock } = {}) {
  const registry = await Registry.open({ clock: systemClock, store: new MemoryStore() });
  const { answerSample = DNS_DEFAULTS.answerSample, ...rest } = opts;
  const zone = new Zone({ registry, domain: 'skein', ttlSeconds: 5, nsAddress: '127.0.0.1', serial: 1, answerSample });
  const responder = new Responder({ zone, ...rest });
  registry.onChange((e) => responder.invalidate(e.service));
  const add = (service: string, id: string, address: string, port = 80) => registry.register(parseInstance({ service, id, address, port }));
  return { registry, responder, add };
}

type Setup = Awaited<ReturnType<typeof setup>>;

const data = (r: Answer | undefined): unknown => (r as { data?: unknown } | undefined)?.data;

const EDNS = (payload: number, version = 0): dnsPacket.OptAnswer => ({
  type: 'OPT',
  name: '.',
  udpPayloadSize: payload,
  extendedRcode: 0,
  ednsVersion: version,
  flags: 0,
  flag_do: false,
  options: [],
});

let nextId = 1;
function askRaw(s: Setup, name: string, type: RecordType = 'A', opts: { transport?: Transport; edns?: number; dnssecOk?: boolean; packet?: Partial<Packet> } = {}): { res: DecodedPacket; bytes: number } {
  const id = nextId++ & 0xffff;
  const opt = opts.edns === undefined ? [] : [{ ...EDNS(opts.edns), flags: opts.dnssecOk === true ? dnsPacket.DNSSEC_OK : 0, flag_do: opts.dnssecOk === true }];
  const msg = dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }], additionals: opt, ...opts.packet });
  const out = s.responder.respond(msg, opts.transport ?? 'udp');
  assert.ok(out !== null, 'expected a response');
  const res = dnsPacket.decode(out);
  assert.equal(res.id, id);
  return { res, bytes: out.length };
}

function ask(s: Setup, name: string, type: RecordType = 'A', opts: { transport?: Transport; edns?: number; dnssecOk?: boolean; packet?: Partial<Packet> } = {}): DecodedPacket {
  return askRaw(s, name, type, opts).res;
}

function rcodeOf(res: DecodedPacket): string {
  return (res as DecodedPacket & { rcode: string }).rcode;
}

test('an answer: AA set, RA clear, RD copied, question echoed as asked (0x20)', async () => {
  const s = await setup();
  await s.add('web', 'w1', '10.0.0.1');
  const res = ask(s, 'wEb.SeRvIcE.sKeIn', 'A');
  assert.equal(rcodeOf(res), 'NOERROR');
  assert.equal(res.flag_qr, true);
  assert.equal(res.flag_aa, true);
  assert.equal(res.flag_ra, false);
  assert.equal(res.flag_rd, true);
  assert.equal(res.flag_tc, false);
  assert.deepEqual(res.questions, [{ name: 'wEb.SeRvIcE.sKeIn', type: 'A', class: 'IN' }]);
  assert.deepEqual(res.answers, [{ name: 'web.service.skein', type: 'A', ttl: 5, class: 'IN', flush: false, data: '10.0.0.1' }]);
});

test('REFUSED outside the zone, without AA; NXDOMAIN inside it with the SOA', async () => {
  const s = await setup();
  const refused = ask(s, 'example.com');
  assert.equal(rcodeOf(refused), 'REFUSED');
  assert.equal(refused.flag_aa, false);
  assert.equal(refused.flag_ra, false);
  assert.equal(refused.answers?.length, 0);
  const nx = ask(s, 'nope.service.skein');
  assert.equal(rcodeOf(nx), 'NXDOMAIN');
  assert.equal(nx.flag_aa, true);
  assert.equal(nx.authorities?.[0]?.type, 'SOA');
});

test('EDNS: the response carries an OPT record; version 1 gets BADVERS', async () => {
  const s = await setup();
  const res = ask(s, 'skein', 'SOA', { edns: 1232 });
  const opt = res.additionals?.find((r) => r.type === 'OPT') as dnsPacket.OptAnswer | undefined;
  assert.ok(opt !== undefined);
  assert.equal(opt.udpPayloadSize, 1232, 'what we take: DNS Flag Day 2020');
  const bad = ask(s, 'skein', 'SOA', { packet: { additionals: [EDNS(1232, 1)] } });
  const badOpt = bad.additionals?.find((r) => r.type === 'OPT') as dnsPacket.OptAnswer | undefined;
  assert.equal(badOpt?.extendedRcode, 1, 'BADVERS is extended rcode 16 = 1 << 4');
  assert.equal(bad.answers?.length, 0);
});

test('a query with records dns-packet must decode (answer section, two additionals) is still answered', async () => {
  const s = await setup();
  await s.add('web', 'w1', '10.0.0.1');
  const res = ask(s, 'web.service.skein', 'A', {
    packet: { answers: [{ type: 'A', name: 'x.skein', data: '1.2.3.4' }], additionals: [{ type: 'A', name: 'y.skein', data: '1.2.3.4' }, EDNS(1232)] },
  });
  assert.equal(rcodeOf(res), 'NOERROR');
  assert.equal(data(res.answers?.[0]), '10.0.0.1');
  const twoOpts = dnsPacket.encode({ type: 'query', id: 9, questions: [{ type: 'A', name: 'skein' }], additionals: [EDNS(1232), EDNS(1232)] });
  assert.equal(rcodeOf(dnsPacket.decode(s.responder.respond(twoOpts, 'udp') as Buffer)), 'FORMERR');
});

test('header problems: NOTIMP for another opcode, FORMERR for qdcount != 1, responses and runts dropped', async () => {
  const s = await setup();
  const notify = dnsPacket.encode({ type: 'query', id: 7, flags: 4 << 11, questions: [{ type: 'SOA', name: 'skein' }] });
  const r1 = dnsPacket.decode(s.responder.respond(notify, 'udp') as Buffer);
  assert.equal(rcodeOf(r1), 'NOTIMP');
  assert.equal(r1.id, 7);
  const two = dnsPacket.encode({ type: 'query', id: 8, questions: [{ type: 'A', name: 'a.skein' }, { type: 'A', name: 'b.skein' }] });
  assert.equal(rcodeOf(dnsPacket.decode(s.responder.respond(two, 'udp') as Buffer)), 'FORMERR');
  const none = dnsPacket.encode({ type: 'query', id: 9, questions: [] });
  assert.equal(rcodeOf(dnsPacket.decode(s.responder.respond(none, 'udp') as Buffer)), 'FORMERR');
  const response = dnsPacket.encode({ type: 'response', id: 10, questions: [{ type: 'A', name: 'skein' }] });
  assert.equal(s.responder.respond(response, 'udp'), null);
  assert.equal(s.responder.respond(Buffer.alloc(11), 'udp'), null);
  const garbage = Buffer.from([0xab, 0xcd, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xff]);
  const r2 = dnsPacket.decode(s.responder.respond(garbage, 'udp') as Buffer);
  assert.equal(rcodeOf(r2), 'FORMERR');
  assert.equal(r2.id, 0xabcd);
});

test('other classes and zone transfers are REFUSED; OPT as a question type is FORMERR', async () => {
  const s = await setup();
  assert.equal(rcodeOf(ask(s, 'version.bind', 'TXT', { packet: { questions: [{ type: 'TXT', name: 'version.bind', class: 'CH' }] } })), 'REFUSED');
  assert.equal(rcodeOf(ask(s, 'skein', 'AXFR')), 'REFUSED');
  assert.equal(rcodeOf(ask(s, 'skein', 'OPT')), 'FORMERR');
  // Class ANY is answered as IN, its question echoed as asked.
  const any = ask(s, 'skein', 'SOA', { packet: { questions: [{ type: 'SOA', name: 'skein', class: 'ANY' }] } });
  assert.equal(rcodeOf(any), 'NOERROR');
  assert.equal(any.questions?.[0]?.class, 'ANY');
});

test('SRV over UDP keeps glue when it fits, drops glue (no TC) before answers, sets TC last', async () => {
  const s = await setup();
  for (let i = 1; i <= 7; i++) await s.add('mid', `m${i}`, `10.0.1.${i}`);
  for (let i = 1; i <= 100; i++) await s.add('big', `b${i}`, `10.0.2.${i}`);
  const full = ask(s, 'mid.service.skein', 'SRV', { edns: 4096 });
  assert.equal(full.answers?.length, 7);
  assert.equal(full.additionals?.filter((r) => r.type === 'A').length, 7);
  // 7 SRV records fit in 512 bytes, their 7 glue records do not all: some glue, no TC.
  const classic = ask(s, 'mid.service.skein', 'SRV');
  assert.equal(classic.flag_tc, false);
  assert.equal(classic.answers?.length, 7);
  assert.ok((classic.additionals?.length ?? 0) < 7);
  const tc = ask(s, 'big.service.skein', 'A');
  assert.equal(tc.flag_tc, true);
  assert.ok((tc.answers?.length ?? 0) > 0 && (tc.answers?.length ?? 0) < 100, 'as many answers as fit');
  assert.ok(dnsPacket.encode(tc).length <= 512);
  const tcp = ask(s, 'big.service.skein', 'A', { transport: 'tcp' });
  assert.equal(tcp.flag_tc, false);
  assert.equal(tcp.answers?.length, DNS_DEFAULTS.answerSample, 'a sample of the 100 instances');
});

test('UDP answers never exceed 1,232 bytes whatever EDNS size is offered (512 below it), TC beyond', async () => {
  const s = await setup();
  for (let i = 1; i <= 100; i++) await s.add('big', `b${i}`, `10.0.2.${i}`);
  for (const type of ['A', 'SRV'] as const) {
    for (const edns of [undefined, 1, 511, 512, 1000, 1231, 1232, 1400, 1439, 4096, 65535]) {
      const { res, bytes } = askRaw(s, 'big.service.skein', type, { edns });
      const limit = edns !== undefined && edns >= 1232 ? 1232 : 512;
      assert.ok(bytes <= limit, `${type} with EDNS ${edns}: ${bytes} bytes > ${limit}`);
      assert.ok(bytes > limit - 100, `${type} with EDNS ${edns}: filled to ${bytes} of ${limit}`);
      assert.equal(res.flag_tc, true, `${type} with EDNS ${edns}`);
      assert.ok((res.answers?.length ?? 0) > 0, 'as many answers as fit');
    }
  }
});

test('variants collapse: one name asked with every EDNS size, DO bit and type makes a bounded number of entries', async () => {
  const s = await setup();
  for (let i = 1; i <= 200; i++) await s.add('web', `w${i}`, `10.0.${i >> 8}.${i & 255}`);
  for (let payload = 512; payload <= 4096; payload++) {
    for (const dnssecOk of [false, true]) ask(s, 'web.service.skein', 'A', { edns: payload, dnssecOk });
  }
  ask(s, 'web.service.skein', 'A');
  // No EDNS; EDNS below 1,232 with DO off and on; 1,232 and above with DO off and on.
  assert.equal(s.responder.stats().entries, 5);
  for (let type = 1; type <= 300; type++) {
    if (type === 41 || type === 251 || type === 252) continue; // OPT, IXFR, AXFR: errors, never cached
    ask(s, 'web.service.skein', `UNKNOWN_${type}` as RecordType, { edns: 1232 });
  }
  // Every type but A, AAAA, SRV, ANY, SOA and NS shares one class: five more at EDNS 1,232 + class 0.
  assert.equal(s.responder.stats().entries, 5 + 6);
  assert.equal(s.responder.stats().names, 1);
});

test('NXDOMAIN and REFUSED bodies are shared by every name: made-up names fill no cache', async () => {
  const s = await setup();
  for (let i = 0; i < 2000; i++) {
    assert.equal(rcodeOf(ask(s, `x${i}.service.skein`, 'A', { edns: 1232 })), 'NXDOMAIN');
    assert.equal(rcodeOf(ask(s, `x${i}.example.com`)), 'REFUSED');
  }
  assert.equal(s.responder.stats().entries, 0);
  assert.equal(s.responder.stats().names, 0);
  const nx = ask(s, 'NoPe.service.skein');
  assert.deepEqual(nx.questions, [{ name: 'NoPe.service.skein', type: 'A', class: 'IN' }]);
  assert.equal(nx.authorities?.[0]?.type, 'SOA');
});

test('the cache stays within its entry and byte bounds, dropping the names cached longest', async () => {
  const s = await setup({ maxCacheEntries: 50, maxCacheBytes: 40_000 });
  for (let i = 1; i <= 30; i++) await s.add(`svc${i}`, 'a', `10.0.3.${i}`);
  for (let i = 1; i <= 30; i++) for (let k = 1; k <= 20; k++) await s.add(`svc${i}`, `i${k}`, `10.${i}.0.${k}`);
  let most = 0;
  for (let round = 0; round < 3; round++) {
    for (let i = 1; i <= 30; i++) {
      for (const type of ['A', 'SRV', 'MX'] as const) {
        for (const opts of [{}, { edns: 1232 }, { edns: 1232, dnssecOk: true }, { transport: 'tcp' as const }]) {
          assert.equal(rcodeOf(ask(s, `svc${i}.service.skein`, type, opts)), 'NOERROR');
          const st = s.responder.stats();
          assert.ok(st.entries <= 50 && st.bytes <= 40_000, `over the bounds: ${JSON.stringify(st)}`);
          most = Math.max(most, st.bytes);
        }
      }
    }
  }
  assert.ok(most > 30_000, `the byte bound was what held (peak ${most})`);
  // 40 kB holds TCP SRV answers of 21 instances for a few names only: the newest are still there.
  const hits = s.responder.stats().hits;
  ask(s, 'svc30.service.skein', 'MX', { transport: 'tcp' });
  assert.equal(s.responder.stats().hits, hits + 1);
  ask(s, 'svc1.service.skein', 'SRV');
  assert.equal(s.responder.stats().hits, hits + 1, 'the oldest name was dropped');
  s.responder.clear();
  assert.deepEqual([s.responder.stats().entries, s.responder.stats().bytes], [0, 0]);
});

test('sampled answers are drawn again after the TTL; others stay until the service changes', async () => {
  const clock = new ManualClock();
  const s = await setup({ answerSample: 4, clock });
  for (let i = 1; i <= 50; i++) await s.add('big', `b${i}`, `10.0.4.${i}`);
  await s.add('small', 's1', '10.0.5.1');
  const sample = () => (ask(s, 'big.service.skein').answers ?? []).map((r) => String(data(r))).sort().join();
  const first = sample();
  ask(s, 'small.service.skein');
  const misses = s.responder.stats().misses;
  for (let i = 0; i < 20; i++) assert.equal(sample(), first, 'the same sample until the TTL passes');
  clock.advance(4_999);
  assert.equal(sample(), first);
  assert.equal(s.responder.stats().misses, misses);
  const drawn = new Set([first]);
  for (let i = 0; i < 10; i++) {
    clock.advance(5_000);
    drawn.add(sample());
  }
  assert.equal(s.responder.stats().misses, misses + 10);
  assert.ok(drawn.size > 5, `new samples after each TTL: ${drawn.size}`);
  ask(s, 'small.service.skein');
  assert.equal(s.responder.stats().misses, misses + 10, 'an answer that is not a sample does not expire');
});

test('truncated(): header and question with TC, no records, never longer than the query', async () => {
  const s = await setup();
  const msg = dnsPacket.encode({ type: 'query', id: 77, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'SRV', name: 'Web.service.skein' }], additionals: [EDNS(4096)] });
  const out = s.responder.truncated(msg) as Buffer;
  assert.ok(out.length <= msg.length);
  const res = dnsPacket.decode(out);
  assert.equal(res.id, 77);
  assert.equal(res.type, 'response');
  assert.equal(res.flag_tc, true);
  assert.equal(res.flag_rd, true);
  assert.equal(rcodeOf(res), 'NOERROR');
  assert.deepEqual(res.questions, [{ name: 'Web.service.skein', type: 'SRV', class: 'IN' }]);
  assert.deepEqual([res.answers?.length, res.authorities?.length, res.additionals?.length], [0, 0, 0]);
  assert.equal(s.responder.truncated(Buffer.alloc(11)), null);
});

test('answer order rotates across responses from the cache', async () => {
  const s = await setup();
  for (let i = 1; i <= 4; i++) await s.add('web', `w${i}`, `10.0.0.${i}`);
  const firsts = new Set<string>();
  for (let i = 0; i < 8; i++) {
    const res = ask(s, 'web.service.skein');
    assert.equal(res.answers?.length, 4);
    firsts.add(String(data(res.answers?.[0])));
  }
  assert.equal(firsts.size, 4);
});

test('the cache serves hits and forgets a service when it changes (setStatus, register, deregister)', async () => {
  const s = await setup();
  await s.add('web', 'w1', '10.0.0.1');
  await s.add('web', 'w2', '10.0.0.2');
  const addrs = (name = 'WEB.service.skein') => (ask(s, name).answers ?? []).map((r) => String(data(r))).sort();
  assert.deepEqual(addrs(), ['10.0.0.1', '10.0.0.2']);
  const hits = s.responder.cacheHits;
  assert.deepEqual(addrs('web.SERVICE.skein'), ['10.0.0.1', '10.0.0.2']);
  assert.equal(s.responder.cacheHits, hits + 1, 'a differently cased name hits the same entry');

  await s.registry.setStatus('web', 'w2', 'unhealthy', 'test');
  assert.deepEqual(addrs(), ['10.0.0.1']);
  await s.registry.setStatus('web', 'w2', 'healthy', 'test');
  assert.deepEqual(addrs(), ['10.0.0.1', '10.0.0.2']);
  await s.registry.deregister('web', 'w1');
  assert.deepEqual(addrs(), ['10.0.0.2']);
  assert.equal((ask(s, '_web._tcp.service.skein', 'SRV').answers ?? []).length, 1);
  await s.registry.deregister('web', 'w2');
  assert.equal(rcodeOf(ask(s, 'web.service.skein')), 'NXDOMAIN');
  assert.equal(rcodeOf(ask(s, '_web._tcp.service.skein', 'SRV')), 'NXDOMAIN');
  // A cached NXDOMAIN goes when the service appears.
  await s.add('web', 'w3', '10.0.0.3');
  assert.deepEqual(addrs(), ['10.0.0.3']);
  assert.equal((ask(s, '_web._tcp.service.skein', 'SRV').answers ?? []).length, 1);
});

test('the cache is bounded in entries, and names outside the zone are not cached', async () => {
  const s = await setup({ maxCacheEntries: 10 });
  for (let i = 0; i < 50; i++) ask(s, `0a0000${(i + 16).toString(16)}.addr.skein`);
  assert.equal(s.responder.stats().entries, 10);
  assert.equal(s.responder.stats().names, 10);
  s.responder.clear();
  for (let i = 0; i < 50; i++) ask(s, `n${i}.example.com`);
  assert.equal(s.responder.stats().entries, 0);
});

test('counts responses by transport and rcode', async () => {
  const s = await setup();
  ask(s, 'skein', 'SOA');
  ask(s, 'skein', 'SOA', { transport: 'tcp' });
  ask(s, 'nope.skein');
  ask(s, 'example.com');
  assert.equal(s.responder.counts.udp[0], 1);
  assert.equal(s.responder.counts.tcp[0], 1);
  assert.equal(s.responder.counts.udp[3], 1);
  assert.equal(s.responder.counts.udp[5], 1);
});


test('fuzz: random, truncated and mutated packets never throw; answers keep the id; valid queries still work', async () => {
  const s = await setup();
  for (let i = 1; i <= 20; i++) await s.add('web', `w${i}`, i % 2 === 0 ? `10.0.0.${i}` : `2001:db8::${i}`);
  const rand = seededRandom(20240611);
  const int = (n: number) => Math.floor(rand() * n);
  const seeds = [
    dnsPacket.encode({ type: 'query', id: 1, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'SRV', name: 'web.service.skein' }], additionals: [EDNS(1232)] }),
    dnsPacket.encode({ type: 'query', id: 2, questions: [{ type: 'A', name: '_web._tcp.service.skein' }] }),
    dnsPacket.encode({ type: 'query', id: 3, questions: [{ type: 'AAAA', name: '0a000002.addr.skein' }], additionals: [EDNS(512)] }),
    dnsPacket.encode({ type: 'query', id: 4, questions: [{ type: 'NS', name: 'skein' }], answers: [{ type: 'A', name: 'a.b', data: '1.1.1.1' }] }),
  ];
  let answered = 0;
  for (let i = 0; i < 10_000; i++) {
    let msg: Buffer;
    const kind = i % 4;
    const seed = seeds[int(seeds.length)] as Buffer;
    if (kind === 0) {
      msg = Buffer.from(Array.from({ length: int(80) }, () => int(256)));
    } else if (kind === 1) {
      msg = Buffer.from(seed.subarray(0, int(seed.length + 1)));
    } else {
      msg = Buffer.from(seed);
      for (let k = 1 + int(4); k > 0; k--) msg[int(msg.length)] = int(256);
      if (kind === 3) msg = Buffer.concat([msg, Buffer.from(Array.from({ length: int(20) }, () => int(256)))]);
    }
    for (const transport of ['udp', 'tcp'] as const) {
      let out: Buffer | null;
      try {
        out = s.responder.respond(msg, transport);
      } catch (e) {
        assert.fail(`respond threw on ${msg.toString('hex')} over ${transport}: ${(e as Error).stack}`);
      }
      const isQuery = msg.length >= 12 && ((msg[2] as number) & 0x80) === 0;
      assert.equal(out !== null, isQuery, `answered exactly the queries: ${msg.toString('hex')}`);
      if (out === null) continue;
      answered++;
      assert.equal(out.readUInt16BE(0), msg.readUInt16BE(0), 'same id');
      assert.ok(out.length <= (transport === 'udp' ? DNS_DEFAULTS.udpPayload : 65535));
      dnsPacket.decode(out); // every response is well-formed
    }
  }
  assert.ok(answered > 5_000, `only ${answered} of 20,000 tries were answered`);
  const res = ask(s, 'web.service.skein', 'SRV', { transport: 'tcp' });
  assert.equal(res.answers?.length, 20);
});
