/** Recent mesh events, newest first: health changes, ejections and returns, breakers, active checks, panic mode, scaling, proxies. */
import type { MeshEvent } from './api';
import { fmtClock } from './format';

interface Props {
  events: MeshEvent[];
  /** Only this service's events (null: all). */
  service: string | null;
  onSelect: (service: string) => void;
}

function tone(e: MeshEvent): 'ok' | 'warn' | 'bad' | 'info' {
  const to = typeof e['to'] === 'string' ? e['to'] : null;
  switch (e.type) {
    case 'health':
      return to === 'healthy' ? 'ok' : to === 'unhealthy' ? 'bad' : 'info';
    case 'eject':
      return 'bad';
    case 'return':
      return 'ok';
    case 'breaker': {
      const state = String(e['state'] ?? e['detail'] ?? '');
      return state.startsWith('half') ? 'warn' : state.startsWith('open') ? 'bad' : 'ok';
    }
    case 'active-check':
      return String(e['result'] ?? e['detail'] ?? '').startsWith('unhealthy') ? 'bad' : 'ok';
    case 'panic':
      return e['state'] === 'entered' ? 'bad' : 'ok';
    case 'body-stall':
      return 'warn';
    case 'certificate':
      return String(e['detail'] ?? '').includes('failed') ? 'warn' : 'info';
    case 'mtls-refused':
      return 'bad';
    case 'scale': {
      // A replica that crashed or was given up on is bad news; a restart is a warning.
      const change = String(e['change'] ?? '');
      return change === 'crash' || change === 'failed' ? 'bad' : change === 'restart' ? 'warn' : 'info';
    }
    case 'rollout': {
      const change = String(e['change'] ?? '');
      return change === 'rollout-failed' || change === 'rollout-deadline' ? 'bad' : 'info';
    }
    case 'canary': {
      const change = String(e['change'] ?? '');
      return change === 'canary-rolled-back' ? 'bad' : change === 'canary-failed-check' || change === 'canary-error' ? 'warn' : change === 'canary-promoted' ? 'ok' : 'info';
    }
    case 'autoscale':
      // A change is news; a decision held back (at max, rate-limited, frozen, no metric) a warning.
      return e['change'] === 'autoscale-held' ? 'warn' : 'info';
    case 'proxy':
      return 'info';
    default:
      return 'info';
  }
}

/** Whether an event is about `service` (a proxy event may name several in `services`). */
export function concerns(e: MeshEvent, service: string): boolean {
  return e.service === service || (Array.isArray(e['services']) && (e['services'] as unknown[]).includes(service));
}

export function Events({ events, service, onSelect }: Props) {
  const shown = (service === null ? events : events.filter((e) => concerns(e, service))).slice(-100).reverse();
  return (
    <section class="panel events" aria-labelledby="events-h">
      <h2 id="events-h">
        Recent events{service === null ? '' : <span class="muted"> of {service}</span>}
      </h2>
      {shown.length === 0 ? (
        <p class="empty">Nothing has happened yet{service === null ? '' : ' to this service'}.</p>
      ) : (
        <ol class="event-list" data-testid="events">
          {shown.map((e, i) => (
            <li key={`${e.time}-${i}`} class={`event ${tone(e)}`} data-testid="event" data-type={e.type}>
              <time dateTime={e.time} title={e.time}>
                {fmtClock(e.time)}
              </time>
              <span class="event-head">
                <span class="badge">{e.type}</span>
                {e.service !== null && service === null ? (
                  <a
                    href={`#/services/${encodeURIComponent(e.service)}`}
                    class="event-service"
                    onClick={(ev) => {
                      ev.preventDefault();
                      onSelect(e.service as string);
                    }}
                  >
                    {e.service}
                  </a>
                ) : null}
              </span>
              <span class="msg">{e.message}</span>
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
