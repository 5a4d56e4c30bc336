/**
 * A service's Deployment panel (docs/dashboard.md, "Deployment"): its revision and version, its
 * replicas and rollout; during a canary the traffic split, the failed checks against the threshold
 * and every step's checks (value against threshold); the outcome of the last canary once it is
 * over; the golden signals per version side by side; the autoscaler's policy and last decision
 * with its inputs. Shown only for a service `skein up` runs (deployment.ts says which).
 */
import type { AutoscaleView, CanaryStatus, MeshEvent, VersionSignals } from './api';
import type { Deployment, DeploymentState } from './deployment';
import { DASH, fmtClock, fmtMs, fmtRate, fmtRps, rateClass } from './format';
import { Stat } from './Stat';

type Step = CanaryStatus['steps'][number];
type Check = Step['checks'][number];

const CHECK_NAME: Readonly<Record<Check['check'], string>> = { requests: 'requests', 'success-rate': 'success rate', p99: 'p99 latency', 'error-rate': 'error rate (abort)', webhook: 'webhook' };

/** A check's value in its unit: requests in the interval, a percentage, milliseconds. */
export function checkValue(c: Check): string {
  if (c.check === 'webhook') return c.text;
  if (c.value === null) return DASH;
  switch (c.check) {
    case 'requests':
      return `${c.value} requests`;
    case 'success-rate':
    case 'error-rate':
      return fmtRate(c.value);
    case 'p99':
      return fmtMs(c.value);
  }
}

/** A check's bound, with the way it must hold (an error rate above its bound aborts the canary at once). */
export function checkThreshold(c: Check): string {
  switch (c.check) {
    case 'requests':
      return `\u2265 ${c.threshold} requests`;
    case 'success-rate':
      return `\u2265 ${fmtRate(c.threshold)}`;
    case 'p99':
      return `\u2264 ${fmtMs(c.threshold)}`;
    case 'error-rate':
      return `\u2264 ${fmtRate(c.threshold)}`;
    case 'webhook':
      return '2xx';
  }
}

const Result = ({ ok }: { ok: boolean }) => (
  <span class={`pill ${ok ? 'ok' : 'bad'}`} data-testid="check-result">
    {ok ? 'passed' : 'failed'}
  </span>
);

function CheckCells({ c }: { c: Check }) {
  return (
    <>
      <td class="nowrap" data-testid="check-metric" title={c.text}>
        {c.check === 'webhook' ? `webhook ${c.name ?? ''}` : CHECK_NAME[c.check]}
      </td>
      <td class="num" data-testid="check-value">
        {checkValue(c)}
      </td>
      <td class="num" data-testid="check-threshold">
        {checkThreshold(c)}
      </td>
      <td>
        <Result ok={c.ok} />
      </td>
    </>
  );
}

/** The canary's steps, newest first: per step its weight, its checks and what the analysis decided. */
function StepsTable({ steps }: { steps: readonly Step[] }) {
  if (steps.length === 0) return <p class="empty">No step yet: the analysis runs once every interval after the canary's replicas are ready.</p>;
  return (
    <table class="grid" data-testid="canary-steps">
      <caption class="muted small">Each interval's checks of the canary's own requests, newest first</caption>
      <thead>
        <tr>
          <th>Step</th>
          <th class="num">Weight</th>
          <th>Check</th>
          <th class="num">Value</th>
          <th class="num">Threshold</th>
          <th>Result</th>
          <th>Decision</th>
        </tr>
      </thead>
      <tbody>
        {[...steps].reverse().flatMap((st) => {
          const rows = st.checks.length === 0 ? [null] : st.checks;
          const decision = `${st.decision.action}: ${st.decision.reason}`;
          return rows.map((c, i) => (
            <tr key={`${st.n}-${i}`} data-testid={`canary-step-${st.n}`}>
              {i === 0 && (
                <>
                  <td rowSpan={rows.length}>
                    {st.n} <span class="muted small">{fmtClock(st.time)}</span>
                  </td>
                  <td class="num" rowSpan={rows.length}>
                    {st.weight}%
                  </td>
                </>
              )}
              {c === null ? (
                <td colSpan={4} class="muted">
                  no checks (the canary had no traffic yet)
                </td>
              ) : (
                <CheckCells c={c} />
              )}
              {i === 0 && (
                <td rowSpan={rows.length} data-testid="step-decision">
                  {decision}
                </td>
              )}
            </tr>
          ));
        })}
      </tbody>
    </table>
  );
}

/** The traffic split between the stable version and the canary: a bar, and the same in words. */
function Split({ c }: { c: CanaryStatus }) {
  const w = Math.max(0, Math.min(100, c.weight));
  const words = `stable ${c.stable} ${100 - w}%, canary ${c.version} ${w}%`;
  return (
    <div class="split" data-testid="canary-split">
      <div class="split-bar" role="img" aria-label={words} title={words}>
        <span class="split-stable" style={{ width: `${100 - w}%` }} />
        <span class="split-canary" style={{ width: `${w}%` }} />
      </div>
      <p class="split-text">
        <span class="split-key stable" aria-hidden="true" />
        stable {c.stable} {100 - w}% <span class="split-key canary" aria-hidden="true" />
        <strong data-testid="canary-weight">canary {w}%</strong> ({c.version})
      </p>
    </div>
  );
}

const CANARY_PHASE: Readonly<Record<CanaryStatus['phase'], string>> = {
  'waiting for its replicas': 'waiting for its replicas to be ready',
  initializing: 'initializing (pre-rollout webhooks)',
  progressing: 'progressing',
  promoted: 'promoted',
  'rolled-back': 'rolled back',
};

function Canary({ c }: { c: CanaryStatus }) {
  const failedCls = c.failedChecks === 0 ? 'ok' : c.failedChecks >= c.threshold ? 'bad' : 'warn';
  return (
    <div class="canary" data-testid="canary">
      <h4>
        Canary {c.version} beside {c.stable}: <span data-testid="canary-phase">{CANARY_PHASE[c.phase]}</span>
      </h4>
      <Split c={c} />
      <p>
        <span class={`pill ${failedCls}`} data-testid="canary-failed">
          failed checks {c.failedChecks} of {c.threshold}
        </span>{' '}
        <span class="muted small">cumulative; at {c.threshold} the canary is rolled back</span>
      </p>
      {c.lastDecision !== null && (
        <p data-testid="canary-last-decision">
          Last decision: <strong>{c.lastDecision.action}</strong> ({c.lastDecision.reason})
        </p>
      )}
      <StepsTable steps={c.steps} />
    </div>
  );
}

/** The last canary of the service once it is over (promoted or rolled back), from its events. */
function CanaryOutcome({ events }: { events: readonly MeshEvent[] }) {
  const end = [...events].reverse().find((e) => e['change'] === 'canary-promoted' || e['change'] === 'canary-rolled-back');
  if (end === undefined) return null;
  const rolledBack = end['change'] === 'canary-rolled-back';
  const started = [...events].reverse().find((e) => e['change'] === 'canary-started' && e['revision'] === end['revision']);
  const version = typeof started?.['canary'] === 'string' ? ` (${started['canary']})` : '';
  const checks = (Array.isArray(end['checks']) ? end['checks'] : []) as Check[];
  return (
    <div class={`canary-outcome ${rolledBack ? 'bad' : 'ok'}`} data-testid="canary-outcome" role="status">
      <p>
        <strong>
          Last canary: revision {String(end['revision'] ?? '?')}
          {version} {rolledBack ? 'rolled back' : 'promoted'}
        </strong>{' '}
        at {fmtClock(end.time)}: <span data-testid="canary-outcome-reason">{String(end['reason'] ?? '')}</span>
      </p>
      {checks.length > 0 && (
        <table class="grid" data-testid="canary-outcome-checks">
          <caption class="muted small">The checks of its last interval</caption>
          <thead>
            <tr>
              <th>Check</th>
              <th class="num">Value</th>
              <th class="num">Threshold</th>
              <th>Result</th>
            </tr>
          </thead>
          <tbody>
            {checks.map((c, i) => (
              <tr key={i}>
                <CheckCells c={c} />
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

/** Every version with replicas or traffic: its replicas and its golden signals side by side. */
function Versions({ d, canary }: { d: Deployment; canary: CanaryStatus | undefined }) {
  const current = d.revisions.find((r) => r.current)?.version;
  const live = d.rollout.instances.filter((i) => i.state !== 'stopped');
  const names = [...new Set([...live.map((i) => i.version), ...(d.versions ?? []).map((v) => v.version)])].sort();
  const role = (v: string) => (canary !== undefined && canary.phase !== 'promoted' && canary.phase !== 'rolled-back' ? (v === canary.version ? 'canary' : v === canary.stable ? 'stable' : '') : v === current ? 'current' : '');
  return (
    <>
      <h4>
        Per version <span class="muted small">last {Math.round(d.versionsWindowMs / 1000)} s</span>
      </h4>
      {d.versionsError !== null && <p class="note">Numbers per version unavailable: {d.versionsError}</p>}
      {names.length === 0 ? (
        <p class="empty">No replicas and no traffic.</p>
      ) : (
        <table class="grid" data-testid="versions">
          <thead>
            <tr>
              <th>Version</th>
              <th>Role</th>
              <th class="num" title="ready / running replicas of this version">Replicas</th>
              <th class="num">RPS (req/s)</th>
              <th class="num">Success</th>
              <th class="num">p99</th>
              <th class="num">Requests</th>
            </tr>
          </thead>
          <tbody>
            {names.map((v) => {
              const s: VersionSignals | undefined = d.versions?.find((x) => x.version === v);
              const mine = live.filter((i) => i.version === v);
              return (
                <tr key={v} data-testid={`version-row-${v === '' ? 'none' : v}`}>
                  <td class="mono">{v === '' ? '(none)' : v}</td>
                  <td data-testid="version-role">{role(v)}</td>
                  <td class="num">
                    {mine.filter((i) => i.state === 'ready').length}/{mine.length}
                  </td>
                  <td class="num" data-testid="version-rps">
                    {fmtRps(s?.rps ?? null)}
                  </td>
                  <td class={`num rate ${rateClass(s?.successRate)}`} data-testid="version-success">
                    {fmtRate(s?.successRate ?? null)}
                  </td>
                  <td class="num" data-testid="version-p99">
                    {fmtMs(s?.latencyMs.p99 ?? null)}
                  </td>
                  <td class="num" data-testid="version-requests">
                    {s?.requests ?? 0}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </>
  );
}

/** An autoscaler target in its unit. */
export function targetText(metric: AutoscaleView['metric'], target: number): string {
  if (metric === 'p99') return `p99 \u2264 ${fmtMs(target)}`;
  return metric === 'rps' ? `${target} req/s per replica` : `${target} in flight per replica`;
}

function measuredText(metric: AutoscaleView['metric'], value: number | null): string {
  if (value === null) return DASH;
  if (metric === 'p99') return `p99 ${fmtMs(value)}`;
  return metric === 'rps' ? `${fmtRps(value)} req/s per replica` : `${value} in flight per replica`;
}

function Autoscaler({ a }: { a: AutoscaleView }) {
  const l = a.last;
  return (
    <div data-testid="autoscale">
      <h4>Autoscaler</h4>
      <p data-testid="autoscale-policy">
        {a.min}..{a.max} replicas, target {targetText(a.metric, a.target)}
        {a.frozen && (
          <>
            {' '}
            <span class="pill warn">frozen: a rollout is in progress</span>
          </>
        )}
      </p>
      {l === null ? (
        <p class="empty">No decision yet.</p>
      ) : (
        <>
          <p data-testid="autoscale-message">
            Last decision <span class="muted small">{fmtClock(l.time)}</span>: {l.message}
          </p>
          <table class="grid" data-testid="autoscale-last">
            <thead>
              <tr>
                <th>Metric</th>
                <th class="num">Measured</th>
                <th class="num">Target</th>
                <th class="num" title="replicas before the decision (ready ones of the current revision)">Replicas</th>
                <th class="num" title="what the metric alone asks for">Recommended</th>
                <th class="num">Desired</th>
                <th>Held back by</th>
              </tr>
            </thead>
            <tbody>
              <tr>
                <td class="mono">{l.metric}</td>
                <td class="num" data-testid="autoscale-value">
                  {measuredText(l.metric, l.value)}
                </td>
                <td class="num">{targetText(l.metric, l.target)}</td>
                <td class="num" data-testid="autoscale-current">
                  {l.current} ({l.ready} ready)
                </td>
                <td class="num">{l.recommendation ?? DASH}</td>
                <td class="num" data-testid="autoscale-desired">
                  {l.desired}
                </td>
                <td data-testid="autoscale-limited">{l.limitedBy === null ? <span class="muted">nothing</span> : <span class="pill warn">{l.limitedBy}</span>}</td>
              </tr>
            </tbody>
          </table>
        </>
      )}
    </div>
  );
}

const ROLLOUT_PHASE_CLASS: Readonly<Record<string, string>> = { complete: 'ok', progressing: 'idle', paused: 'warn', 'deadline-exceeded': 'bad', superseded: 'idle' };

export function DeploymentPanel({ state }: { state: DeploymentState }) {
  if (state.kind === 'loading' || state.kind === 'none') return null;
  if (state.kind === 'error') {
    return (
      <section class="deployment" data-testid="deployment" aria-labelledby="deployment-h">
        <h3 id="deployment-h">Deployment</h3>
        <p class="note">Deployment unavailable: {state.message}</p>
      </section>
    );
  }
  const d = state.d;
  const r = d.rollout.rollout;
  const current = d.revisions.find((x) => x.current);
  const updated = r?.replicas.updated ?? d.rollout.instances.filter((i) => i.revision === d.rollout.revision && i.state !== 'stopped').length;
  const phase = r === null ? 'none since skein up' : `${r.phase}${r.rollback ? ' (a rollback)' : ''}`;
  return (
    <section class="deployment" data-testid="deployment" aria-labelledby="deployment-h">
      <h3 id="deployment-h">Deployment</h3>
      <div class="stats">
        <Stat label="Revision" value={String(d.rollout.revision)} testId="deploy-revision" />
        <Stat label="Version" value={current?.version === undefined || current.version === '' ? DASH : current.version} testId="deploy-version" />
        <Stat label="Desired" value={String(d.mesh.desired)} testId="deploy-desired" />
        <Stat label="Ready" value={String(d.rollout.ready)} testId="deploy-ready" />
        <Stat label="Updated" value={String(updated)} testId="deploy-updated" />
        <Stat label="Rollout" value={`${phase}${d.rollout.paused ? ' [paused]' : ''}`} cls={r === null ? '' : (ROLLOUT_PHASE_CLASS[r.phase] ?? '')} testId="deploy-phase" />
      </div>
      {r !== null && (
        <p class="rollout-line" data-testid="rollout-message">
          Rollout of revision {r.revision} ({r.strategy === 'Canary' ? 'canary' : 'rolling update'}{r.rollback ? ', a rollback' : ''}): {r.message}
          <br />
          <span class="muted small">cause: {r.cause}</span>
        </p>
      )}
      {r?.canary !== undefined ? <Canary c={r.canary} /> : <CanaryOutcome events={d.canaryEvents} />}
      <Versions d={d} canary={r?.canary} />
      {d.mesh.autoscale !== null && <Autoscaler a={d.mesh.autoscale} />}
    </section>
  );
}
