import { test } from 'node:test';
import assert from 'node:assert/strict';
import dnsPacket from 'dns-packet';
import { keyLabels, labelsKey, readQuestion, readSimpleOpt, spliceResponse } from './wire.js';

function query(name: string, type: dnsPacket.RecordType = 'A', extra: Partial<dnsPacket.Packet> = {}): Buffer {
  return dnsPacket.encode({ type: 'query', id: 0x1234, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }], ...extra });
}

test('readQuestion: lower-cased wire key, type, class and end of a mixed-case name', () => {
  const msg = query('WeB.Service.SKEIN', 'SRV');
  const q = readQuestion(msg);
  assert.ok(q !== null);
  assert.equal(q.key, labelsKey(['web', 'service', 'skein']));
  assert.deepEqual(keyLabels(q.key), ['web', 'service', 'skein']);
  assert.equal(q.ascii, true);
  assert.equal(q.qtype, 33);
  assert.equal(q.qclass, 1);
  assert.equal(q.end, msg.length);
});

test('readQuestion: the root name and a label holding a dot stay unambiguous', () => {
  const root = readQuestion(query('.', 'NS'));
  assert.ok(root !== null);
  assert.deepEqual(keyLabels(root.key), []);
  // One label "a.b" then "skein": built by hand, as dns-packet would split the dot.
  const name = Buffer.from([3, 0x61, 0x2e, 0x62, 5, ...Buffer.from('skein'), 0]);
  const msg = Buffer.concat([Buffer.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]), name, Buffer.from([0, 1, 0, 1])]);
  const q = readQuestion(msg);
  assert.ok(q !== null);
  assert.deepEqual(keyLabels(q.key), ['a.b', 'skein']);
});

test('readQuestion: non-ASCII bytes are flagged and only ASCII letters are lower-cased', () => {
  const name = Buffer.from([2, 0xc9, 0x41, 5, ...Buffer.from('skein'), 0]);
  const msg = Buffer.concat([Buffer.alloc(12), name, Buffer.from([0, 1, 0, 1])]);
  const q = readQuestion(msg);
  assert.ok(q !== null);
  assert.equal(q.ascii, false);
  assert.deepEqual(keyLabels(q.key), ['\u00c9a', 'skein']);
});

test('readQuestion: malformed questions give null', () => {
  const ok = query('web.service.skein');
  assert.equal(readQuestion(ok.subarray(0, ok.length - 1)), null, 'type/class cut short');
  assert.equal(readQuestion(ok.subarray(0, 16)), null, 'name cut short');
  assert.equal(readQuestion(Buffer.alloc(12)), null, 'no question at all');
  const pointer = Buffer.concat([Buffer.alloc(12), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1])]);
  assert.equal(readQuestion(pointer), null, 'compression pointer');
  const longLabel = Buffer.concat([Buffer.alloc(12), Buffer.from([64]), Buffer.alloc(64, 0x61), Buffer.from([0, 0, 1, 0, 1])]);
  assert.equal(readQuestion(longLabel), null, 'label over 63 bytes');
  const labels = Array.from({ length: 5 }, () => Buffer.concat([Buffer.from([60]), Buffer.alloc(60, 0x61)]));
  const longName = Buffer.concat([Buffer.alloc(12), ...labels, Buffer.from([0, 0, 1, 0, 1])]);
  assert.equal(readQuestion(longName), null, 'name over 255 bytes');
});

test('readSimpleOpt: payload size, version and DO bit of a plain OPT record', () => {
  const msg = query('web.service.skein', 'A', {
    additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232, extendedRcode: 0, ednsVersion: 0, flags: dnsPacket.DNSSEC_OK, flag_do: true, options: [] }],
  });
  const q = readQuestion(msg);
  assert.ok(q !== null);
  assert.deepEqual(readSimpleOpt(msg, q.end), { payload: 1232, version: 0, dnssecOk: true });
  assert.equal(readSimpleOpt(msg.subarray(0, msg.length - 1), q.end), null, 'cut short');
  assert.equal(readSimpleOpt(query('web.service.skein'), q.end), null, 'absent');
});

test('spliceResponse: id, RD and CD, and the question bytes come from the query', () => {
  const msg = query('WEB.service.skein', 'A', { flags: dnsPacket.RECURSION_DESIRED | dnsPacket.CHECKING_DISABLED });
  const q = readQuestion(msg);
  assert.ok(q !== null);
  const body = dnsPacket.encode({ type: 'response', flags: dnsPacket.AUTHORITATIVE_ANSWER, answers: [{ type: 'A', name: 'web.service.skein', data: '10.0.0.1' }] });
  const out = dnsPacket.decode(spliceResponse(body, msg, q.end));
  assert.equal(out.id, 0x1234);
  assert.equal(out.flag_rd, true);
  assert.equal(out.flag_cd, true);
  assert.equal(out.flag_aa, true);
  assert.deepEqual(out.questions, [{ name: 'WEB.service.skein', type: 'A', class: 'IN' }]);
  assert.equal((out.answers?.[0] as { data?: unknown } | undefined)?.data, '10.0.0.1');
});
