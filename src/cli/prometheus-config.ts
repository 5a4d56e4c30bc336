/**
 * `skein prometheus-config`: a Prometheus scrape configuration for a Skein mesh. Prometheus
 * discovers what to scrape from the control plane (`GET /v1/prometheus/targets`, http_sd): every
 * proxy's admin server (job skein-proxy) and the control plane itself (job skein-control). With
 * --file-sd the targets are fetched once and written to a file_sd file instead, for a Prometheus
 * that cannot reach the control plane's API or should not depend on it.
 */
import { rename, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { Document } from 'yaml';
import { formatDuration } from '../core/duration.js';
import { SkeinError } from '../core/errors.js';
import { call, controlOption, controlUrl, print } from './common.js';
import { durationFlag } from './flags.js';

export const TARGETS_PATH = '/v1/prometheus/targets';

/** One target group of Prometheus http_sd / file_sd: https://prometheus.io/docs/prometheus/latest/http_sd/ */
export interface TargetGroup {
  targets: string[];
  labels?: Record<string, string>;
}

export interface ConfigOptions {
  /** The control plane's base URL (http://host:port). */
  control: string;
  /** Scrape interval in milliseconds. */
  intervalMs: number;
  /** With a file: file_sd_configs reading it (absolute path) instead of http_sd_configs. */
  fileSd?: string;
}

/** A Prometheus duration (integer with one unit: 15s, 1m, 500ms) from milliseconds. */
export function promDuration(ms: number): string {
  return formatDuration(Math.max(1, Math.round(ms)));
}

/** The scrape configuration as YAML text, with a comment on how to use it. */
export function prometheusConfig(o: ConfigOptions): string {
  const interval = promDuration(o.intervalMs);
  // Targets may come and go (replicas scale, proxies restart): rediscover them often.
  const refresh = promDuration(Math.min(Math.max(o.intervalMs, 5000), 30_000));
  const job: Record<string, unknown> = {
    // The job label comes from the targets (skein-proxy, skein-control); this name is the fallback.
    job_name: 'skein',
    scrape_interval: interval,
    scrape_timeout: promDuration(Math.min(o.intervalMs, 10_000)),
    metrics_path: '/metrics',
  };
  if (o.fileSd === undefined) job['http_sd_configs'] = [{ url: `${controlUrl(o.control)}${TARGETS_PATH}`, refresh_interval: refresh }];
  else job['file_sd_configs'] = [{ files: [o.fileSd], refresh_interval: refresh }];
  const doc = new Document({
    global: { scrape_interval: interval, evaluation_interval: interval },
    scrape_configs: [job],
  });
  const how =
    o.fileSd === undefined
      ? [
          ` Prometheus discovers the targets from the control plane at ${controlUrl(o.control)}${TARGETS_PATH}`,
          ' (http_sd): every proxy admin server (job="skein-proxy") and the control plane (job="skein-control").',
        ]
      : [
          ` The targets were fetched once from ${controlUrl(o.control)}${TARGETS_PATH} and written to`,
          ` ${o.fileSd} (file_sd); Prometheus rereads the file when it changes. Run this command again`,
          ' to refresh it when proxies come or go.',
        ];
  doc.commentBefore = [
    ' Prometheus scrape configuration for a Skein mesh (made by `skein prometheus-config`).',
    ...how,
    ' Use it:',
    '   skein prometheus-config > prometheus.yml',
    '   prometheus --config.file=prometheus.yml',
    ' or copy the job under scrape_configs into an existing configuration.',
    ' Then import docs/grafana/skein-dashboard.json into Grafana (see docs/prometheus.md).',
  ].join('\n');
  return doc.toString({ lineWidth: 0 });
}

/** Checks an http_sd answer: an array of {targets: string[], labels?: {string: string}}. */
export function checkTargets(body: unknown): TargetGroup[] {
  const bad = (why: string): never => {
    throw new SkeinError('SKEIN_E_INTERNAL', `the control plane's ${TARGETS_PATH} is not a list of target groups: ${why}`);
  };
  if (!Array.isArray(body)) return bad('not an array');
  return body.map((g: unknown, i) => {
    if (g === null || typeof g !== 'object') return bad(`[${i}] is not an object`);
    const { targets, labels } = g as { targets?: unknown; labels?: unknown };
    if (!Array.isArray(targets) || !targets.every((t) => typeof t === 'string')) return bad(`[${i}].targets is not a list of host:port`);
    if (labels !== undefined && (labels === null || typeof labels !== 'object' || !Object.values(labels).every((v) => typeof v === 'string'))) return bad(`[${i}].labels`);
    return labels === undefined ? { targets } : { targets, labels: labels as Record<string, string> };
  });
}

/** Writes file_sd JSON atomically (Prometheus watches the file and must never read half of it). */
export async function writeFileSd(file: string, groups: TargetGroup[]): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    await writeFile(tmp, JSON.stringify(groups, null, 2) + '\n');
    await rename(tmp, file);
  } catch (e) {
    throw new SkeinError('SKEIN_E_FILE', `cannot write ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { field: '--file-sd' });
  }
}

export function prometheusConfigCommand(): Command {
  return new Command('prometheus-config')
    .description('print a Prometheus scrape configuration for the mesh: every proxy and the control plane, discovered from the control plane')
    .addOption(new Option('-i, --interval <duration>', 'scrape and evaluation interval (whole seconds, at least 1s)').argParser(durationFlag('--interval')).default(15_000, '15s'))
    .option('--file-sd <file>', 'fetch the targets once, write them to FILE (file_sd JSON) and use file_sd_configs instead of http_sd_configs')
    .addOption(controlOption())
    .action(async (o: { control: string; interval: number; fileSd?: string }) => {
      if (o.interval < 1000) throw new SkeinError('SKEIN_E_USAGE', `--interval must be at least 1s, got ${promDuration(o.interval)}`, { field: '--interval' });
      if (o.interval % 1000 !== 0) throw new SkeinError('SKEIN_E_USAGE', `--interval must be whole seconds, got ${promDuration(o.interval)}`, { field: '--interval' });
      const control = controlUrl(o.control);
      if (o.fileSd === undefined) return print(prometheusConfig({ control, intervalMs: o.interval }));
      const file = resolve(o.fileSd);
      const groups = checkTargets(await call(control, 'GET', TARGETS_PATH));
      await writeFileSd(file, groups);
      process.stderr.write(`wrote ${groups.reduce((n, g) => n + g.targets.length, 0)} target(s) to ${file}\n`);
      print(prometheusConfig({ control, intervalMs: o.interval, fileSd: file }));
    });
}
