/** `skein watch SERVICE`: follows the watch stream and prints each change as it happens. */
import { Command } from 'commander';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { SkeinError } from '../core/errors.js';
import { authHeaders, controlOption, controlUrl, outputOption, print } from './common.js';

export function watchCommand(): Command {
  return new Command('watch')
    .description('follow changes to a service (or to all with --all-services): a snapshot, then each add, update and remove')
    .argument('[service]')
    .option('--all-services', 'watch every service')
    .option('--since <revision>', 'resume after this revision (no snapshot while the history holds it)')
    .option('--count <n>', 'exit after printing this many messages (the snapshot counts as one)')
    .addOption(controlOption())
    .addOption(outputOption())
    .action(async (service: string | undefined, o: { control: string; output: string; allServices?: boolean; since?: string; count?: string }) => {
      if (service === undefined && !o.allServices) throw new SkeinError('SKEIN_E_USAGE', 'name a service, or pass --all-services', { field: 'service' });
      if (o.since !== undefined && !/^\d+$/.test(o.since)) throw new SkeinError('SKEIN_E_USAGE', `--since must be a revision number, got "${o.since}"`, { field: '--since' });
      if (o.count !== undefined && !/^[1-9]\d*$/.test(o.count)) throw new SkeinError('SKEIN_E_USAGE', `--count must be a positive integer, got "${o.count}"`, { field: '--count' });
      const params = new URLSearchParams();
      if (service !== undefined) params.set('service', service);
      if (o.since !== undefined) params.set('since', o.since);
      const base = controlUrl(o.control);
      let res: Response;
      try {
        res = await fetch(`${base}/v1/watch?${params}`, { headers: await authHeaders(base) });
      } catch (e) {
        const cause = (e as { cause?: { code?: string } }).cause;
        throw new SkeinError('SKEIN_E_CONTROL_UNREACHABLE', `cannot reach the control plane at ${base}: ${cause?.code ?? (e as Error).message}`);
      }
      if (!res.ok || res.body === null) {
        const b = (await res.json().catch(() => ({}))) as { code?: string; message?: string };
        throw new SkeinError((b.code as never) ?? 'SKEIN_E_INTERNAL', b.message ?? `watch failed with ${res.status}`);
      }
      let left = o.count === undefined ? Infinity : Number(o.count);
      const rl = createInterface({ input: Readable.fromWeb(res.body as never) });
      for await (const line of rl) {
        if (line === '') continue;
        const m = JSON.parse(line) as any;
        if (m.type === 'ping') continue;
        if (o.output === 'json') print(line + '\n');
        else print(describe(m));
        if (--left <= 0) break;
      }
      rl.close();
      process.exit(0);
    });
}

function describe(m: any): string {
  const at = `[${m.revision}]`;
  if (m.type === 'snapshot') {
    const head = `${at} snapshot of ${m.service ?? 'all services'}: ${m.instances.length} instance(s)\n`;
    return head + m.instances.map((i: any) => `    ${i.service}/${i.id} ${i.address}:${i.port} ${i.status}\n`).join('');
  }
  if (m.type === 'service') return `${at} service ${m.service} ${m.definition === null ? 'definition removed' : 'defined'}\n`;
  const i = m.instance;
  return `${at} ${m.type.padEnd(6)} ${i.service}/${i.id} ${i.address}:${i.port} ${i.status}${m.type === 'update' ? ` (${i.reason})` : ''}\n`;
}
