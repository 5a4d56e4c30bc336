/**
 * Prometheus metrics of our own (issue 16): counters, gauges and histograms with fixed label
 * names, whose series are small preallocated objects (`labels(...)` returns the same cell every
 * time: keep it, and an increment is one addition), and metrics read at scrape time from numbers
 * another object keeps (`scraped`). It replaces prom-client (docs/benchmarks.md, "Metrics without
 * prom-client"): a scrape of the proxy's metrics costs a fifth of the CPU (the proxy's event loop
 * stalls for it), the workers' sum is plain data, and RSS is ~1 MB lower (less than hoped: most of
 * a bare import's cost is paid by whichever dependency loads first).
 *
 * A registry's collection (`getMetricsAsJSON`) is plain data (`Family[]`), so that worker threads
 * can post theirs and the main thread can sum them (`aggregate`); exposition.ts writes it in the
 * Prometheus text format 0.0.4 or OpenMetrics 1.0.
 */
import { SkeinError } from '../core/errors.js';
import { render } from './exposition.js';

export type MetricType = 'counter' | 'gauge' | 'histogram';
/**
 * How the series of several worker threads combine into one (`aggregate`): summed, the first
 * worker's (a number of the whole process, which every thread reads alike), their minimum,
 * maximum or mean. A histogram is always summed.
 */
export type Aggregator = 'sum' | 'first' | 'min' | 'max' | 'average';

/** One series of a family: its label values in the order of `labelNames` (`null`: the label is left out). */
export interface Sample {
  readonly labels: readonly (string | null)[];
  /** A counter's or gauge's value; a histogram's sum of observations. */
  readonly value: number;
  /** Histograms: observations per bucket (not cumulative), one per bound and the last for +Inf. */
  readonly counts?: ArrayLike<number>;
}

/** A metric family as collected: plain data (structured-clone safe), what exposition.ts writes. */
export interface Family {
  /** The name as exposed in the text format (counters end with `_total`). */
  readonly name: string;
  readonly help: string;
  readonly type: MetricType;
  readonly labelNames: readonly string[];
  /** Histograms: the buckets' upper bounds, ascending, without +Inf. */
  readonly buckets?: readonly number[];
  readonly aggregator: Aggregator;
  readonly samples: readonly Sample[];
}

export interface MetricOptions<L extends string> {
  readonly name: string;
  readonly help: string;
  readonly labelNames?: readonly L[];
  /** Default `sum` (first for process_* metrics is up to the caller). */
  readonly aggregator?: Aggregator;
}

export interface HistogramOptions<L extends string> extends MetricOptions<L> {
  readonly buckets: readonly number[];
}

type Definition = Omit<Family, 'samples'>;

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function bad(name: string, what: string): SkeinError {
  return new SkeinError('SKEIN_E_BAD_METRIC', `metric "${name}": ${what}`, { field: name });
}

/** Checks a definition against the naming rules of Prometheus and OpenMetrics. */
function define(type: MetricType, o: MetricOptions<string> & { buckets?: readonly number[] }): Definition {
  const labelNames = [...(o.labelNames ?? [])];
  if (!NAME.test(o.name)) throw bad(o.name, 'a metric name is [a-zA-Z_:][a-zA-Z0-9_:]*');
  if (type === 'counter' && !o.name.endsWith('_total')) throw bad(o.name, 'a counter\'s name ends with "_total" (OpenMetrics names the family without it)');
  if (type === 'histogram' && /_(bucket|sum|count)$/.test(o.name)) throw bad(o.name, 'a histogram\'s name cannot end with _bucket, _sum or _count');
  const seen = new Set<string>();
  for (const l of labelNames) {
    if (!LABEL.test(l) || l.startsWith('__')) throw bad(o.name, `label name "${l}" is not [a-zA-Z_][a-zA-Z0-9_]* or starts with "__"`);
    if (type === 'histogram' && l === 'le') throw bad(o.name, 'a histogram cannot have a label "le" (its buckets use it)');
    if (seen.has(l)) throw bad(o.name, `label "${l}" is named twice`);
    seen.add(l);
  }
  const d: { -readonly [K in keyof Definition]: Definition[K] } = { name: o.name, help: o.help, type, labelNames, aggregator: o.aggregator ?? 'sum' };
  if (type === 'histogram') {
    const b = o.buckets ?? [];
    if (b.length === 0 || b.some((x, i) => !Number.isFinite(x) || (i > 0 && x <= b[i - 1]!))) throw bad(o.name, `buckets must be finite and strictly ascending, got [${b.join(', ')}]`);
    d.buckets = [...b];
  }
  return d;
}

/** The key of a series in its metric's map: the label values (one value is its own key). */
function keyOf(values: readonly string[]): string {
  return values.length === 1 ? values[0]! : values.join('\u0000');
}

/** A metric whose series are cells kept by their label values. */
abstract class Metric<L extends string, C extends { readonly labels: readonly string[] }> {
  protected readonly cells = new Map<string, C>();
  /** The one series of a metric without labels: exposed (0) from the start, as Prometheus expects. */
  private unlabelled: C | null;

  constructor(readonly definition: Definition) {
    this.unlabelled = definition.labelNames.length === 0 ? this.cell([]) : null;
  }

  get labelNames(): readonly L[] {
    return this.definition.labelNames as readonly L[];
  }

  /** The series of these label values (in the order of labelNames), created once: keep it. */
  labels(...values: string[]): C {
    const n = this.definition.labelNames.length;
    if (values.length !== n) throw bad(this.definition.name, `expects ${n} label value${n === 1 ? '' : 's'} (${this.definition.labelNames.join(', ')}), got ${values.length}`);
    if (n === 0) return this.unlabelled!;
    for (const v of values) if (typeof v !== 'string') throw bad(this.definition.name, `label values are strings, got ${typeof v}`);
    const k = keyOf(values);
    let c = this.cells.get(k);
    if (c === undefined) this.cells.set(k, (c = this.cell(values)));
    return c;
  }

  protected abstract cell(values: readonly string[]): C;
  protected abstract sample(c: C): Sample;

  collect(): Sample[] {
    const out: Sample[] = [];
    if (this.unlabelled !== null) out.push(this.sample(this.unlabelled));
    for (const c of this.cells.values()) out.push(this.sample(c));
    return out;
  }
}

export class CounterCell {
  value = 0;
  constructor(
    readonly labels: readonly string[],
    private readonly name: string,
  ) {}

  inc(n = 1): void {
    if (!(n >= 0)) throw bad(this.name, `a counter only goes up: inc(${n})`);
    this.value += n;
  }
}

export class Counter<L extends string = never> extends Metric<L, CounterCell> {
  protected cell(values: readonly string[]): CounterCell {
    return new CounterCell(values, this.definition.name);
  }
  protected sample(c: CounterCell): Sample {
    return { labels: c.labels, value: c.value };
  }
  /** Adds to the metric without labels. */
  inc(n = 1): void {
    this.labels().inc(n);
  }
}

export class GaugeCell {
  value = 0;
  constructor(readonly labels: readonly string[]) {}
  set(v: number): void {
    this.value = v;
  }
  inc(n = 1): void {
    this.value += n;
  }
  dec(n = 1): void {
    this.value -= n;
  }
}

export class Gauge<L extends string = never> extends Metric<L, GaugeCell> {
  protected cell(values: readonly string[]): GaugeCell {
    return new GaugeCell(values);
  }
  protected sample(c: GaugeCell): Sample {
    return { labels: c.labels, value: c.value };
  }
  /** Sets the metric without labels. */
  set(v: number): void {
    this.labels().set(v);
  }
}

export class HistogramCell {
  /** Per bucket (not cumulative); the last is +Inf. */
  readonly counts: Float64Array;
  sum = 0;
  constructor(
    readonly labels: readonly string[],
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length + 1);
  }
  observe(v: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > b[i]!) i++;
    this.counts[i]!++;
    this.sum += v;
  }
}

export class Histogram<L extends string = never> extends Metric<L, HistogramCell> {
  protected cell(values: readonly string[]): HistogramCell {
    return new HistogramCell(values, this.definition.buckets!);
  }
  protected sample(c: HistogramCell): Sample {
    return { labels: c.labels, value: c.sum, counts: c.counts };
  }
  /** Observes a value of the metric without labels. */
  observe(v: number): void {
    this.labels().observe(v);
  }
}

interface Source {
  readonly definition: Definition;
  read(): Iterable<Sample> | Promise<Iterable<Sample>>;
}

/** A set of metric families, collected and exposed together (one per proxy, one per control plane). */
export class Registry {
  private readonly sources: Source[] = [];
  private readonly names = new Set<string>();
  private readonly before: Array<() => void | Promise<void>> = [];

  private add(definition: Definition, read: Source['read']): void {
    if (this.names.has(definition.name)) throw bad(definition.name, 'registered twice in one registry');
    this.names.add(definition.name);
    this.sources.push({ definition, read });
  }

  counter<L extends string = never>(o: MetricOptions<L>): Counter<L> {
    const m = new Counter<L>(define('counter', o));
    this.add(m.definition, () => m.collect());
    return m;
  }

  gauge<L extends string = never>(o: MetricOptions<L>): Gauge<L> {
    const m = new Gauge<L>(define('gauge', o));
    this.add(m.definition, () => m.collect());
    return m;
  }

  histogram<L extends string = never>(o: HistogramOptions<L>): Histogram<L> {
    const m = new Histogram<L>(define('histogram', o));
    this.add(m.definition, () => m.collect());
    return m;
  }

  /**
   * A metric read at each collection from numbers kept elsewhere: `read` returns its series
   * (label values in the order of labelNames; histograms with their per-bucket `counts`).
   */
  scraped<L extends string = never>(type: MetricType, o: MetricOptions<L> & { buckets?: readonly number[] }, read: () => Iterable<Sample> | Promise<Iterable<Sample>>): void {
    this.add(define(type, o), read);
  }

  /** Runs before every collection, before any metric is read (e.g. one read of /proc for several metrics). */
  beforeCollect(fn: () => void | Promise<void>): void {
    this.before.push(fn);
  }

  /** Every family with its series now, in the order they were registered. */
  async getMetricsAsJSON(): Promise<Family[]> {
    for (const fn of this.before) await fn();
    const out: Family[] = [];
    for (const s of this.sources) {
      const read = s.read();
      const samples = read instanceof Promise ? await read : read;
      out.push({ ...s.definition, samples: Array.isArray(samples) ? (samples as Sample[]) : [...samples] });
    }
    return out;
  }

  /** Every family in the Prometheus text format (exposition.ts negotiates OpenMetrics). */
  async metrics(): Promise<string> {
    return render(await this.getMetricsAsJSON(), 'prometheus');
  }
}

/** The key of a series across workers: its label values, an absent label apart from "". */
function seriesKey(labels: readonly (string | null)[]): string {
  let k = '';
  for (const l of labels) k += l === null ? '\u0001' : `${l}\u0000`;
  return k;
}

/**
 * The families of several registries (worker threads) as one: each series combined by its
 * family's aggregator (`sum` adds counters, gauges and histograms' buckets and sums; `first`
 * keeps the first registry's; `min`, `max`, `average`; `omit` drops the family). Families appear
 * in the order first seen; a family whose type or labels differ between registries is an error.
 */
export function aggregate(perRegistry: readonly (readonly Family[])[]): Family[] {
  const byName = new Map<string, { family: Family; series: Map<string, { labels: readonly (string | null)[]; values: number[]; counts: number[][] }> }>();
  for (const families of perRegistry) {
    for (const f of families) {
      let entry = byName.get(f.name);
      if (entry === undefined) byName.set(f.name, (entry = { family: f, series: new Map() }));
      else if (entry.family.type !== f.type || entry.family.labelNames.join(',') !== f.labelNames.join(',') || (entry.family.buckets ?? []).join(',') !== (f.buckets ?? []).join(',')) {
        throw bad(f.name, `registries disagree on its type, labels or buckets (${entry.family.type}{${entry.family.labelNames.join(',')}} and ${f.type}{${f.labelNames.join(',')}})`);
      }
      for (const s of f.samples) {
        const k = seriesKey(s.labels);
        let acc = entry.series.get(k);
        if (acc === undefined) entry.series.set(k, (acc = { labels: s.labels, values: [], counts: [] }));
        acc.values.push(s.value);
        if (s.counts !== undefined) acc.counts.push(Array.from(s.counts));
      }
    }
  }
  const out: Family[] = [];
  for (const { family, series } of byName.values()) {
    const samples: Sample[] = [];
    for (const { labels, values, counts } of series.values()) {
      if (family.type === 'histogram') {
        const n = (family.buckets ?? []).length + 1;
        const sum = new Array<number>(n).fill(0);
        // A histogram is always summed: its buckets, its sum.
        for (const c of counts) for (let i = 0; i < n; i++) sum[i]! += c[i] ?? 0;
        samples.push({ labels, value: values.reduce((a, b) => a + b, 0), counts: sum });
        continue;
      }
      samples.push({ labels, value: combine(family.aggregator, values) });
    }
    out.push({ ...family, samples });
  }
  return out;
}

function combine(aggregator: Aggregator, values: readonly number[]): number {
  switch (aggregator) {
    case 'sum':
      return values.reduce((a, b) => a + b, 0);
    case 'first':
      return values[0]!;
    case 'min':
      return Math.min(...values);
    case 'max':
      return Math.max(...values);
    case 'average':
      return values.reduce((a, b) => a + b, 0) / values.length;
  }
}
