/** The overview's charts: the whole mesh's requests per second, success rate and latency over the last 5 minutes. */
import { useMemo } from 'preact/hooks';
import { SignalCharts } from './Chart';
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
      <SignalCharts data={data} testIdPrefix="mesh-chart" height={150} />
      {series.error !== null && <p class="note">History unavailable: {series.error}</p>}
    </section>
  );
}
