/**
 * One worker thread of `skein proxy --workers N` (src/proxy/workers.ts): a full Proxy with every
 * workload, its listeners bound with SO_REUSEPORT on the same ports as the other workers' (the
 * kernel spreads new connections among them), its own watch stream to the control plane, access
 * log, audit log and tracer. It answers the main thread's questions (the admin server's: metrics,
 * /stats, /ready, /picks, /debug/endpoints, taps; skein up's runtime's: workloads added and
 * removed, requests in flight, an endpoint gone) over its MessagePort (protocol.ts).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { systemClock } from '../../core/clock.js';
import { ControlReplicas } from '../../discovery/control-replicas.js';
import { MainThreadCa, type CaAnswer, type CaQuestion } from './ca.js';
import { failedReply, Pending, type MainMessage, type WorkerAnswer, type WorkerFacts, type WorkerInit, type WorkerMessage, type WorkerQuestion } from './protocol.js';

const init = workerData as WorkerInit;
if (parentPort === null) throw new Error('src/proxy/workers/worker.ts runs as a worker thread (src/proxy/workers.ts starts it)');
const port = parentPort;
const post = (m: WorkerMessage) => port.postMessage(m);

async function main(): Promise<void> {
  const [{ default: pino }, { Proxy }, { proxyView }, { openAccessLog }, { openAuditLog }, { startTracer }] = await Promise.all([
    import('pino'),
    import('../proxy.js'),
    import('../admin.js'),
    import('../access-log.js'),
    import('../../telemetry/audit-log.js'),
    import('./tracer.js'),
  ]);
  const logger = pino({ level: init.logLevel, base: { component: 'proxy', worker: init.index } });
  const control = init.control === null ? null : new ControlReplicas(init.control, systemClock, { token: init.token });
  const accessLog = init.accessLog === null ? null : openAccessLog(init.accessLog);
  const audit = init.auditLog === null ? null : openAuditLog(init.auditLog);
  // mTLS: the certificates through the main thread, which holds the join token (ca.ts).
  const caPending = new Pending<CaAnswer>();
  const askCa = (question: CaQuestion) => {
    const { id, answer } = caPending.add();
    post({ type: 'ca', id, question });
    return answer;
  };
  // mTLS: the main thread's session-ticket keys, from the start and at every rotation (ca.ts).
  let ticketKeys = init.ticketKeys === null ? undefined : Buffer.from(init.ticketKeys);
  let built: { identities: { setTicketKeys(keys: Buffer): void } | null } | null = null;
  port.on('message', (m: MainMessage) => {
    if (m.type === 'ca-reply') caPending.settle(m.id, m);
    else if (m.type === 'ticket-keys') {
      ticketKeys = Buffer.from(m.keys);
      built?.identities?.setTicketKeys(ticketKeys);
    }
  });
  const mtls = init.mtls === null ? null : { ...init.mtls, source: new MainThreadCa(askCa) };
  const tracer = init.trace === null ? null : await startTracer(init.trace.url, init.trace.sampleRatio, init.id, logger);
  const proxy = new Proxy({
    accessLog,
    audit,
    id: init.id,
    tracer,
    requestMetrics: init.requestMetrics,
    controlUrl: init.control,
    control,
    domain: init.domain,
    logger,
    authzDefault: init.authzDefault,
    limits: init.limits,
    mtls,
    ...(ticketKeys === undefined ? {} : { ticketKeys }),
    reusePort: true,
    // The main thread asks the control plane to wake the service (each worker's engine paces its own wakes: up to N per WAKE_AGAIN_MS).
    onColdStart: (service) => post({ type: 'cold-start', service }),
  });
  built = proxy;
  // The identities are made once the mTLS modules are loaded: keys rotated meanwhile reach them then.
  void proxy.tlsReady().then((ids) => {
    if (ids !== null && ticketKeys !== undefined) ids.setTicketKeys(ticketKeys);
  }, () => undefined);
  try {
    for (const s of init.workloads) await proxy.addWorkload(s);
  } catch (e) {
    await proxy.stop(0);
    post({ type: 'failed', ...failedReply(e) });
    port.close();
    return;
  }
  proxy.start();
  const view = proxyView(proxy);
  const taps = new Map<number, () => void>();

  const answer = async (q: WorkerQuestion): Promise<WorkerAnswer> => {
    switch (q.what) {
      case 'readiness':
        return view.readiness();
      case 'metrics':
        return proxy.metrics.registry.getMetricsAsJSON();
      case 'stats':
        return view.stats(q.since);
      case 'debug':
        return view.debugEndpoints();
      case 'picks':
        return view.picks(q.service, q.key);
      case 'facts': {
        let requests = 0;
        for (const s of proxy.metrics.snapshot(Number.MAX_SAFE_INTEGER).series) requests += s.requests;
        const facts: WorkerFacts = { connections: proxy.connections(), requests };
        return facts;
      }
      case 'add':
        return proxy.addWorkload(q.spec);
      case 'remove':
        await proxy.removeWorkload(q.name, q.graceMs);
        return null;
      case 'in-flight':
        return proxy.inFlight(q.service);
      case 'gone':
        return proxy.whenEndpointGone(q.service, q.key, q.timeoutMs);
      case 'stop':
        for (const off of taps.values()) off();
        taps.clear();
        await proxy.stop(q.graceMs);
        await tracer?.shutdown();
        await accessLog?.close();
        await audit?.close();
        return null;
    }
  };

  port.on('message', (m: MainMessage) => {
    if (m.type === 'ca-reply' || m.type === 'ticket-keys') return;
    if (m.type === 'tap') {
      taps.set(m.tap, view.tap(m.filter, (record) => post({ type: 'tap-record', tap: m.tap, record })));
      return;
    }
    if (m.type === 'untap') {
      taps.get(m.tap)?.();
      taps.delete(m.tap);
      return;
    }
    answer(m).then(
      (value) => {
        post({ type: 'reply', id: m.id, ok: true, value });
        if (m.what === 'stop') port.close();
      },
      (e: unknown) => post({ type: 'reply', id: m.id, ...failedReply(e) }),
    );
  });
  post({ type: 'ready', workloads: proxy.workloadInfo() });
}

main().catch((e: unknown) => {
  post({ type: 'failed', ...failedReply(e) });
  port.close();
});
