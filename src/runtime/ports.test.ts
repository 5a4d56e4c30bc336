import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { assignPort, leasedPorts } from './ports.js';

test('assignPort leases distinct free ports until they are released', async () => {
  const leases = await Promise.all(Array.from({ length: 20 }, () => assignPort('127.0.0.1')));
  const ports = leases.map((l) => l.port);
  assert.equal(new Set(ports).size, ports.length, 'no port handed out twice');
  for (const p of ports) assert.ok(leasedPorts().includes(p));
  // the port is free: a server can bind it
  const srv = createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(ports[0], '127.0.0.1', () => resolve());
  });
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  for (const l of leases) {
    l.release();
    l.release(); // idempotent
  }
  for (const p of ports) assert.ok(!leasedPorts().includes(p));
});
