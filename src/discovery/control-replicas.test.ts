import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.js';
import { SkeinError } from '../core/errors.js';
import { ControlReplicas } from './control-replicas.js';

const A = 'http://10.0.0.1:7400';
const B = 'http://10.0.0.2:7400';
const C = 'http://10.0.0.3:7400';
const refused = (url: string) => Object.assign(new Error(`connect ECONNREFUSED ${url}`), { code: 'ECONNREFUSED' });

describe('ControlReplicas: the failover choice', () => {
  test('the first URL is current; a failure of the current one moves to the next, round robin; a stale failure moves nothing', () => {
    const clock = new ManualClock(0);
    const r = new ControlReplicas([A, `${B}/`, C], clock);
    const switches: string[] = [];
    r.on('switch', (from, to, reason) => switches.push(`${from} -> ${to}: ${reason}`));
    assert.deepEqual(r.urls, [A, B, C], 'trailing slashes dropped');
    assert.equal(r.current, A);
    assert.deepEqual(r.order(), [A, B, C]);
    assert.equal(r.failed(A, 'ECONNREFUSED'), B);
    // Two callers saw A fail: the second report moves nothing (B stays).
    assert.equal(r.failed(A, 'ECONNRESET'), B);
    assert.deepEqual(r.order(), [B, C, A]);
    assert.equal(r.failed(B, 'x'), C);
    assert.equal(r.failed(C, 'y'), A, 'round robin');
    assert.deepEqual(switches, [`${A} -> ${B}: ECONNREFUSED`, `${B} -> ${C}: x`, `${C} -> ${A}: y`]);
    clock.advance(5000);
    r.ok(A);
    const rep = r.report();
    assert.deepEqual(rep.map((x) => [x.url, x.inUse, x.failures]), [[A, true, 0], [B, false, 1], [C, false, 1]]);
    assert.equal(rep[0]?.lastOk, new Date(5000).toISOString());
    assert.equal(rep[0]?.lastError, 'ECONNRESET', 'the last error stays after a success');
    assert.equal(rep[1]?.lastErrorAt, new Date(0).toISOString());
  });

  test('one replica: a failure keeps it (nothing else to try)', () => {
    const r = new ControlReplicas([A], new ManualClock(0));
    assert.equal(r.failed(A, 'down'), A);
    assert.equal(r.report()[0]?.failures, 1);
  });

  test('call(): the current replica first; a rejection or an unavailable answer moves on; the first good answer wins and stays current', async () => {
    const r = new ControlReplicas([A, B, C], new ManualClock(0));
    const asked: string[] = [];
    const answer = await r.call(
      async (url) => {
        asked.push(url);
        if (url === A) throw refused(url);
        return { status: url === B ? 503 : 200, url };
      },
      { unavailable: (x) => (x.status === 503 ? 'HTTP 503' : null) },
    );
    assert.deepEqual(asked, [A, B, C]);
    assert.deepEqual(answer, { status: 200, url: C });
    assert.equal(r.current, C);
    assert.deepEqual(r.report().map((x) => x.lastError), ['ECONNREFUSED', 'HTTP 503', null]);
    // The next call starts on C.
    asked.length = 0;
    await r.call(async (url) => asked.push(url));
    assert.deepEqual(asked, [C]);
  });

  test('call(): every replica failed: the last unavailable answer if any, else an error naming each', async () => {
    const r = new ControlReplicas([A, B], new ManualClock(0));
    const got = await r.call(async (url) => ({ status: url === A ? 503 : 504 }), { unavailable: (x) => `HTTP ${x.status}` });
    assert.deepEqual(got, { status: 504 });
    await assert.rejects(
      r.call(async (url) => {
        throw refused(url);
      }),
      (e: Error) => e.message === `no control-plane replica answered (${A}: ECONNREFUSED; ${B}: ECONNREFUSED)`,
    );
    // One replica: its own error, as it came.
    const one = new ControlReplicas([A], new ManualClock(0));
    await assert.rejects(one.call(async () => Promise.reject(refused(A))), /connect ECONNREFUSED/);
  });

  test('call(): an aborted signal stops the tries and blames no replica', async () => {
    const r = new ControlReplicas([A, B], new ManualClock(0));
    const ac = new AbortController();
    const asked: string[] = [];
    await assert.rejects(
      r.call(
        async (url) => {
          asked.push(url);
          ac.abort();
          throw new Error('aborted');
        },
        { signal: ac.signal },
      ),
      /aborted/,
    );
    assert.deepEqual(asked, [A]);
    assert.equal(r.current, A);
    assert.equal(r.report()[0]?.failures, 0);
  });

  test('bad input: no URL, not http(s), a URL twice', () => {
    const clock = new ManualClock(0);
    const cases: Array<[string[], RegExp]> = [
      [[], /give at least one control-plane URL/],
      [['ftp://h'], /"ftp:\/\/h" must be http: or https:, not ftp:/],
      [['not a url'], /"not a url" is not a URL/],
      [[A, `${A}/`], /http:\/\/10\.0\.0\.1:7400 is given twice/],
    ];
    for (const [urls, message] of cases) {
      assert.throws(() => new ControlReplicas(urls, clock), (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_VALIDATION' && message.test(e.message), JSON.stringify(urls));
    }
  });
});
