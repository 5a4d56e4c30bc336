/**
 * Who calls whom: services as boxes in columns by call depth, an arrow per caller -> callee pair
 * labelled with the pair's RPS and success rate over the last 10 s (from the caller's outbound
 * view). Failing edges are amber (< 99 %) or red (< 95 %). A pair seen earlier in this session but
 * quiet now stays drawn, dashed, so the graph does not jump around as traffic comes and goes. An
 * edge with traffic has a lock beside its label: closed when its requests went over mTLS between
 * the proxies, open when plaintext (Mtls.tsx).
 */
import { useMemo, useRef } from 'preact/hooks';
import type { EdgeSignals, MeshSignals } from './api';
import { fmtRate, fmtRps, rateClass } from './format';
import { layoutGraph } from './layout';
import { EdgeLock, edgeHasLock, LOCK_ROOM } from './Mtls';

interface Props {
  signals: MeshSignals | null;
  selected: string | null;
  onSelect: (service: string) => void;
}

export function Topology({ signals, selected, onSelect }: Props) {
  const known = useRef(new Map<string, { source: string; destination: string }>());
  const services = signals?.services ?? [];
  const live = new Map<string, EdgeSignals>();
  for (const e of signals?.edges ?? []) {
    const k = `${e.source} -> ${e.destination}`;
    live.set(k, e);
    if (!known.current.has(k)) known.current.set(k, { source: e.source, destination: e.destination });
  }
  const nodeNames = services.map((s) => s.service);
  const edgeKey = [...known.current.keys()].sort().join('|');
  const layout = useMemo(() => layoutGraph({ nodes: nodeNames, edges: [...known.current.values()] }), [nodeNames.join('|'), edgeKey]);
  const bySvc = new Map(services.map((s) => [s.service, s]));

  if (nodeNames.length === 0 && known.current.size === 0) {
    return <p class="empty">No services yet.</p>;
  }
  return (
    <div class="topology-scroll">
      <svg
        class="topology"
        data-testid="topology"
        width="100%"
        style={{ maxWidth: `${layout.width}px`, minWidth: `${Math.round(layout.width * 0.75)}px`, aspectRatio: `${layout.width} / ${layout.height}` }}
        viewBox={`0 0 ${layout.width} ${layout.height}`}
        role="img"
        aria-label="service call graph"
      >
        <defs>
          {(['ok', 'warn', 'bad', 'idle'] as const).map((c) => (
            <marker id={`arrow-${c}`} key={c} viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
              <path d="M 0 0 L 10 5 L 0 10 z" class={`arrowhead ${c}`} />
            </marker>
          ))}
        </defs>
        {layout.edges.map((p) => {
          const e = live.get(`${p.source} -> ${p.destination}`);
          const active = e !== undefined && e.requests > 0;
          const c = active ? rateClass(e.successRate) : 'idle';
          const label = active ? `${fmtRps(e.rps)} rps \u00b7 ${fmtRate(e.successRate)}` : 'idle';
          const lock = edgeHasLock(e);
          const shift = lock ? (p.anchor === 'end' ? -LOCK_ROOM : p.anchor === 'start' ? LOCK_ROOM : 0) : 0;
          return (
            <g key={`${p.source}->${p.destination}`} class={`edge ${c}${active ? '' : ' quiet'}`} data-testid={`edge-${p.source}-${p.destination}`}>
              <title>{`${p.source} \u2192 ${p.destination}`}</title>
              <path d={p.d} marker-end={`url(#arrow-${c})`} style={{ strokeWidth: active ? Math.min(5, 1.5 + Math.log10(1 + e.rps)) : 1.2 }} />
              <text x={p.lx + shift} y={p.ly} text-anchor={p.anchor} class="edge-label">
                {label}
              </text>
              {lock && <EdgeLock edge={e} id={`${p.source}-${p.destination}`} x={p.lx} y={p.ly} anchor={p.anchor} labelChars={label.length} />}
            </g>
          );
        })}
        {layout.nodes.map((n) => {
          const s = bySvc.get(n.name);
          const c = s === undefined ? 'idle' : s.requests > 0 ? rateClass(s.successRate) : 'idle';
          const external = s === undefined;
          return (
            <g
              key={n.name}
              class={`node ${c}${external ? ' external' : ''}${selected === n.name ? ' selected' : ''}`}
              transform={`translate(${n.x} ${n.y})`}
              data-testid={`node-${n.name}`}
              tabIndex={external ? undefined : 0}
              role={external ? undefined : 'link'}
              onClick={external ? undefined : () => onSelect(n.name)}
              onKeyDown={external ? undefined : (ev: KeyboardEvent) => (ev.key === 'Enter' || ev.key === ' ') && onSelect(n.name)}
            >
              <title>{external ? `${n.name} (not a registered service)` : n.name}</title>
              <rect width={n.w} height={n.h} rx="8" />
              <text x={12} y={21} class="node-name">
                {n.name.length > 20 ? `${n.name.slice(0, 19)}\u2026` : n.name}
              </text>
              <text x={12} y={39} class="node-stats">
                {s === undefined ? 'outside the registry' : `${fmtRps(s.rps)} rps \u00b7 ${fmtRate(s.successRate)}`}
              </text>
            </g>
          );
        })}
      </svg>
    </div>
  );
}
