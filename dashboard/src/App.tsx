/** The page: the header (mesh numbers, connection), then the overview or one service, and the event feed. */
import { useEffect, useMemo, useState } from 'preact/hooks';
import type { LiveData, LiveState } from './live';
import { fmtClock, fmtRate, fmtRps, rateClass } from './format';
import { ServicesTable } from './ServicesTable';
import { ServiceDetail } from './ServiceDetail';
import { Topology } from './Topology';
import { Events } from './Events';
import { MeshTraffic } from './MeshTraffic';
import { panicking } from './panic';
import { deploymentTrigger, useMesh } from './deployment';
import type { RolloutView } from './api';

const NO_ROLLOUTS: ReadonlyMap<string, RolloutView> = new Map();

function useLive(live: LiveData): LiveState {
  const [state, setState] = useState(live.current);
  useEffect(() => live.subscribe(setState), [live]);
  return state;
}

/** The selected service from the location hash: "#/services/<name>" (null: the overview). */
function useSelected(): [string | null, (s: string | null) => void] {
  const read = () => {
    const m = /^#\/services\/(.+)$/.exec(location.hash);
    if (m === null) return null;
    try {
      return decodeURIComponent(m[1]!);
    } catch {
      return null;
    }
  };
  const [sel, setSel] = useState(read);
  useEffect(() => {
    const on = () => setSel(read());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  const go = (s: string | null) => {
    location.hash = s === null ? '#/' : `#/services/${encodeURIComponent(s)}`;
    scrollTo({ top: 0 });
  };
  return [sel, go];
}

const CONNECTION_TEXT = { connecting: 'connecting', live: 'live', reconnecting: 'reconnecting' } as const;

export function App({ live }: { live: LiveData }) {
  const s = useLive(live);
  const [selected, select] = useSelected();
  const mesh = s.signals?.mesh;
  const panics = useMemo(() => panicking(s.panicEvents), [s.panicEvents]);
  const deploys = useMesh(s.epoch, s.signals?.time ?? null, deploymentTrigger(s.events));

  useEffect(() => {
    document.title = selected === null ? 'Skein dashboard' : `${selected} \u00b7 Skein dashboard`;
  }, [selected]);

  return (
    <div class={`app ${s.connection === 'live' ? '' : 'stale'}`}>
      <header class="top">
        <a class="brand" href="#/">
          <svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true">
            <path d="M3 7c6 0 6 10 12 10M3 17c6 0 6-10 12-10M15 7h6M15 17h6" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" />
          </svg>
          Skein
        </a>
        <div class="headline" data-testid="mesh">
          <span class="kpi">
            <span class="kpi-value" data-testid="mesh-rps" data-value={mesh?.rps ?? ''}>
              {fmtRps(mesh?.rps)}
            </span>
            <span class="kpi-label">requests/s</span>
          </span>
          <span class="kpi">
            <span class={`kpi-value rate ${rateClass(mesh?.successRate)}`} data-testid="mesh-success">
              {fmtRate(mesh?.successRate)}
            </span>
            <span class="kpi-label">success</span>
          </span>
          <span class="kpi">
            <span class="kpi-value">{s.signals?.services.length ?? '\u2013'}</span>
            <span class="kpi-label">services</span>
          </span>
        </div>
        <div class="conn">
          <span class={`connection ${s.connection}`} data-testid="connection" data-state={s.connection} role="status" aria-live="polite">
            {CONNECTION_TEXT[s.connection]}
          </span>
          <span class="muted small" title="the numbers cover the last 10 seconds; they refresh after every scrape of the proxies">
            {s.receivedAt === null ? '' : `updated ${fmtClock(s.receivedAt)} \u00b7 last 10 s`}
          </span>
        </div>
      </header>
      {s.connection !== 'live' && (
        <div class="banner" role="alert" data-testid="banner">
          {s.connection === 'connecting' ? 'Connecting to the control plane\u2026' : 'Lost the control plane: reconnecting. The numbers below are the last ones seen.'}
          {s.problem !== null && <span class="problem"> ({s.problem})</span>}
        </div>
      )}
      <main class="layout">
        <div class="primary">
          {selected === null ? (
            <>
              <section class="panel" aria-labelledby="services-h">
                <h2 id="services-h">
                  Services <span class="muted small">last 10 s</span>
                </h2>
                {s.signals === null ? <p class="empty">Waiting for the first numbers…</p> : <ServicesTable services={s.signals.services} panics={panics} rollouts={deploys.kind === 'ready' ? deploys.rollouts : NO_ROLLOUTS} onSelect={select} />}
              </section>
              <section class="panel" aria-labelledby="topology-h">
                <h2 id="topology-h">
                  Topology <span class="muted small">who calls whom, last 10 s</span>
                </h2>
                <Topology signals={s.signals} selected={null} onSelect={select} />
              </section>
              <MeshTraffic epoch={s.epoch} tick={s.signals?.time ?? null} />
            </>
          ) : (
            <ServiceDetail key={selected} service={selected} signals={s.signals} panics={panics.get(selected) ?? []} epoch={s.epoch} mesh={deploys} onSelect={select} />
          )}
        </div>
        <aside class="secondary">
          <Events events={s.events} service={selected} onSelect={select} />
        </aside>
      </main>
    </div>
  );
}
