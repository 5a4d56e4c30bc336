import { test } from 'node:test';
import type { Answer } from 'dns-packet';
import assert from 'node:assert/strict';
import { DNS_DEFAULTS } from '../../api/dns.js';
import { parseInstance } from '../../api/parse.js';
import { systemClock } from '../../core/clock.js';
import { Registry } from '../registry/registry.js';
import { MemoryStore } from '../store/store.js';
import { TYPE_CLASS_COUNT, Zone, addressHex, hexAddress, typeClass } from './zone.js';
import { QType, Rcode } from './wire.js';

async function zoneWith(instances: Array<{ service: string; id: string; address: string; port: number; weight?: number }>, nsAddress: string | null = '127.0.0.1', answerSample: number = DNS_DEFAULTS.answerSample) {
  const registry = await Registry.open({ clock: systemClock, store: new MemoryStore() });
  for (const i of instances) await registry.register(parseInstance(i));
  return { registry, zone: new Zone({ registry, domain: 'skein', ttlSeconds: 5, nsAddress, serial: 7, answerSample }) };
}

const data = (r: Answer | undefined): unknown => (r as { data?: unknown } | undefined)?.data;
const labels = (name: string) => (name === '' ? [] : name.split('.'));

test('addressHex and hexAddress: Consul-style hex labels for IPv4 and IPv6', () => {
  assert.equal(addressHex('127.0.0.1'), '7f000001');
  assert.equal(addressHex('2001:db8::1'), '20010db8000000000000000000000001');
  assert.equal(addressHex('::ffff:10.0.0.1'), '00000000000000000000ffff0a000001');
  assert.equal(hexAddress('7f000001'), '127.0.0.1');
  assert.equal(hexAddress('20010db8000000000000000000000001'), '2001:0db8:0000:0000:0000:0000:0000:0001');
  for (const bad of ['7f00001', '7f0000011', 'zz000001', '', '20010db800000000000000000000001']) assert.equal(hexAddress(bad), null, bad);
});

test('names outside the zone are REFUSED, not answered as authoritative', async () => {
  const { zone } = await zoneWith([]);
  for (const name of ['', 'com', 'example.com', 'web.service.skein.com', 'skeinx', 'web.service.other']) {
    const r = zone.resolve(labels(name), QType.A);
    assert.equal(r.rcode, Rcode.REFUSED, name);
    assert.equal(r.authoritative, false, name);
  }
});

test('apex: SOA and NS (with glue), other types NODATA with the SOA', async () => {
  const { zone } = await zoneWith([]);
  const soa = zone.resolve(['skein'], QType.SOA);
  assert.equal(soa.answers[0]?.type, 'SOA');
  assert.deepEqual(data(soa.answers[0]), { mname: 'ns.skein', rname: 'hostmaster.skein', serial: 7, refresh: 3600, retry: 600, expire: 86400, minimum: 5 });
  const ns = zone.resolve(['skein'], QType.NS);
  assert.deepEqual(ns.answers, [{ type: 'NS', name: 'skein', ttl: 5, data: 'ns.skein' }]);
  assert.deepEqual(ns.glue.get('ns.skein'), [{ type: 'A', name: 'ns.skein', ttl: 5, data: '127.0.0.1' }]);
  const a = zone.resolve(['skein'], QType.A);
  assert.equal(a.rcode, Rcode.NOERROR);
  assert.equal(a.answers.length, 0);
  assert.equal(a.authorities[0]?.type, 'SOA');
  assert.deepEqual(zone.resolve(labels('ns.skein'), QType.A).answers, [{ type: 'A', name: 'ns.skein', ttl: 5, data: '127.0.0.1' }]);
});

test('ns.<domain> has no address when the server listens on a wildcard', async () => {
  const { zone } = await zoneWith([], null);
  const r = zone.resolve(labels('ns.skein'), QType.A);
  assert.equal(r.rcode, Rcode.NOERROR);
  assert.equal(r.answers.length, 0);
});

test('empty non-terminals are NODATA, unknown names NXDOMAIN with the SOA', async () => {
  const { zone } = await zoneWith([{ service: 'web', id: 'w1', address: '10.0.0.1', port: 80 }]);
  for (const name of ['service.skein', 'addr.skein', '_tcp.service.skein']) {
    const r = zone.resolve(labels(name), QType.A);
    assert.equal(r.rcode, Rcode.NOERROR, name);
    assert.equal(r.answers.length, 0, name);
  }
  for (const name of ['nope.service.skein', 'x.web.service.skein', 'www.skein', '_nope._tcp.service.skein', 'web._tcp.service.skein', '_web._udp.service.skein']) {
    const r = zone.resolve(labels(name), QType.A);
    assert.equal(r.rcode, Rcode.NXDOMAIN, name);
    assert.equal(r.authoritative, true, name);
    assert.equal(r.authorities[0]?.type, 'SOA', name);
  }
});

test('A and AAAA: healthy instances only, one record per address', async () => {
  const { registry, zone } = await zoneWith([
    { service: 'web', id: 'w1', address: '10.0.0.1', port: 80 },
    { service: 'web', id: 'w2', address: '10.0.0.1', port: 81 },
    { service: 'web', id: 'w3', address: '10.0.0.2', port: 80 },
    { service: 'web', id: 'w6', address: '2001:db8::6', port: 80 },
  ]);
  await registry.setStatus('web', 'w3', 'unhealthy', 'test');
  const a = zone.resolve(labels('web.service.skein'), QType.A);
  assert.deepEqual(a.answers.map(data), ['10.0.0.1']);
  assert.equal(a.rotate, false, 'nothing to rotate');
  assert.deepEqual(zone.resolve(labels('web.service.skein'), QType.AAAA).answers.map(data), ['2001:db8::6']);
  const any = zone.resolve(labels('web.service.skein'), QType.ANY);
  assert.deepEqual(any.answers.map((r) => r.type).sort(), ['A', 'AAAA']);
  const mx = zone.resolve(labels('web.service.skein'), 15);
  assert.equal(mx.rcode, Rcode.NOERROR);
  assert.equal(mx.answers.length, 0);
  assert.equal(mx.authorities[0]?.type, 'SOA');
});

test('SRV: priority 1, instance weight and port, hex targets with their glue; both spellings', async () => {
  const { zone } = await zoneWith([
    { service: 'web', id: 'w1', address: '10.0.0.1', port: 8080, weight: 3 },
    { service: 'web', id: 'w2', address: '10.0.0.1', port: 8081, weight: 0 },
    { service: 'web', id: 'w6', address: '2001:db8::6', port: 9090 },
  ]);
  for (const name of ['web.service.skein', '_web._tcp.service.skein']) {
    const r = zone.resolve(labels(name), QType.SRV);
    assert.deepEqual(
      r.answers.map(data),
      [
        { priority: 1, weight: 3, port: 8080, target: '0a000001.addr.skein' },
        { priority: 1, weight: 0, port: 8081, target: '0a000001.addr.skein' },
        { priority: 1, weight: 1, port: 9090, target: '20010db8000000000000000000000006.addr.skein' },
      ],
      name,
    );
    assert.ok(r.answers.every((x) => x.name === name));
    assert.equal(r.rotate, true);
    assert.deepEqual(r.glue.get('0a000001.addr.skein'), [{ type: 'A', name: '0a000001.addr.skein', ttl: 5, data: '10.0.0.1' }]);
    assert.equal(r.glue.get('20010db8000000000000000000000006.addr.skein')?.[0]?.type, 'AAAA');
  }
  const aOnSrvName = zone.resolve(labels('_web._tcp.service.skein'), QType.A);
  assert.equal(aOnSrvName.rcode, Rcode.NOERROR);
  assert.equal(aOnSrvName.answers.length, 0);
});

test('a known service without healthy instances is NODATA, a removed one NXDOMAIN', async () => {
  const { registry, zone } = await zoneWith([{ service: 'web', id: 'w1', address: '10.0.0.1', port: 80 }]);
  await registry.setStatus('web', 'w1', 'unhealthy', 'test');
  const nodata = zone.resolve(labels('web.service.skein'), QType.SRV);
  assert.equal(nodata.rcode, Rcode.NOERROR);
  assert.equal(nodata.answers.length, 0);
  await registry.deregister('web', 'w1');
  assert.equal(zone.resolve(labels('web.service.skein'), QType.SRV).rcode, Rcode.NXDOMAIN);
});

test('addr names: A for 8 hex digits, AAAA for 32, NODATA for the other type', async () => {
  const { zone } = await zoneWith([]);
  assert.deepEqual(zone.resolve(labels('7f000001.addr.skein'), QType.A).answers, [{ type: 'A', name: '7f000001.addr.skein', ttl: 5, data: '127.0.0.1' }]);
  assert.equal(zone.resolve(labels('7f000001.addr.skein'), QType.AAAA).answers.length, 0);
  const v6 = zone.resolve(labels('20010db8000000000000000000000001.addr.skein'), QType.AAAA);
  assert.equal(v6.answers[0]?.type, 'AAAA');
  assert.equal(zone.resolve(labels('nothex.addr.skein'), QType.A).rcode, Rcode.NXDOMAIN);
});

test('a multi-label custom domain', async () => {
  const registry = await Registry.open({ clock: systemClock, store: new MemoryStore() });
  await registry.register(parseInstance({ service: 'web', id: 'w1', address: '10.0.0.1', port: 80 }));
  const zone = new Zone({ registry, domain: 'mesh.internal', ttlSeconds: 30, nsAddress: null, serial: 1, answerSample: 64 });
  const r = zone.resolve(labels('web.service.mesh.internal'), QType.A);
  assert.deepEqual(r.answers, [{ type: 'A', name: 'web.service.mesh.internal', ttl: 30, data: '10.0.0.1' }]);
  assert.equal(zone.resolve(labels('web.service.skein'), QType.A).rcode, Rcode.REFUSED);
  assert.equal(zone.resolve(labels('internal'), QType.SOA).rcode, Rcode.REFUSED);
});

test('answers come from a bounded random sample: healthy only, per family, distinct addresses, each instance drawn over many misses', async () => {
  const instances = [];
  for (let i = 0; i < 40; i++) instances.push({ service: 'big', id: `v4-${i}`, address: `10.0.0.${i}`, port: 80 });
  for (let i = 0; i < 40; i++) instances.push({ service: 'big', id: `dup-${i}`, address: `10.0.0.${i}`, port: 81 });
  for (let i = 0; i < 3; i++) instances.push({ service: 'big', id: `v6-${i}`, address: `2001:db8::${i + 1}`, port: 80 });
  const { registry, zone } = await zoneWith(instances, null, 8);
  await registry.setStatus('big', 'v4-0', 'unhealthy', 'test');
  await registry.setStatus('big', 'dup-0', 'unhealthy', 'test');
  const seen = new Set<unknown>();
  for (let round = 0; round < 200; round++) {
    const a = zone.resolve(labels('big.service.skein'), QType.A);
    assert.equal(a.answers.length, 8);
    assert.equal(a.sampled, true);
    assert.equal(new Set(a.answers.map(data)).size, 8, 'distinct addresses');
    for (const r of a.answers) seen.add(data(r));
    const srv = zone.resolve(labels('big.service.skein'), QType.SRV);
    assert.equal(srv.answers.length, 8);
    assert.ok(srv.glue.size <= 8);
  }
  assert.equal(seen.size, 39, 'every healthy IPv4 address drawn over 200 misses, never the unhealthy one');
  assert.ok(!seen.has('10.0.0.0'));
  // Fewer than the sample: all of them, in id order, not marked sampled.
  const aaaa = zone.resolve(labels('big.service.skein'), QType.AAAA);
  assert.deepEqual(aaaa.answers.map(data), ['2001:db8::1', '2001:db8::2', '2001:db8::3']);
  assert.equal(aaaa.sampled, false);
  assert.equal(zone.resolve(labels('big.service.skein'), QType.ANY).answers.length, 8);
});

test('typeClass: the types resolve tells apart get classes of their own, every other type class 0', () => {
  const known = [QType.A, QType.AAAA, QType.SRV, QType.ANY, QType.SOA, QType.NS].map(typeClass);
  assert.equal(new Set(known).size, TYPE_CLASS_COUNT - 1);
  assert.ok(known.every((c) => c > 0 && c < TYPE_CLASS_COUNT));
  for (const other of [15, 16, 99, 65535]) assert.equal(typeClass(other), 0);
});
