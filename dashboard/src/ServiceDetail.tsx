/**
 * One service: its numbers now (the stream's 10-second window), charts of the last 5 minutes (one
 * point per scrape round, from GET /v1/signals/series?service=S: see series.ts), its policy
 * decisions of the last 5 minutes (decisions.ts), its instances, its routes and who it calls / who
 * calls it (with whether those calls went over mTLS); for a service `skein up` runs, its
 * Deployment panel (Deployment.tsx: revision, rollout, canary, versions, autoscaler).
 */
import { useEffect, useMemo, useState } from 'preact/hooks';
import type uPlot from 'uplot';
import { fetchRouteDefinitions, type AuthzDecisions, type MeshEvent, type MeshSignals, type RouteDefinition, type SeriesPoint, type Signals } from './api';
import { useSeries } from './series';
import { SignalCharts } from './Chart';
import { fmtMs, fmtRate, fmtRps, rateClass, statusClass, DASH } from './format';
import { healthyCount, PanicBadge } from './ServicesTable';
import { useDecisions } from './decisions';
import { MtlsCell } from './Mtls';
import { Stat } from './Stat';
import { DeploymentPanel } from './Deployment';
import { useDeployment, type MeshState } from './deployment';

interface Props {
  service: string;
  signals: MeshSignals | null;
  /** The proxies' `entered` events while this service is in panic mode (panic.ts); empty otherwise. */
  panics: readonly MeshEvent[];
  /** Bumped on every (re)connection of the stream: re-fetch the history. */
  epoch: number;
  /** What `skein up` says of the mesh (deployment.ts): the Deployment panel's source, refreshed with it. */
  mesh: MeshState;
  onSelect: (service: string) => void;
}

/** Chart data from series points: [times], then RPS, success rate, and p50/p95/p99. */
export function seriesData(points: readonly SeriesPoint[]) {
  const t = points.map((p) => p.time / 1000);
  return {
    rps: [t, points.map((p) => p.rps)] as uPlot.AlignedData,
    success: [t, points.map((p) => p.successRate)] as uPlot.AlignedData,
    latency: [t, points.map((p) => p.p50), points.map((p) => p.p95), points.map((p) => p.p99)] as uPlot.AlignedData,
  };
}

function SignalCells({ s, prefix = '' }: { s: Signals; prefix?: string }) {
  return (
    <>
      <td class="num" data-testid={`${prefix}rps`} data-value={s.rps}>
        {fmtRps(s.rps)}
      </td>
      <td class={`num rate ${rateClass(s.successRate)}`} data-testid={`${prefix}success`}>
        {fmtRate(s.successRate)}
      </td>
      <td class="num">{fmtMs(s.latencyMs.p50)}</td>
      <td class="num">{fmtMs(s.latencyMs.p95)}</td>
      <td class="num">{fmtMs(s.latencyMs.p99)}</td>
    </>
  );
}

const SignalHeads = () => (
  <>
    <th class="num">RPS</th>
    <th class="num">Success</th>
    <th class="num">p50</th>
    <th class="num">p95</th>
    <th class="num">p99</th>
  </>
);

function matchText(def: RouteDefinition | undefined, name: string): string {
  if (name === 'default') return 'requests no other route matches';
  const m = def?.['match'] as { path?: string; pathPrefix?: string; methods?: string[]; headers?: Record<string, string> } | undefined;
  if (m === undefined) return DASH;
  const parts: string[] = [];
  if (m.methods !== undefined && m.methods.length > 0) parts.push(m.methods.join('|'));
  if (m.path !== undefined) parts.push(m.path);
  else if (m.pathPrefix !== undefined) parts.push(`${m.pathPrefix}*`);
  const headers = Object.keys(m.headers ?? {});
  if (headers.length > 0) parts.push(`headers: ${headers.join(', ')}`);
  return parts.length === 0 ? 'any request' : parts.join(' ');
}

export function ServiceDetail({ service, signals, panics, epoch, mesh, onSelect }: Props) {
  const history = useSeries(service, epoch, signals?.time ?? null);
  const decisions = useDecisions(service, epoch, signals?.time ?? null);
  const deployment = useDeployment(service, mesh, signals?.scrapeIntervalMs ?? 0);
  const [defs, setDefs] = useState<RouteDefinition[]>([]);
  const entry = signals?.services.find((s) => s.service === service);

  // The route definitions: on opening the service and again after every reconnection.
  useEffect(() => {
    let current = true;
    fetchRouteDefinitions(service).then(
      (r) => current && setDefs(r.routes ?? []),
      () => current && setDefs([]),
    );
    return () => {
      current = false;
    };
  }, [service, epoch]);

  const data = useMemo(() => seriesData(history.points), [history.points]);

  const routes = useMemo(() => {
    const seen = (signals?.routes ?? []).filter((r) => r.service === service);
    const names = new Set([...seen.map((r) => r.route), ...defs.map((d) => d.name)]);
    return [...names].sort((a, b) => (a === 'default' ? 1 : b === 'default' ? -1 : a < b ? -1 : 1)).map((name) => ({
      name,
      def: defs.find((d) => d.name === name),
      dirs: seen.filter((r) => r.route === name),
    }));
  }, [signals, defs, service]);

  const edges = (signals?.edges ?? []).filter((e) => e.source === service || e.destination === service);

  if (signals !== null && entry === undefined) {
    return (
      <section class="panel detail" data-testid="service-detail">
        <p class="crumbs">
          <a href="#/">Services</a> / {service}
        </p>
        <p class="empty">The control plane does not know a service named “{service}”.</p>
      </section>
    );
  }
  const hc = entry === undefined ? null : healthyCount(entry);
  return (
    <section class="panel detail" data-testid="service-detail" data-service={service}>
      <p class="crumbs">
        <a href="#/">Services</a> / <strong>{service}</strong> <PanicBadge events={panics} />
      </p>
      {panics.length > 0 && (
        <div class="panic-note" role="status" data-testid="panic-note">
          <strong>In panic mode:</strong> too many of its instances look unhealthy to a proxy (ejected by outlier detection or failing its active checks), so that proxy ignores
          those verdicts and spreads requests over every instance rather than refuse them (docs/traffic.md, “The panic threshold”).
          <ul>
            {panics.map((e) => (
              <li key={`${String(e['proxy'])}-${e.time}`}>{e.message}</li>
            ))}
          </ul>
        </div>
      )}
      {entry !== undefined && (
        <div class="stats" data-testid="detail-stats">
          <Stat label="RPS" value={fmtRps(entry.rps)} testId="detail-rps" />
          <Stat label="Success" value={fmtRate(entry.successRate)} cls={rateClass(entry.successRate)} />
          <Stat label="p50" value={fmtMs(entry.latencyMs.p50)} />
          <Stat label="p95" value={fmtMs(entry.latencyMs.p95)} />
          <Stat label="p99" value={fmtMs(entry.latencyMs.p99)} />
          <Stat label="Healthy" value={hc === null ? DASH : `${hc.healthy}/${hc.total}`} />
        </div>
      )}

      <DeploymentPanel state={deployment} />

      <h3 title="one point per scrape of the proxies">Last 5 minutes</h3>
      <SignalCharts data={data} testIdPrefix="chart" />
      {history.error !== null && <p class="note">History unavailable: {history.error}</p>}

      <h3>
        Policy decisions <span class="muted small">last 5 minutes</span>
      </h3>
      <Decisions d={decisions.decisions} />
      {decisions.error !== null && <p class="note">Decisions unavailable: {decisions.error}</p>}

      <h3>Instances</h3>
      {entry === undefined || entry.instances.length === 0 ? (
        <p class="empty">No instances.</p>
      ) : (
        <table class="grid" data-testid="instances">
          <thead>
            <tr>
              <th>Instance</th>
              <th>Address</th>
              <th>Status</th>
              <SignalHeads />
            </tr>
          </thead>
          <tbody>
            {entry.instances.map((i) => (
              <tr key={i.id} data-testid={`instance-row-${i.id}`}>
                <td class="mono">{i.id}</td>
                <td class="mono">{i.address ?? DASH}</td>
                <td>
                  <span class={`pill ${statusClass(i.status)}`} data-testid="status" title={i.status === 'unknown' ? 'seen in traffic, not in the registry' : undefined}>
                    {i.status}
                  </span>
                </td>
                <SignalCells s={i} />
              </tr>
            ))}
          </tbody>
        </table>
      )}

      <h3>Routes</h3>
      {routes.length === 0 ? (
        <p class="empty">No traffic and no routes defined: every request takes the route “default”.</p>
      ) : (
        <table class="grid" data-testid="routes">
          <thead>
            <tr>
              <th>Route</th>
              <th>Matches</th>
              <th>Seen by</th>
              <SignalHeads />
            </tr>
          </thead>
          <tbody>
            {routes.flatMap((r) =>
              (r.dirs.length === 0 ? [null] : r.dirs).map((d, k) => (
                <tr key={`${r.name}-${d?.direction ?? ''}`} data-testid={`route-row-${r.name}`}>
                  <td class="mono">{k === 0 ? r.name : ''}</td>
                  <td>{k === 0 ? matchText(r.def, r.name) : ''}</td>
                  <td>{d === null ? DASH : d.direction === 'inbound' ? 'its instances' : 'its callers'}</td>
                  {d === null ? (
                    <td class="num muted" colSpan={5}>
                      no traffic in the last 10 s
                    </td>
                  ) : (
                    <SignalCells s={d} />
                  )}
                </tr>
              )),
            )}
          </tbody>
        </table>
      )}

      <h3>Calls</h3>
      {edges.length === 0 ? (
        <p class="empty">No calls to or from {service} in the last 10 s.</p>
      ) : (
        <table class="grid" data-testid="edges">
          <thead>
            <tr>
              <th>Caller</th>
              <th>Callee</th>
              <th title="whether the calls went over mutual TLS between the proxies">mTLS</th>
              <SignalHeads />
            </tr>
          </thead>
          <tbody>
            {edges.map((e) => (
              <tr key={`${e.source}->${e.destination}`} data-testid={`edge-row-${e.source}-${e.destination}`}>
                <td>{e.source === service ? <strong>{e.source}</strong> : <ServiceLink name={e.source} onSelect={onSelect} known={signals} />}</td>
                <td>{e.destination === service ? <strong>{e.destination}</strong> : <ServiceLink name={e.destination} onSelect={onSelect} known={signals} />}</td>
                <td>
                  <MtlsCell edge={e} />
                </td>
                <SignalCells s={e} />
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

const OUTCOME_TEXT = { allow: 'allowed', deny: 'denied', 'dry-run-deny': 'dry-run denied', audit: 'audited' } as const;

/** The counts by outcome, then a row per policy and outcome; the default (no policy matched) named as such. */
function Decisions({ d }: { d: AuthzDecisions | null }) {
  if (d === null) return <p class="empty">Waiting for the decisions…</p>;
  return (
    <>
      <div class="stats" data-testid="decisions">
        <Stat label="Allowed" value={String(d.allowed)} testId="decisions-allowed" />
        <Stat label="Denied" value={String(d.denied)} cls={d.denied > 0 ? 'bad' : ''} testId="decisions-denied" />
        <Stat label="Dry-run denied" value={String(d.dryRunDenied)} cls={d.dryRunDenied > 0 ? 'warn' : ''} testId="decisions-dry-run-denied" />
        <Stat label="Audited" value={String(d.audited)} testId="decisions-audited" />
      </div>
      {d.byPolicy.length === 0 ? (
        <p class="empty">No authorization decisions in the last 5 minutes: no policy applies to this service (and the mesh default allows), or nobody called it.</p>
      ) : (
        <table class="grid" data-testid="decisions-by-policy">
          <thead>
            <tr>
              <th>Policy</th>
              <th>Decision</th>
              <th class="num">Requests</th>
            </tr>
          </thead>
          <tbody>
            {d.byPolicy.map((p) => (
              <tr key={`${p.outcome}-${p.policy}`} data-testid={`decision-row-${p.outcome}-${p.policy === '' ? 'default' : p.policy}`}>
                <td class={p.policy === '' ? 'muted' : 'mono'} data-testid="policy">
                  {p.policy === '' ? 'the default (no policy matched)' : p.policy}
                </td>
                <td>
                  <span class={`pill ${p.outcome === 'deny' ? 'bad' : p.outcome === 'dry-run-deny' ? 'warn' : p.outcome === 'allow' ? 'ok' : 'idle'}`} data-testid="outcome">
                    {OUTCOME_TEXT[p.outcome]}
                  </span>
                </td>
                <td class="num" data-testid="requests">
                  {p.requests}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

function ServiceLink({ name, known, onSelect }: { name: string; known: MeshSignals | null; onSelect: (s: string) => void }) {
  if (!known?.services.some((s) => s.service === name)) return <span>{name}</span>;
  return (
    <a
      href={`#/services/${encodeURIComponent(name)}`}
      onClick={(ev) => {
        ev.preventDefault();
        onSelect(name);
      }}
    >
      {name}
    </a>
  );
}
