/**
 * A service's authorization decisions over the last 5 minutes (GET /v1/signals/services/S?window=5m):
 * the stream carries only the last 10 seconds, in which a rare denied request would show for a
 * moment and be gone. Fetched when the view opens and after every scrape round (`tick`, the time of
 * the latest `signals` event) and every reconnection (`epoch`); never aborted (an answer for an
 * older request or a closed view is ignored), so the browser logs no cancelled request.
 */
import { useEffect, useState } from 'preact/hooks';
import { ApiError, fetchServiceSignals, type AuthzDecisions } from './api';

export const DECISIONS_WINDOW = '5m';

export interface DecisionsState {
  /** null: not fetched yet, or a control plane that does not count them. */
  decisions: AuthzDecisions | null;
  error: string | null;
}

export function useDecisions(service: string, epoch: number, tick: string | null): DecisionsState {
  const [state, setState] = useState<DecisionsState>({ decisions: null, error: null });
  useEffect(() => {
    let current = true;
    fetchServiceSignals(service, DECISIONS_WINDOW).then(
      (r) => current && setState({ decisions: r.authz ?? null, error: null }),
      (e: unknown) => current && setState((s) => ({ ...s, error: e instanceof ApiError ? e.message : String(e) })),
    );
    return () => {
      current = false;
    };
  }, [service, epoch, tick]);
  return state;
}
