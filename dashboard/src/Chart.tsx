/**
 * A time-series chart (uPlot): x in seconds since the epoch, one or more y series, gaps where a
 * value is null (no requests in that step). The legend shows the values under the cursor, and the
 * newest values when the cursor is elsewhere. Colours come from the page's CSS custom properties,
 * so the chart follows the light or dark scheme (it is rebuilt when the scheme changes).
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { fmtClock, fmtMs, fmtRate, fmtRps, tickMs, tickRate, tickRps, DASH } from './format';

export interface ChartSeries {
  label: string;
  /** A CSS colour, or the name of a CSS custom property ("--c-p50"). */
  color: string;
}

export interface ChartProps {
  title: string;
  series: ChartSeries[];
  /** [times in seconds, ...one array per series]. */
  data: uPlot.AlignedData;
  /** Formats a y value for the legend. */
  format: (v: number) => string;
  /** Formats a y value for the axis ticks (default: `format`). */
  tick?: (v: number) => string;
  /** A fixed y range (e.g. 0..1 for a success rate); otherwise from 0 to the data's max. */
  yRange?: [number, number];
  height?: number;
  testId?: string;
  /** Shown over the plot while there is no point at all. */
  emptyText?: string;
  /** Spans the whole row of the chart grid. */
  wide?: boolean;
}

function cssColor(c: string): string {
  if (!c.startsWith('--')) return c;
  return getComputedStyle(document.documentElement).getPropertyValue(c).trim() || '#888';
}

/** The index of the newest non-null value of series `sidx` (-1: none). */
function lastIndex(data: uPlot.AlignedData, sidx: number): number {
  const ys = data[sidx] as ArrayLike<number | null | undefined> | undefined;
  if (ys === undefined) return -1;
  for (let i = ys.length - 1; i >= 0; i--) if (ys[i] != null) return i;
  return -1;
}

/** How many steps have a value in at least one series. */
function pointCount(data: uPlot.AlignedData): number {
  let n = 0;
  for (let i = 0; i < data[0].length; i++) if (data.slice(1).some((ys) => (ys as ArrayLike<number | null | undefined>)[i] != null)) n++;
  return n;
}

/** The largest value of any series (null: none). */
function maxValue(data: uPlot.AlignedData): number | null {
  let max: number | null = null;
  for (const ys of data.slice(1)) for (const v of Array.from(ys as ArrayLike<number | null | undefined>)) if (v != null && (max === null || v > max)) max = v;
  return max;
}

/** Clock ticks: with seconds when the ticks are less than a minute apart. */
function timeTicks(vals: number[], incr: number): string[] {
  return vals.map((v) => (v == null ? '' : incr < 60 ? fmtClock(v * 1000) : fmtClock(v * 1000).slice(0, 5)));
}

/** Tick steps of the time axis, in seconds (uPlot's own jump from 1 to 5 minutes). */
const TIME_INCRS = [1, 2, 5, 10, 15, 20, 30, 60, 120, 180, 300, 600, 900, 1800, 3600];

/** Room per time tick: "14:35:20" needs more than "14:35". */
function timeSpace(_u: uPlot, _axisIdx: number, min: number, max: number, plotDim: number): number {
  const perPx = (max - min) / Math.max(1, plotDim);
  return perPx * 48 < 60 ? 70 : 48;
}

/** A y axis as wide as its longest tick label (uPlot's fixed default cuts "200 ms"). */
function axisSize(u: uPlot, values: string[] | null, axisIdx: number, cycleNum: number): number {
  const axis = u.axes[axisIdx]!;
  if (cycleNum > 1) return (axis as unknown as { _size: number })._size;
  let size = (axis.ticks?.size ?? 10) + (axis.gap ?? 5) + 4;
  const longest = (values ?? []).reduce((a, v) => (String(v).length > a.length ? String(v) : a), '');
  if (longest !== '') {
    u.ctx.font = (axis.font as unknown as [string])[0] ?? u.ctx.font;
    size += u.ctx.measureText(longest).width / devicePixelRatio;
  }
  return Math.ceil(size);
}

function useColorScheme(): string {
  const query = '(prefers-color-scheme: dark)';
  const [dark, setDark] = useState(() => matchMedia(query).matches);
  useEffect(() => {
    const m = matchMedia(query);
    const on = () => setDark(m.matches);
    m.addEventListener('change', on);
    return () => m.removeEventListener('change', on);
  }, []);
  return dark ? 'dark' : 'light';
}

export function Chart(props: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const dataRef = useRef(props.data);
  dataRef.current = props.data;
  const height = props.height ?? 170;
  const scheme = useColorScheme();

  useEffect(() => {
    const el = box.current;
    if (el === null) return;
    const fmt = props.format;
    const tick = props.tick ?? props.format;
    const axisStroke = cssColor('--fg-muted');
    const grid = { stroke: cssColor('--grid'), width: 1 };
    const font = `11px ${getComputedStyle(document.body).fontFamily}`;
    // With the cursor off the plot (idx null) the legend shows the newest value of each series.
    const legendValue = (fmtv: (v: number) => string) => (u: uPlot, v: number | null, sidx: number, idx: number | null) => {
      if (idx == null) {
        const i = lastIndex(u.data, sidx);
        const last = i < 0 ? null : (u.data[sidx]![i] ?? null);
        return last == null ? DASH : fmtv(last);
      }
      return v == null ? DASH : fmtv(v);
    };
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height,
      cursor: { drag: { x: false, y: false }, points: { size: 6 } },
      legend: { show: true, live: true },
      scales: {
        x: { time: true },
        y: props.yRange === undefined ? { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } : { range: props.yRange },
      },
      axes: [
        { stroke: axisStroke, font, grid, ticks: grid, incrs: TIME_INCRS, space: timeSpace, values: (_u, vals, _i, _space, incr) => timeTicks(vals, incr) },
        { stroke: axisStroke, font, grid, ticks: grid, size: axisSize, values: (_u, vals) => vals.map((v) => (v == null ? '' : tick(v))) },
      ],
      series: [
        {
          label: 'time',
          value: (u: uPlot, v: number | null, _s: number, idx: number | null) => {
            if (idx == null) return u.data[0].length === 0 ? DASH : 'now';
            return v == null ? DASH : fmtClock(v * 1000);
          },
        },
        ...props.series.map((s) => ({
          label: s.label,
          stroke: cssColor(s.color),
          width: 1.75,
          spanGaps: false,
          // uPlot's default: dots only where the points are far apart (a lone point is visible).
          value: legendValue(fmt),
        })),
      ],
    };
    const u = new uPlot(opts, dataRef.current, el);
    plot.current = u;
    const ro = new ResizeObserver(() => {
      const w = el.clientWidth;
      if (w > 0 && Math.abs(w - u.width) > 1) u.setSize({ width: w, height });
    });
    ro.observe(el);
    return () => {
      ro.disconnect();
      u.destroy();
      plot.current = null;
    };
    // The chart is built once per shape and colour scheme; data changes go through setData below.
  }, [props.series.map((s) => s.label).join(','), height, props.yRange?.join(','), scheme]);

  useEffect(() => {
    const u = plot.current;
    if (u === null) return;
    u.setData(props.data);
    // Refresh the legend's "newest" values when the cursor is off the plot.
    if (u.cursor.idx == null) u.setLegend({ idx: null as unknown as number });
  }, [props.data]);

  const points = pointCount(props.data);
  return (
    <figure class={`chart${props.wide === true ? ' wide' : ''}`} data-testid={props.testId} data-points={points} data-max={maxValue(props.data) ?? ''}>
      <figcaption>{props.title}</figcaption>
      <div class="chart-body">
        <div ref={box} class="chart-plot" />
        {points === 0 && <div class="chart-empty">{props.emptyText ?? 'No data yet'}</div>}
      </div>
    </figure>
  );
}

/** Requests per second, success rate and p50/p95/p99 latency of one series of points (a service's or the mesh's). */
export function SignalCharts({ data, testIdPrefix, height }: { data: { rps: uPlot.AlignedData; success: uPlot.AlignedData; latency: uPlot.AlignedData }; testIdPrefix: string; height?: number }) {
  const h = height === undefined ? {} : { height };
  return (
    <div class="charts">
      <Chart title="Requests per second" series={[{ label: 'RPS', color: '--c-rps' }]} data={data.rps} format={fmtRps} tick={tickRps} testId={`${testIdPrefix}-rps`} {...h} />
      <Chart title="Success rate" series={[{ label: 'success', color: '--c-ok' }]} data={data.success} format={fmtRate} tick={tickRate} yRange={[0, 1]} testId={`${testIdPrefix}-success`} {...h} />
      <Chart
        title="Latency"
        series={[
          { label: 'p50', color: '--c-p50' },
          { label: 'p95', color: '--c-p95' },
          { label: 'p99', color: '--c-p99' },
        ]}
        data={data.latency}
        format={fmtMs}
        tick={tickMs}
        testId={`${testIdPrefix}-latency`}
        {...h}
        wide
      />
    </div>
  );
}
