/** Every service (registered, or seen only in traffic) with its golden signals over the last 10 s, and a badge while its rollout is under way. */
import type { MeshEvent, RolloutView, ServiceSignals } from './api';
import { rolloutBadge } from './deployment';
import { fmtMs, fmtRate, fmtRps, rateClass } from './format';
import { healthyCount } from '../../src/api/signals';

interface Props {
  services: ServiceSignals[];
  /** Services in panic mode: the proxies' `entered` events (panic.ts). */
  panics: ReadonlyMap<string, readonly MeshEvent[]>;
  /** The rollouts under way (skein up only): a badge beside the name. */
  rollouts: ReadonlyMap<string, RolloutView>;
  onSelect: (service: string) => void;
}

/** The badge of a service in panic mode; its title says which proxies and why. */
export function PanicBadge({ events }: { events: readonly MeshEvent[] | undefined }) {
  if (events === undefined || events.length === 0) return null;
  return (
    <span class="pill bad panic" data-testid="panic" title={events.map((e) => e.message).join('\n')}>
      panic
    </span>
  );
}

export { healthyCount };

/** The badge of a service whose rollout is under way: `canary 20%`, `rolling`, `paused`, ... */
function RolloutBadge({ rollout }: { rollout: RolloutView | undefined }) {
  const text = rolloutBadge(rollout);
  if (text === null || rollout === undefined) return null;
  const cls = rollout.phase === 'deadline-exceeded' || rollout.canary?.phase === 'rolled-back' ? 'bad' : rollout.phase === 'paused' ? 'warn' : 'idle';
  return (
    <span class={`pill ${cls} rollout-badge`} data-testid="rollout-badge" title={`rollout of revision ${rollout.revision}: ${rollout.message}`}>
      {text}
    </span>
  );
}

export function ServicesTable({ services, panics, rollouts, onSelect }: Props) {
  if (services.length === 0) return <p class="empty">No services registered yet.</p>;
  return (
    <table class="grid services" data-testid="services">
      <thead>
        <tr>
          <th>Service</th>
          <th class="num" title="healthy / registered instances">Instances</th>
          <th class="num" title="requests per second, last 10 s">RPS</th>
          <th class="num" title="share of requests that did not fail, last 10 s">Success</th>
          <th class="num">p50</th>
          <th class="num">p95</th>
          <th class="num">p99</th>
        </tr>
      </thead>
      <tbody>
        {services.map((s) => {
          const { healthy, total } = healthyCount(s);
          const idle = s.requests === 0;
          return (
            <tr key={s.service} data-testid={`service-row-${s.service}`} class={idle ? 'idle-row' : ''} onClick={() => onSelect(s.service)}>
              <td>
                <a href={`#/services/${encodeURIComponent(s.service)}`} data-testid="name" onClick={(ev) => ev.stopPropagation()}>
                  {s.service}
                </a>{' '}
                <PanicBadge events={panics.get(s.service)} /> <RolloutBadge rollout={rollouts.get(s.service)} />
              </td>
              <td class={`num ${total > 0 && healthy < total ? (healthy === 0 ? 'bad' : 'warn') : ''}`} data-testid="instances">
                {healthy}/{total}
              </td>
              <td class="num" data-testid="rps" data-value={s.rps}>
                {fmtRps(s.rps)}
              </td>
              <td class={`num rate ${rateClass(s.successRate)}`} data-testid="success" data-value={s.successRate ?? ''}>
                {fmtRate(s.successRate)}
              </td>
              <td class="num" data-testid="p50" data-value={s.latencyMs.p50 ?? ''}>
                {fmtMs(s.latencyMs.p50)}
              </td>
              <td class="num" data-testid="p95" data-value={s.latencyMs.p95 ?? ''}>
                {fmtMs(s.latencyMs.p95)}
              </td>
              <td class="num" data-testid="p99" data-value={s.latencyMs.p99 ?? ''}>
                {fmtMs(s.latencyMs.p99)}
              </td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}
