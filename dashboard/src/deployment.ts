/**
 * Deployments as `skein up` runs them, for the services table's badges and a service's
 * Deployment panel (Deployment.tsx):
 *
 *   useMesh        GET /v1/mesh (every service's replicas, revision, rollout phase, autoscaler),
 *                  and the rollout (GET /v1/mesh/services/S/rollout) of every service whose rollout
 *                  is under way (its canary's weight, for the badge)
 *   useDeployment  one service: its rollout (a canary's analysis included), its revisions, its
 *                  golden signals per version (GET /v1/signals/services/S/versions) and its latest
 *                  canary events (the outcome of a canary that is over: the rollout that follows a
 *                  rollback has no canary), fetched again whenever the mesh is
 *
 * The mesh is fetched when the page connects (`epoch`), after every scrape round (`tick`) and
 * after every `rollout`, `canary`, `autoscale` or `scale` event (`trigger`). A control plane
 * without a mesh (a bare `skein control`) answers GET /v1/mesh with 404: asked once per
 * connection (never twice at a time), the state is then `none` and nothing more is fetched until
 * the next reconnection. Requests are never aborted; an answer older than the newest one asked
 * for is ignored.
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
  type RolloutView,
  type VersionSignals,
} from './api';

/** The mesh events that change what a deployment looks like. */
export const DEPLOYMENT_EVENT_TYPES = ['rollout', 'canary', 'autoscale', 'scale'] as const;

/** The window of the per-version numbers: the stream's 10 s, or one scrape interval if longer. */
export const VERSIONS_WINDOW_MS = 10_000;

/** Rollout phases under way: the service's replicas or traffic are moving. */
const UNDER_WAY: ReadonlySet<string> = new Set(['progressing', 'paused', 'deadline-exceeded']);

export type MeshState =
  | { kind: 'loading' }
  /** No mesh: a bare control plane. */
  | { kind: 'none' }
  | { kind: 'error'; message: string }
  /** `rollouts`: the rollouts under way, by service. */
  | { kind: 'ready'; mesh: MeshBody; rollouts: ReadonlyMap<string, RolloutView> };

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

/** The key of the newest deployment event in `events` (newest last): it changes when one arrives. */
export function deploymentTrigger(events: readonly MeshEvent[]): string {
  for (let i = events.length - 1; i >= 0; i--) {
    const e = events[i] as MeshEvent;
    if ((DEPLOYMENT_EVENT_TYPES as readonly string[]).includes(e.type)) return `${e.time}\u0000${e.service ?? ''}\u0000${e.message}`;
  }
  return '';
}

/** The badge of a service in the services table: `canary 20%`, `canary promoted` (rolling out to every replica), `rolling`, `paused`, `stalled`; null when nothing moves. */
export function rolloutBadge(r: RolloutView | undefined): string | null {
  if (r === undefined || !UNDER_WAY.has(r.phase)) return null;
  if (r.phase === 'paused') return 'paused';
  if (r.phase === 'deadline-exceeded') return 'stalled';
  if (r.canary === undefined) return r.rollback ? 'rolling back' : 'rolling';
  switch (r.canary.phase) {
    case 'progressing':
      return `canary ${r.canary.weight}%`;
    case 'promoted':
      return 'canary promoted';
    case 'rolled-back':
      return 'canary rolled back';
    default:
      return 'canary starting';
  }
}

export function useMesh(epoch: number, tick: string | null, trigger: string): MeshState {
  const [state, setState] = useState<MeshState>({ kind: 'loading' });
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
      // The rollouts under way (a failed one is left out: its badge waits for the next round).
      const moving = mesh.services.filter((s) => s.rollout !== null && UNDER_WAY.has(s.rollout));
      const answers = await Promise.all(moving.map((s) => fetchRollout(s.name).then((r) => r.rollout, () => null)));
      if (!current()) return;
      const rollouts = new Map<string, RolloutView>();
      moving.forEach((s, i) => {
        const r = answers[i];
        if (r !== null && r !== undefined) rollouts.set(s.name, r);
      });
      setState({ kind: 'ready', mesh, rollouts });
    })();
  }, [epoch, tick, trigger]);

  return state;
}

export function useDeployment(service: string, mesh: MeshState, scrapeIntervalMs: number): DeploymentState {
  const [state, setState] = useState<DeploymentState>({ kind: 'loading' });
  const asked = useRef(0);
  const entry = mesh.kind === 'ready' ? mesh.mesh.services.find((s) => s.name === service) : undefined;

  useEffect(() => {
    const mine = ++asked.current;
    const current = () => mine === asked.current;
    if (mesh.kind === 'loading') return;
    if (mesh.kind === 'error') {
      setState((s) => (s.kind === 'ready' ? s : { kind: 'error', message: mesh.message }));
      return;
    }
    if (entry === undefined) {
      setState({ kind: 'none' });
      return;
    }
    const lastMs = Math.max(VERSIONS_WINDOW_MS, scrapeIntervalMs);
    void Promise.all([
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
    ]).then(
      ([rollout, revisions, versions, canaryEvents]) => {
        if (current()) setState({ kind: 'ready', d: { mesh: entry, rollout, revisions: revisions.revisions, versions: versions.list, versionsError: versions.error, versionsWindowMs: versions.ms, canaryEvents } });
      },
      // Keep what is shown; a first failure says why.
      (e: unknown) => current() && setState((s) => (s.kind === 'ready' ? s : { kind: 'error', message: message(e) })),
    );
  }, [service, mesh, scrapeIntervalMs]);

  return state;
}
