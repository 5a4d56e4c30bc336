/**
 * `skein audit [FILE]`: reads an audit log (the lines `--audit-log` writes, src/api/audit.ts),
 * filters it and prints it as a table or as the JSON lines themselves; `--follow` keeps reading
 * what is appended (like `tail -f`, from the start of the file). Without FILE it reads stdin
 * (`skein proxy --audit-log stdout | skein audit --decision deny`).
 */
import { Command, Option } from 'commander';
import { open } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { AUDIT_DECISIONS, AUDIT_KINDS, type AuditDecision, type AuditKind, type AuditRecord } from '../api/audit.js';
import { SkeinError } from '../core/errors.js';
import { outputOption, print, printable, table, type OutputFormat } from './common.js';
import { durationFlag } from './flags.js';

export interface AuditFilter {
  readonly decision?: AuditDecision;
  readonly kind?: AuditKind;
  readonly service?: string;
  /** Only records at or after this time (ms since the epoch). */
  readonly since?: number;
}

/** Whether a record passes the filter. */
export function matches(r: AuditRecord, f: AuditFilter): boolean {
  if (f.decision !== undefined && r.decision !== f.decision) return false;
  if (f.kind !== undefined && r.kind !== f.kind) return false;
  if (f.service !== undefined && r.service !== f.service) return false;
  if (f.since !== undefined && !(Date.parse(r.time) >= f.since)) return false;
  return true;
}

/** A line of an audit log as a record; null when it is not one (a line of another log, a torn line). */
export function parseAuditLine(line: string): AuditRecord | null {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null) return null;
  const r = v as Partial<AuditRecord>;
  if (typeof r.time !== 'string' || !(AUDIT_KINDS as readonly unknown[]).includes(r.kind)) return null;
  return r as AuditRecord;
}

export const AUDIT_TABLE_HEADERS = ['TIME', 'WHAT', 'SERVICE', 'SOURCE', 'ACTOR', 'REQUEST', 'POLICY', 'REASON'];

/** One record as a table row. */
export function auditRow(r: AuditRecord): string[] {
  const what = r.kind === 'authz' ? (r.decision ?? '') : (r.event ?? '');
  const source = r.sourceIdentity ?? r.sourceAddress ?? '';
  const actor = r.actor === null ? '' : `${r.actor}${r.scope === null ? '' : ` (${r.scope})`}`;
  let request = r.method === null ? '' : `${r.method} ${r.rawPath ?? ''}`;
  if (r.path !== null && r.path !== r.rawPath) request += ` -> ${r.path}`;
  const policy = r.policy === null ? '' : `${r.policy}${r.rule === null ? '' : ` rule ${r.rule}`}`;
  return [r.time, what, r.service ?? '', source, actor, request, policy, r.reason ?? ''].map((c) => printable(c));
}

export function auditCommand(): Command {
  return new Command('audit')
    .description('read an audit log (--audit-log of skein proxy, control or up): filter it, print it, follow it')
    .argument('[file]', 'the audit log; stdin when left out')
    .option('-f, --follow', 'keep reading what is appended to FILE')
    .addOption(new Option('--decision <decision>', 'only authorization decisions of this kind').choices([...AUDIT_DECISIONS]))
    .addOption(new Option('--kind <kind>', 'only authorization decisions (authz) or only security events (security)').choices([...AUDIT_KINDS]))
    .option('--service <service>', 'only lines about this service')
    .option('--since <duration>', 'only lines of the last DURATION (e.g. 15m)', durationFlag('--since'))
    .addOption(outputOption())
    .action(async (file: string | undefined, o: { follow?: boolean; decision?: AuditDecision; kind?: AuditKind; service?: string; since?: number; output: OutputFormat }) => {
      const filter: AuditFilter = {
        ...(o.decision === undefined ? {} : { decision: o.decision }),
        ...(o.kind === undefined ? {} : { kind: o.kind }),
        ...(o.service === undefined ? {} : { service: o.service }),
        ...(o.since === undefined ? {} : { since: Date.now() - o.since }),
      };
      const name = file ?? 'stdin';
      let n = 0;
      const rows: string[][] = [];
      let streaming = false;
      const take = (line: string) => {
        n++;
        if (line.trim() === '') return;
        const r = parseAuditLine(line);
        if (r === null) {
          process.stderr.write(`skein audit: ${name}:${n}: not an audit line, skipped\n`);
          return;
        }
        if (!matches(r, filter)) return;
        if (o.output === 'json') print(`${JSON.stringify(r)}\n`);
        else if (streaming) print(auditRow(r).join('  ') + '\n');
        else rows.push(auditRow(r));
      };
      const flushTable = () => {
        if (o.output === 'table' && !streaming) print(table(AUDIT_TABLE_HEADERS, rows));
        streaming = true;
      };
      if (file === undefined) {
        if (o.follow === true) flushTable();
        for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) take(line);
        flushTable();
        return;
      }
      await readFile(file, take, o.follow === true ? flushTable : null);
      flushTable();
    });
}

/**
 * Reads `file` line by line; with `caughtUp` (--follow), calls it once at the end of what is
 * there, then keeps reading what is appended (from the start again if the file is truncated),
 * until the process is stopped.
 */
async function readFile(file: string, take: (line: string) => void, caughtUp: (() => void) | null): Promise<void> {
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (e) {
    throw new SkeinError('SKEIN_E_FILE', `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    const buf = Buffer.alloc(64 * 1024);
    let pos = 0;
    let rest = '';
    let idle = false;
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead > 0) {
        pos += bytesRead;
        const text = rest + buf.toString('utf8', 0, bytesRead);
        const lines = text.split('\n');
        // A line is taken once its newline is there (a writer may be half-way through it).
        rest = lines.pop() as string;
        for (const l of lines) take(l);
        continue;
      }
      if (caughtUp === null) {
        if (rest !== '') take(rest);
        return;
      }
      if (!idle) {
        caughtUp();
        idle = true;
      }
      // tail -f: look again in a moment; a truncated file is read from its start.
      await new Promise((r) => setTimeout(r, 200));
      if ((await fh.stat()).size < pos) {
        pos = 0;
        rest = '';
      }
    }
  } finally {
    await fh.close();
  }
}
