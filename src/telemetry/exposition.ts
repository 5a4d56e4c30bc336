/**
 * Prometheus exposition shared by the proxy and the control plane: a registry's families (prom.ts)
 * written in the Prometheus text format 0.0.4, or in OpenMetrics 1.0 when the scraper's Accept
 * header names application/openmetrics-text (Prometheus asks for it first).
 *
 * The two differ in little: OpenMetrics names a counter's family without its `_total` (the sample
 * keeps it), escapes `"` in HELP too, and ends with `# EOF`. No `_created` samples are written.
 * Label values are escaped (`\\`, `\"`, `\n`) in both; a label whose value is `null` is left out.
 */
import type { Family, Registry, Sample } from './prom.js';

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
export const OPENMETRICS_CONTENT_TYPE = 'application/openmetrics-text; version=1.0.0; charset=utf-8';

export type ExpositionFormat = 'prometheus' | 'openmetrics';

/** A label value (and OpenMetrics HELP) escaped: backslash, double quote, newline. */
function escapeLabelValue(v: string): string {
  return /[\\"\n]/.test(v) ? v.replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`)) : v;
}

/** HELP text in the Prometheus text format: backslash and newline escaped (a quote is not). */
function escapeHelp(v: string): string {
  return /[\\\n]/.test(v) ? v.replace(/[\\\n]/g, (c) => (c === '\n' ? '\\n' : '\\\\')) : v;
}

/** A sample value as both formats write it. */
function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** `a="x",b="y"` (labels with a null value left out), or "". */
function labelPairs(names: readonly string[], values: readonly (string | null)[]): string {
  let s = '';
  for (let i = 0; i < names.length; i++) {
    const v = values[i];
    if (v === null || v === undefined) continue;
    s += `${s === '' ? '' : ','}${names[i]}="${escapeLabelValue(v)}"`;
  }
  return s;
}

/** The lines of one histogram series: each label set written once, `le` appended to it. */
function histogramLines(f: Family, s: Sample, pairs: string): string {
  const bounds = f.buckets ?? [];
  const counts = s.counts ?? [];
  const open = `${f.name}_bucket{${pairs === '' ? '' : `${pairs},`}le="`;
  let out = '';
  let cum = 0;
  for (let i = 0; i < bounds.length; i++) {
    cum += counts[i] ?? 0;
    out += `${open}${formatValue(bounds[i]!)}"} ${formatValue(cum)}\n`;
  }
  cum += counts[bounds.length] ?? 0;
  const set = pairs === '' ? '' : `{${pairs}}`;
  return `${out}${open}+Inf"} ${formatValue(cum)}\n${f.name}_sum${set} ${formatValue(s.value)}\n${f.name}_count${set} ${formatValue(cum)}\n`;
}

/** The families in the text format or OpenMetrics. */
export function render(families: readonly Family[], format: ExpositionFormat): string {
  const om = format === 'openmetrics';
  let out = '';
  for (let i = 0; i < families.length; i++) {
    const f = families[i]!;
    // OpenMetrics: a counter family is named without _total, its samples with it.
    const family = om && f.type === 'counter' ? f.name.slice(0, -'_total'.length) : f.name;
    if (i > 0 && !om) out += '\n';
    out += `# HELP ${family} ${om ? escapeLabelValue(f.help) : escapeHelp(f.help)}\n# TYPE ${family} ${f.type}\n`;
    for (const s of f.samples) {
      const pairs = labelPairs(f.labelNames, s.labels);
      if (f.type === 'histogram') out += histogramLines(f, s, pairs);
      else out += `${f.name}${pairs === '' ? '' : `{${pairs}}`} ${formatValue(s.value)}\n`;
    }
  }
  return om ? `${out}# EOF\n` : out;
}

/** The format a scraper's Accept header asks for: OpenMetrics when it names it, else the text format. */
function negotiate(accept: string | undefined): ExpositionFormat {
  return accept !== undefined && accept.includes('application/openmetrics-text') ? 'openmetrics' : 'prometheus';
}

/** A registry's families (or families already collected) in the format the scraper asked for. */
export async function exposition(source: Registry | readonly Family[], accept: string | undefined): Promise<{ contentType: string; text: string }> {
  const families = Array.isArray(source) ? (source as readonly Family[]) : await (source as Registry).getMetricsAsJSON();
  const format = negotiate(accept);
  return { contentType: format === 'openmetrics' ? OPENMETRICS_CONTENT_TYPE : PROMETHEUS_CONTENT_TYPE, text: render(families, format) };
}
