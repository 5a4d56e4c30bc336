/**
 * `skein rollout apply|status|history|undo|pause|resume`: revisions and rolling updates of a mesh
 * started by `skein up`, through the runtime's routes on its control plane (docs/deployments.md).
 */
import { Command } from 'commander';
import type { CanaryStatus } from '../runtime/canary.js';
import { SkeinError } from '../core/errors.js';
import { call, controlOption, outputOption, print, printJson, readText, table, withToken, type OutputFormat } from './common.js';
import { durationFlag, intFlag } from './flags.js';

type Opts = { control: string; output: OutputFormat };

interface RolloutView {
  service: string;
  revision: number;
  paused: boolean;
  stableRevision: number | null;
  rollout: null | {
    strategy: string;
    revision: number;
    phase: string;
    cause: string;
    rollback: boolean;
    deadlineAt: string | null;
    maxSurge: number;
    maxUnavailable: number;
    replicas: { desired: number; updated: number; updatedAvailable: number; old: number; available: number; leaving: number };
    message: string;
    canary?: CanaryStatus;
  };
  instances: Array<{ id: string; revision: number; version: string; state: string; pid: number | null }>;
}

/** A call to the runtime's routes; a control plane without a mesh gets a sentence saying so. */
async function mesh<T>(o: Opts, method: string, path: string, body?: unknown): Promise<T> {
  try {
    return await call<T>(o.control, method, path, body);
  } catch (e) {
    if (e instanceof SkeinError && e.code === 'SKEIN_E_NOT_FOUND' && /^no route /.test(e.message)) {
      throw new SkeinError('SKEIN_E_NOT_FOUND', `the control plane at ${o.control} runs no mesh (skein rollout works with a mesh started by skein up)`);
    }
    throw e;
  }
}

const svcPath = (service: string, rest: string) => `/v1/mesh/services/${encodeURIComponent(service)}/${rest}`;

function printStatus(s: RolloutView): void {
  const r = s.rollout;
  const head = r === null ? `${s.service}: revision ${s.revision}, no rollout since skein up` : `${s.service}: revision ${r.revision} ${r.phase}${r.rollback ? ' (a rollback)' : ''}: ${r.message}`;
  print(`${head}${s.paused ? ' [paused]' : ''}\n`);
  if (r !== null) {
    const x = r.replicas;
    print(`  replicas ${x.desired}: ${x.updated} updated (${x.updatedAvailable} available), ${x.old} old, ${x.available} available, ${x.leaving} draining; maxSurge ${r.maxSurge}, maxUnavailable ${r.maxUnavailable}${r.deadlineAt === null ? '' : `; progress deadline ${r.deadlineAt}`}\n`);
    print(`  cause: ${r.cause}\n`);
    const c = r.canary;
    if (c !== undefined) {
      print(`  canary: version ${c.version} beside ${c.stable}, ${c.phase}, weight ${c.weight}%, failed checks ${c.failedChecks} of ${c.threshold}${c.lastDecision === null ? '' : `; last: ${c.lastDecision.action} (${c.lastDecision.reason})`}\n`);
      for (const st of c.steps.slice(-5)) print(`    step ${st.n} at ${st.weight}%: ${st.checks.map((k) => `${k.ok ? 'ok' : 'FAILED'} ${k.text}`).join('; ') || 'no checks'} -> ${st.decision.action}\n`);
    }
  }
  print(table(['INSTANCE', 'REVISION', 'VERSION', 'STATE', 'PID'], s.instances.map((i) => [i.id, i.revision, i.version, i.state, i.pid ?? ''])));
}

const FINAL = new Set(['complete', 'deadline-exceeded', 'superseded']);

/**
 * Sends a changed mesh file to the `skein up` it runs under (PUT /v1/mesh): the services whose
 * revision changed roll out, those whose replicas changed scale. `skein rollout apply -f` and
 * `skein apply -f` of a `kind: Mesh` file.
 */
export async function applyMeshFile(o: Opts, text: string, file: string): Promise<void> {
  const [{ parseMeshFile }, { yamlDocuments }] = await Promise.all([import('../api/mesh.js'), import('../api/yaml.js')]);
  // Checked here first, so that errors name the file; the runtime checks again.
  parseMeshFile(text, file);
  const raw = yamlDocuments(text, file)[0];
  const res = await mesh<{ services: Array<{ service: string; revisionFields: string[]; revision: number; replicas: { from: number; to: number } | null }> }>(o, 'PUT', '/v1/mesh', raw);
  if (o.output === 'json') return printJson(res);
  const rows = res.services.map((s) => [
    s.service,
    s.revision,
    s.revisionFields.length > 0 ? `rolling out (${s.revisionFields.join(', ')} changed)` : s.replicas !== null ? `scaled ${s.replicas.from} -> ${s.replicas.to}` : 'unchanged',
  ]);
  print(table(['SERVICE', 'REVISION', 'CHANGE'], rows));
}

export function rolloutCommand(): Command {
  const cmd = new Command('rollout').description('revisions and rolling updates of a mesh started by skein up (docs/deployments.md)');
  const sub = (name: string, description: string) => withToken(cmd.command(name).description(description)).addOption(controlOption()).addOption(outputOption());

  sub('apply', 'apply a changed mesh file: roll out the services whose revision changed, scale those whose replicas did')
    .requiredOption('-f, --file <file>', 'the mesh file (the one skein up runs, changed)')
    .action(async (o: Opts & { file: string }) => applyMeshFile(o, await readText(o.file), o.file));

  sub('status', 'the rollout of a service: its phase, replicas per revision, why it stopped')
    .argument('<service>', 'service name')
    .option('-w, --wait', 'wait until the rollout completes (exit 1 if it is rolled back or stalls)')
    .option('--timeout <duration>', 'how long --wait waits', durationFlag('--timeout'), 15 * 60_000)
    .action(async (service: string, o: Opts & { wait?: boolean; timeout: number }) => {
      const deadline = Date.now() + o.timeout;
      let s = await mesh<RolloutView>(o, 'GET', svcPath(service, 'rollout'));
      while (o.wait === true && s.rollout !== null && !FINAL.has(s.rollout.phase)) {
        if (Date.now() > deadline) throw new SkeinError('SKEIN_E_INTERNAL', `${service}: the rollout of revision ${s.rollout.revision} is still ${s.rollout.phase} after ${o.timeout} ms`);
        await new Promise((r) => setTimeout(r, 200));
        s = await mesh<RolloutView>(o, 'GET', svcPath(service, 'rollout'));
      }
      if (o.output === 'json') printJson(s);
      else printStatus(s);
      if (o.wait === true && s.rollout !== null && s.rollout.phase !== 'complete') {
        throw new SkeinError('SKEIN_E_INTERNAL', `${service}: the rollout of revision ${s.rollout.revision} ended ${s.rollout.phase}: ${s.rollout.message}`);
      }
    });

  sub('history', 'the revisions of a service (the last 10, kept in memory by skein up)')
    .argument('<service>', 'service name')
    .action(async (service: string, o: Opts) => {
      const h = await mesh<{ revisions: Array<{ number: number; hash: string; time: string; cause: string; version: string; current: boolean; replicas: number }> }>(o, 'GET', svcPath(service, 'revisions'));
      if (o.output === 'json') return printJson(h);
      print(table(['REVISION', 'HASH', 'VERSION', 'REPLICAS', 'TIME', 'CAUSE'], h.revisions.map((r) => [`${r.number}${r.current ? '*' : ''}`, r.hash, r.version, r.replicas, r.time, r.cause])));
    });

  sub('undo', 'roll a service back to the revision before its latest, or to --to-revision N')
    .argument('<service>', 'service name')
    .option('--to-revision <n>', 'the revision to go back to (skein rollout history lists them)', intFlag('--to-revision', 1, Number.MAX_SAFE_INTEGER))
    .action(async (service: string, o: Opts & { toRevision?: number }) => {
      const s = await mesh<RolloutView & { cause: string }>(o, 'POST', svcPath(service, 'rollout/undo'), o.toRevision === undefined ? {} : { toRevision: o.toRevision });
      if (o.output === 'json') return printJson(s);
      print(`${service}: rolling out revision ${s.revision} (${s.cause})\n`);
    });

  for (const op of ['pause', 'resume'] as const) {
    sub(op, op === 'pause' ? 'pause the rollouts of a service (a rollout in progress stops where it is; a new one waits)' : 'resume the rollouts of a service')
      .argument('<service>', 'service name')
      .action(async (service: string, o: Opts) => {
        const s = await mesh<RolloutView>(o, 'POST', svcPath(service, `rollout/${op}`), {});
        if (o.output === 'json') return printJson(s);
        print(`${service}: rollouts ${op === 'pause' ? 'paused' : 'resumed'} (revision ${s.revision}${s.rollout === null ? '' : `, rollout ${s.rollout.phase}`})\n`);
      });
  }
  return cmd;
}
