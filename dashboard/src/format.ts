/** How numbers read on the dashboard. A missing value (no requests in the window) is a dash. */

export const DASH = '\u2013';

export function fmtRps(v: number | null | undefined): string {
  if (v == null || !Number.isFinite(v)) return DASH;
  if (v === 0) return '0';
  if (v >= 10_000) return `${(v / 1000).toFixed(1)}k`;
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  if (v >= 0.01) return v.toFixed(2);
  return '<0.01';
}

export function fmtRate(v: number | null | undefined): string {
  if (v == null || !Number.isFinite(v)) return DASH;
  if (v >= 1) return '100%';
  const pct = v * 100;
  // 99.95% must not read 100%.
  return `${pct >= 99.9 ? Math.min(99.99, Math.floor(pct * 100) / 100).toFixed(2) : pct.toFixed(1)}%`;
}

export function fmtMs(v: number | null | undefined): string {
  if (v == null || !Number.isFinite(v)) return DASH;
  if (v >= 1000) return `${(v / 1000).toFixed(v >= 10_000 ? 1 : 2)} s`;
  if (v >= 100) return `${v.toFixed(0)} ms`;
  if (v >= 10) return `${v.toFixed(1)} ms`;
  return `${v.toFixed(2)} ms`;
}

/** Axis ticks: shorter, no decimals where they add nothing. */
export const tickRate = (v: number): string => `${Math.round(v * 100)}%`;
export const tickMs = (v: number): string => (v === 0 ? '0' : v >= 1000 ? `${+(v / 1000).toFixed(2)} s` : `${+v.toFixed(v >= 10 ? 0 : 2)} ms`);
export const tickRps = (v: number): string => (v >= 1000 ? `${+(v / 1000).toFixed(1)}k` : `${+v.toFixed(v >= 10 ? 0 : 2)}`);

export function fmtClock(t: number | string): string {
  const d = new Date(t);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** "ok" | "warn" | "bad" | "idle": the colour of a success rate. */
export function rateClass(v: number | null | undefined): 'ok' | 'warn' | 'bad' | 'idle' {
  if (v == null) return 'idle';
  if (v >= 0.99) return 'ok';
  if (v >= 0.95) return 'warn';
  return 'bad';
}

/** The CSS class of an instance's registry status. */
export function statusClass(s: string): 'ok' | 'warn' | 'bad' | 'idle' {
  if (s === 'healthy') return 'ok';
  if (s === 'unhealthy' || s === 'critical') return 'bad';
  if (s === 'unknown') return 'idle';
  return 'warn';
}
