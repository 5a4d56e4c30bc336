/** CLI commands that talk to the registry: register, deregister, heartbeat, apply, services, endpoints, events. */
import { Command, Option } from 'commander';
import { SkeinError } from '../core/errors.js';
import { call, controlOption, outputOption, print, printable, printJson, readText, table } from './common.js';
import { intFlag } from './flags.js';
import { MESH_EVENT_TYPES } from '../control/signals/events.js';

interface Common {
  control: string;
  output: 'table' | 'json';
}

function collectLabel(v: string, prev: Record<string, string>): Record<string, string> {
  const i = v.indexOf('=');
  if (i <= 0) throw new SkeinError('SKEIN_E_USAGE', `--label must be KEY=VALUE, got "${v}"`, { field: '--label' });
  return { ...prev, [v.slice(0, i)]: v.slice(i + 1) };
}

function intArg(flag: string) {
  return (v: string) => {
    if (!/^-?\d+$/.test(v)) throw new SkeinError('SKEIN_E_USAGE', `${flag} must be an integer, got "${v}"`, { field: flag });
    return Number(v);
  };
}

const ago = (iso: string) => {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
};

export function registerCommand(): Command {
  return new Command('register')
    .description('register (or update) an instance of a service')
    .argument('<service>', 'service name (a DNS label)')
    .argument('<id>', 'instance id, unique within the service')
    .requiredOption('--address <ip>', 'IP address the instance listens on')
    .requiredOption('--port <port>', 'port the instance listens on', intArg('--port'))
    .option('--weight <n>', 'relative share of traffic', intArg('--weight'))
    .option('--zone <zone>', 'failure domain')
    .option('--version <version>', 'workload version')
    .option('--label <key=value>', 'a label (repeatable)', collectLabel, {})
    .addOption(new Option('--check <type>', 'health check type').choices(['http', 'tcp', 'ttl']))
    .option('--check-path <path>', 'HTTP check path')
    .option('--interval <duration>', 'check interval (http, tcp)')
    .option('--timeout <duration>', 'check timeout (http, tcp)')
    .option('--ttl <duration>', 'TTL of heartbeats (ttl checks)')
    .addOption(controlOption())
    .addOption(outputOption())
    .action(async (service: string, id: string, o: Common & Record<string, any>) => {
      const body: Record<string, unknown> = { address: o.address, port: o.port };
      for (const k of ['weight', 'zone', 'version'] as const) if (o[k] !== undefined) body[k] = o[k];
      if (Object.keys(o.label).length > 0) body.labels = o.label;
      const checkFlags = { path: o.checkPath, interval: o.interval, timeout: o.timeout, ttl: o.ttl };
      if (o.check === undefined && Object.values(checkFlags).some((v) => v !== undefined)) {
        throw new SkeinError('SKEIN_E_USAGE', '--check-path, --interval, --timeout and --ttl need --check', { field: '--check' });
      }
      if (o.check !== undefined) {
        const check: Record<string, unknown> = { type: o.check };
        for (const [k, v] of Object.entries(checkFlags)) if (v !== undefined) check[k] = v;
        body.check = check;
      }
      const r = await call(o.control, 'PUT', `/v1/services/${encodeURIComponent(service)}/instances/${encodeURIComponent(id)}`, body);
      if (o.output === 'json') printJson(r);
      else print(`${r.created ? 'registered' : r.changed ? 'updated' : 'unchanged'} ${service}/${id} at ${r.instance.address}:${r.instance.port} (${r.instance.status}, revision ${r.revision})\n`);
    });
}

export function deregisterCommand(): Command {
  return new Command('deregister')
    .description('remove an instance from the registry')
    .argument('<service>')
    .argument('<id>')
    .addOption(controlOption())
    .addOption(outputOption())
    .action(async (service: string, id: string, o: Common) => {
      const r = await call(o.control, 'DELETE', `/v1/services/${encodeURIComponent(service)}/instances/${encodeURIComponent(id)}`);
      if (o.output === 'json') printJson(r);
      else print(`deregistered ${service}/${id} (revision ${r.revision})\n`);
    });
}

export function heartbeatCommand(): Command {
  return new Command('heartbeat')
    .description('send a TTL heartbeat for an instance')
    .argument('<service>')
    .argument('<id>')
    .addOption(new Option('--status <status>', 'report the instance healthy or unhealthy').choices(['healthy', 'unhealthy']))
    .option('--reason <text>', 'why (shown in events)')
    .addOption(controlOption())
    .addOption(outputOption())
    .action(async (service: string, id: string, o: Common & { status?: string; reason?: string }) => {
      const body: Record<string, string> = {};
      if (o.status !== undefined) body.status = o.status;
      if (o.reason !== undefined) body.reason = o.reason;
      const r = await call(o.control, 'PUT', `/v1/services/${encodeURIComponent(service)}/instances/${encodeURIComponent(id)}/heartbeat`, body);
      if (o.output === 'json') printJson(r);
      else print(`${service}/${id} ${r.instance.status}; next heartbeat due within ${Math.round((r.ttlRemainingMs ?? 0) / 1000)}s\n`);
    });
}

export function applyCommand(): Command {
  return new Command('apply')
    .description('create or update the Services, Routes, AuthorizationPolicies and Instances of a resource file (YAML or JSON); a mesh file (kind: Mesh) goes to the skein up running it, which rolls out what changed')
    .requiredOption('-f, --file <file>', 'resource file ("-" for standard input)')
    .addOption(controlOption())
    .addOption(outputOption())
    .action(async (o: Common & { file: string }) => {
      const text = await readText(o.file);
      // A mesh file goes to the skein up that runs it: a rollout of what changed (docs/deployments.md).
      if (/^kind:[ \t]*["']?Mesh["']?[ \t]*(#.*)?$/m.test(text)) {
        const { applyMeshFile } = await import('./rollout.js');
        return applyMeshFile(o, text, o.file);
      }
      // Validate the whole file before the first write: a bad file changes nothing.
      const { loadResourceFile } = await import('../api/parse.js');
      const { resourceKey } = await import('../api/types.js');
      const items = loadResourceFile(text, o.file);
      const results: Array<{ kind: string; name: string; result: string }> = [];
      // Services first, so their defaults apply to the instances and their routes and policies follow.
      const order = ['Service', 'Route', 'AuthorizationPolicy', 'Instance'];
      const ordered = [...items].sort((a, b) => order.indexOf(a.resource.kind) - order.indexOf(b.resource.kind));
      for (const { resource: r, raw } of ordered) {
        const path =
          r.kind === 'Service'
            ? `/v1/services/${r.name}`
            : r.kind === 'Route'
              ? `/v1/services/${r.service}/routes/${r.name}`
              : r.kind === 'AuthorizationPolicy'
                ? `/v1/services/${r.service}/policies/${r.name}`
                : `/v1/services/${r.service}/instances/${encodeURIComponent(r.id)}`;
        const res = await call(o.control, 'PUT', path, raw);
        results.push({ kind: r.kind, name: resourceKey(r).replace(/^[A-Za-z]+\//, ''), result: res.created ? 'created' : res.changed ? 'updated' : 'unchanged' });
      }
      if (o.output === 'json') printJson({ applied: results });
      else print(results.map((x) => `${x.kind.toLowerCase()}/${x.name} ${x.result}\n`).join(''));
    });
}

export function servicesCommand(): Command {
  return new Command('services')
    .description('list the services in the registry')
    .addOption(controlOption())
    .addOption(outputOption())
    .action(async (o: Common) => {
      const r = await call(o.control, 'GET', '/v1/services');
      if (o.output === 'json') return printJson(r);
      if (r.services.length === 0) return print('no services registered\n');
      print(table(['SERVICE', 'HEALTHY', 'INSTANCES', 'REVISION'], r.services.map((s: any) => [s.name, s.healthy, s.instances, s.revision])));
    });
}

export function endpointsCommand(): Command {
  return new Command('endpoints')
    .description("list a service's instances (healthy ones; --all for every one with its status)")
    .argument('<service>')
    .option('-a, --all', 'include unhealthy instances')
    .addOption(controlOption())
    .addOption(outputOption())
    .action(async (service: string, o: Common & { all?: boolean }) => {
      const r = await call(o.control, 'GET', `/v1/services/${encodeURIComponent(service)}/instances${o.all ? '?all=true' : ''}`);
      if (o.output === 'json') return printJson(r);
      if (r.instances.length === 0) return print(`no ${o.all ? '' : 'healthy '}instances of ${service}\n`);
      print(
        table(
          ['ID', 'ADDRESS', 'WEIGHT', 'ZONE', 'VERSION', 'STATUS', 'SINCE', 'REASON'],
          r.instances.map((i: any) => [i.id, `${i.address.includes(':') ? `[${i.address}]` : i.address}:${i.port}`, i.weight, i.zone || '-', i.version || '-', i.status, ago(i.since), i.reason]),
        ),
      );
    });
}

export function eventsCommand(): Command {
  return new Command('events')
    .description('recent mesh events, oldest first: health changes, ejections and returns, breakers, active checks, panic mode, body stalls, scaling, proxies')
    .argument('[service]', 'only the events of this service')
    .option('--limit <n>', 'how many events (the newest), 1 to 1000', intFlag('--limit', 1, 1000), 50)
    .option('-t, --type <types>', `only events of these types (comma-separated): ${MESH_EVENT_TYPES.join(', ')}`)
    .addOption(controlOption())
    .addOption(outputOption())
    .action(async (service: string | undefined, o: Common & { limit: number; type?: string }) => {
      const params = new URLSearchParams({ limit: String(o.limit) });
      if (service !== undefined) params.set('service', service);
      if (o.type !== undefined) params.set('type', o.type);
      const r = await call(o.control, 'GET', `/v1/events?${params}`);
      if (o.output === 'json') return printJson(r);
      if (r.events.length === 0) return print(`no ${o.type === undefined ? '' : `${o.type} `}events${service === undefined ? '' : ` of ${service}`}\n`);
      // A health event without a message (an older control plane) reads "from -> to: reason".
      const message = (e: any) =>
        typeof e.message === 'string' && e.message !== '' ? e.message : e.from !== undefined ? `${e.from} -> ${e.to}${e.reason ? `: ${e.reason}` : ''}` : '-';
      print(
        table(
          ['TIME', 'TYPE', 'SERVICE', 'INSTANCE', 'MESSAGE'],
          r.events.map((e: any) => [e.time, e.type ?? 'health', e.service ?? '-', e.id ?? '-', message(e)].map(printable)),
        ),
      );
    });
}
