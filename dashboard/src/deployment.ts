/**
 * A service's deployment as `skein up` runs it: its entry of GET /v1/mesh (replicas, autoscaler),
 * its rollout (GET /v1/mesh/services/S/rollout, a canary's analysis included), its revisions, its
 * golden signals per version (GET /v1/signals/services/S/versions) and its latest canary events
 * (the outcome of a canary that is over: the rollout that follows a rollback has no canary).
 *
 * Fetched when the view opens, after every scrape round (`tick`), after every `rollout`, `canary`,
 * `autoscale` or `scale` event of the service (`trigger`) and after every reconnection (`epoch`).
 * A control plane without a mesh (a bare `skein control`) answers GET /v1/mesh with 404: the state
 * is then `none` and nothing more is fetched until the next reconnection. Requests are never
 * aborted; an answer older than the newest one asked for is ignored.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import {
  ApiError,
  fetchMesh,
  fetchRevisions,
  fetchRollout,
  fetchServiceEvents,
  fetchVersionSignals,
  type MeshBody,
  type MeshEvent,
  type RevisionView,
  type RolloutBody,
  type VersionSignals,
} from './api';

/** The mesh events that change what the panel shows. */
export const DEPLOYMENT_EVENT_TYPES = ['rollout', 'canary', 'autoscale', 'scale'] as const;

/** The window of the per-version numbers: the stream's 10 s, or one scrape interval if longer. */
export const VERSIONS_WINDOW_MS = 10_000;

export interface Deployment {
  mesh: MeshBody['services'][number];
  rollout: RolloutBody;
  revisions: RevisionView[];
  /** null: unavailable (`versionsError` says why). */
  versions: VersionSignals[] | null;
  versionsError: string | null;
  /** The window of `versions`, ms. */
  versionsWindowMs: number;
  /** The service's newest canary events, oldest first. */
  canaryEvents: MeshEvent[];
}

export type DeploymentState =
  | { kind: 'loading' }
  /** No mesh runs this service (a bare control plane, or a service registered from outside). */
  | { kind: 'none' }
  | { kind: 'error'; message: string }
  | { kind: 'ready'; d: Deployment };

const message = (e: unknown) => (e instanceof ApiError ? e.message : String(e));

/** The key of the newest deployment event of `service` in `events` (newest last): it changes when one arrives. */
export function deploymentTrigger(events: readonly MeshEvent[], service: string): string {
  for (let i = events.length - 1; i >= 0; i--) {
    const e = events[i] as MeshEvent;
    if (e.service === service && (DEPLOYMENT_EVENT_TYPES as readonly string[]).includes(e.type)) return `${e.time}\u0000${e.message}`;
  }
  return '';
}

export function useDeployment(service: string, epoch: number, tick: string | null, trigger: string, scrapeIntervalMs: number): DeploymentState {
  const [state, setState] = useState<DeploymentState>({ kind: 'loading' });
  /** Whether this connection's control plane runs a mesh: asked once (one request at a time), known after its first answer. */
  const runsMesh = useRef<{ epoch: number; answer: 'asking' | 'yes' | 'no' } | null>(null);
  const asked = useRef(0);

  useEffect(() => {
    // Not connected yet (epoch 0); no mesh here; or the first question still unanswered.
    const known = runsMesh.current?.epoch === epoch ? runsMesh.current.answer : null;
    if (epoch === 0 || known === 'no' || known === 'asking') return;
    if (known === null) runsMesh.current = { epoch, answer: 'asking' };
    const mine = ++asked.current;
    const current = () => mine === asked.current;
    const settle = (answer: 'yes' | 'no' | null) => {
      if (runsMesh.current?.epoch === epoch && runsMesh.current.answer === 'asking') runsMesh.current = answer === null ? null : { epoch, answer };
    };
    void (async () => {
      let mesh: MeshBody;
      try {
        mesh = await fetchMesh();
        settle('yes');
      } catch (e) {
        const none = e instanceof ApiError && e.status === 404;
        settle(none ? 'no' : null);
        if (!current()) return;
        if (none) setState({ kind: 'none' });
        // Keep what is shown; a first failure says why.
        else setState((s) => (s.kind === 'ready' ? s : { kind: 'error', message: message(e) }));
        return;
      }
      const entry = mesh.services.find((s) => s.name === service);
      if (entry === undefined) {
        if (current()) setState({ kind: 'none' });
        return;
      }
      const lastMs = Math.max(VERSIONS_WINDOW_MS, scrapeIntervalMs);
      try {
        const [rollout, revisions, versions, canaryEvents] = await Promise.all([
          fetchRollout(service),
          fetchRevisions(service),
          fetchVersionSignals(service, lastMs).then(
            (r) => ({ list: r.versions, error: null, ms: r.lastMs }),
            (e: unknown) => ({ list: null, error: message(e), ms: lastMs }),
          ),
          fetchServiceEvents(service, ['canary'], 50).then(
            (r) => r.events ?? [],
            () => [] as MeshEvent[],
          ),
        ]);
        if (!current()) return;
        setState({ kind: 'ready', d: { mesh: entry, rollout, revisions: revisions.revisions, versions: versions.list, versionsError: versions.error, versionsWindowMs: versions.ms, canaryEvents } });
      } catch (e) {
        if (current()) setState((s) => (s.kind === 'ready' ? s : { kind: 'error', message: message(e) }));
      }
    })();
  }, [service, epoch, tick, trigger, scrapeIntervalMs]);

  return state;
}
