/**
 * Whether a call between two services went over mTLS (the `mtls` of an edge, src/api/signals.ts):
 * a closed lock for every request, an amber half for some, an open lock for plaintext, nothing
 * when the window had no requests to tell by. The lock is an SVG path (no icon font, nothing
 * fetched); its text alternative says the same in words, with the counts.
 */
import type { EdgeSignals } from './api';
import { DASH } from './format';

type State = 'all' | 'some' | 'none' | 'unknown';

export interface MtlsInfo {
  state: State;
  /** What the table shows. */
  label: string;
  /** The text alternative: the state and the counts. */
  title: string;
}

export function mtlsInfo(e: Pick<EdgeSignals, 'mtls' | 'mtlsRequests' | 'requests'>, window = 'last 10 s'): MtlsInfo {
  const n = e.mtlsRequests ?? 0;
  switch (e.mtls) {
    case 'all':
      return { state: 'all', label: 'mTLS', title: `mTLS: all ${e.requests} requests (${window}) between the proxies were mutual TLS` };
    case 'some':
      return { state: 'some', label: `partly (${n}/${e.requests})`, title: `partly mTLS: ${n} of ${e.requests} requests (${window}) were mutual TLS, the rest plaintext` };
    case 'none':
      return { state: 'none', label: 'plaintext', title: `plaintext: none of ${e.requests} requests (${window}) were mutual TLS` };
    default:
      return { state: 'unknown', label: DASH, title: `no requests (${window}) to tell mTLS by` };
  }
}

/** The lock's paths in a 10 x 12 box: the shackle (closed or open) and the body. */
function LockPaths({ open }: { open: boolean }) {
  return (
    <>
      <path d={open ? 'M2.5 6 V3.5 a2.5 2.5 0 0 1 5 0' : 'M2.5 6 V3.5 a2.5 2.5 0 0 1 5 0 V6'} class="shackle" transform={open ? 'translate(3.5 -1.5)' : undefined} />
      <rect x="0.5" y="5.5" width="9" height="6" rx="1.2" class="body" />
    </>
  );
}

/** An edge's mTLS state in a table cell: the lock and the words. */
export function MtlsCell({ edge, window }: { edge: Pick<EdgeSignals, 'mtls' | 'mtlsRequests' | 'requests'>; window?: string }) {
  const m = mtlsInfo(edge, window);
  return (
    <span class={`mtls mtls-${m.state}`} data-testid="mtls" data-mtls={m.state} title={m.title}>
      {m.state !== 'unknown' && (
        <svg class="lock" viewBox="0 0 10 12" width="10" height="12" aria-hidden="true">
          <LockPaths open={m.state === 'none'} />
        </svg>
      )}
      {m.label}
    </span>
  );
}

/** How far an edge's label moves to make room for its lock (its anchor at the lock's side). */
export const LOCK_ROOM = 14;

/**
 * An edge's lock on the call graph, beside its label (anchored at x, y): in the LOCK_ROOM the
 * label leaves at its anchor when it starts or ends there, left of a centred label of `labelChars`
 * characters. Nothing when the edge had no requests (`edgeHasLock`).
 */
export function EdgeLock({ edge, id, x, y, anchor, labelChars }: { edge: EdgeSignals; id: string; x: number; y: number; anchor: 'start' | 'middle' | 'end'; labelChars: number }) {
  const m = mtlsInfo(edge);
  const lx = anchor === 'end' ? x - 10 : anchor === 'start' ? x : x - (labelChars * 6.3) / 2 - LOCK_ROOM;
  return (
    <g class={`edge-lock mtls-${m.state}`} transform={`translate(${lx} ${y - 10})`} data-testid={`edge-mtls-${id}`} data-mtls={m.state} role="img" aria-label={m.title}>
      <title>{m.title}</title>
      <LockPaths open={m.state === 'none'} />
    </g>
  );
}

/** Whether an edge gets a lock on the graph: it had requests (and a control plane that says). */
export const edgeHasLock = (e: EdgeSignals | undefined): e is EdgeSignals => e !== undefined && e.requests > 0 && e.mtls != null;
