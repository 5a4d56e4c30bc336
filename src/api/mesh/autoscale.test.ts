import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SkeinError } from '../../core/errors.js';
import { parseMeshFile } from './parse.js';
import { AUTOSCALE_DEFAULTS } from './autoscale.js';

const file = (autoscale: string, extra = '') => `kind: Mesh\nname: m\nservices:\n  web:\n    command: node\n${extra}    autoscale: ${autoscale}\n`;

function refused(text: string): { field: string; message: string } {
  try {
    parseMeshFile(text, 'mesh.yaml');
  } catch (e) {
    assert.ok(e instanceof SkeinError);
    assert.equal(e.code, 'SKEIN_E_VALIDATION');
    return { field: e.field as string, message: e.message };
  }
  return assert.fail('accepted');
}

test('autoscale: every default filled in, replicas start at min', () => {
  const m = parseMeshFile(file('{ min: 2, max: 6, target: { rps: 100 } }'), 'mesh.yaml');
  const web = m.services[0]!;
  assert.equal(web.replicas, 2);
  assert.deepEqual(web.autoscale, {
    min: 2,
    max: 6,
    metric: 'rps',
    target: 100,
    tolerance: 0.1,
    intervalMs: AUTOSCALE_DEFAULTS.intervalMs,
    windowMs: 15_000,
    scaleUp: { pods: 4, percent: 100, periodMs: 15_000, stabilizationMs: 0 },
    scaleDown: { stabilizationMs: 300_000 },
    coolDownMs: 300_000,
  });
  const p99 = parseMeshFile(file('{ max: 3, target: { p99: 250ms }, interval: 1s, scaleDown: { stabilization: 5s } }'), 'mesh.yaml').services[0]!;
  assert.equal(p99.replicas, 1);
  assert.deepEqual([p99.autoscale?.metric, p99.autoscale?.target, p99.autoscale?.intervalMs, p99.autoscale?.scaleDown.stabilizationMs], ['p99', 250, 1000, 5000]);
  assert.equal(parseMeshFile(file('{ max: 3, target: { rps: 1 } }').replace('    autoscale: { max: 3, target: { rps: 1 } }\n', ''), 'mesh.yaml').services[0]!.autoscale, undefined);
});

test('autoscale: bad input refused with the field named', () => {
  const rows: Array<[string, string, string, RegExp]> = [
    ['target 0', file('{ max: 3, target: { rps: 0 } }'), 'services.web.autoscale.target.rps', /must be more than 0/],
    ['min > max', file('{ min: 4, max: 3, target: { rps: 10 } }'), 'services.web.autoscale.min', /must be at most autoscale.max \(3\), not 4/],
    ['max > 100', file('{ max: 101, target: { rps: 10 } }'), 'services.web.autoscale.max', /from 1 to 100, not 101/],
    ['an unknown metric', file('{ max: 3, target: { cpu: 50 } }'), 'services.web.autoscale.target.cpu', /autoscale.target.cpu is not a known field/],
    ['no metric', file('{ max: 3, target: {} }'), 'services.web.autoscale.target', /must name one metric: rps, inFlight, p99/],
    ['two metrics', file('{ max: 3, target: { rps: 10, inFlight: 2 } }'), 'services.web.autoscale.target', /names rps and inFlight/],
    ['no max', file('{ target: { rps: 10 } }'), 'services.web.autoscale.max', /autoscale.max is required/],
    ['replicas outside min..max', file('{ min: 2, max: 3, target: { rps: 10 } }', '    replicas: 5\n'), 'services.web.replicas', /within autoscale.min..autoscale.max \(2..3\)/],
    ['a 0 p99', file('{ max: 3, target: { p99: 0s } }'), 'services.web.autoscale.target.p99', /at least 1ms/],
    ['a tolerance over 50%', file('{ max: 3, target: { rps: 1 }, tolerance: 60 }'), 'services.web.autoscale.tolerance', /0 to 50/],
    ['a cool-down without scale to zero', file('{ min: 1, max: 3, target: { rps: 1 }, coolDown: 30s }'), 'services.web.autoscale.coolDown', /applies to scale to zero only \(autoscale.min 0\), and min is 1/],
    ['a cool-down beyond the signals', file('{ min: 0, max: 3, target: { rps: 1 }, coolDown: 10m }'), 'services.web.autoscale.coolDown', /at most 5m/],
    ['a negative min', file('{ min: -1, max: 3, target: { rps: 1 } }'), 'services.web.autoscale.min', /from 0 to 100, not -1/],
    ['an interval under 100ms', file('{ max: 3, target: { rps: 1 }, interval: 10ms }'), 'services.web.autoscale.interval', /at least 100ms/],
  ];
  for (const [what, text, field, message] of rows) {
    const r = refused(text);
    assert.equal(r.field, field, `${what}: ${r.message}`);
    assert.match(r.message, message, what);
    assert.match(r.message, /^mesh\.yaml: service "web": /, what);
  }
});

test('autoscale: min 0 scales to zero after the cool-down; the service still starts with one replica unless replicas says 0', () => {
  const web = parseMeshFile(file('{ min: 0, max: 3, target: { rps: 10 }, coolDown: 20s }'), 'mesh.yaml').services[0]!;
  assert.equal(web.replicas, 1);
  assert.equal(web.autoscale?.min, 0);
  assert.equal(web.autoscale?.coolDownMs, 20_000);
  const asleep = parseMeshFile(file('{ min: 0, max: 3, target: { rps: 10 } }', '    replicas: 0\n'), 'mesh.yaml').services[0]!;
  assert.equal(asleep.replicas, 0);
  assert.equal(asleep.autoscale?.coolDownMs, AUTOSCALE_DEFAULTS.coolDownMs);
});
