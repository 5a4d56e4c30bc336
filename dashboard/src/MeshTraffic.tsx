/** The overview's charts: the whole mesh's requests per second, success rate and latency over the last 5 minutes. */
import { useMemo } from 'preact/hooks';
import { Chart } from './Chart';
import { fmtMs, fmtRate, fmtRps, tickMs, tickRate, tickRps } from './format';
import { useSeries } from './series';
import { seriesData } from './ServiceDetail';

export function MeshTraffic({ epoch, tick }: { epoch: number; tick: string | null }) {
  const series = useSeries(null, epoch, tick);
  const data = useMemo(() => seriesData(series.points), [series.points]);
  return (
    <section class="panel" aria-labelledby="traffic-h" data-testid="mesh-traffic">
      <h2 id="traffic-h">
        Traffic <span class="muted small">all services, last 5 minutes</span>
      </h2>
      <div class="charts">
        <Chart title="Requests per second" series={[{ label: 'RPS', color: '--c-rps' }]} data={data.rps} format={fmtRps} tick={tickRps} testId="mesh-chart-rps" height={150} />
        <Chart title="Success rate" series={[{ label: 'success', color: '--c-ok' }]} data={data.success} format={fmtRate} tick={tickRate} yRange={[0, 1]} testId="mesh-chart-success" height={150} />
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
          testId="mesh-chart-latency"
          height={150}
          wide
        />
      </div>
      {series.error !== null && <p class="note">History unavailable: {series.error}</p>}
    </section>
  );
}
