/** YAML (and JSON, which is YAML too) files as Skein reads them: resource files and mesh files alike. */
import { parseAllDocuments } from 'yaml';
import { SkeinError } from '../core/errors.js';

/**
 * The values of the non-empty documents of `text`, in order. Throws SKEIN_E_BAD_YAML, naming
 * `fileName` and the parser's first complaint, for malformed text (duplicate keys included).
 */
export function yamlDocuments(text: string, fileName: string): unknown[] {
  const docs = parseAllDocuments(text, { prettyErrors: true, uniqueKeys: true });
  const values: unknown[] = [];
  for (const doc of Array.isArray(docs) ? docs : [docs]) {
    if (doc.errors.length > 0) {
      const e = doc.errors[0];
      throw new SkeinError('SKEIN_E_BAD_YAML', `${fileName}: ${e?.message.split('\n')[0] ?? 'malformed YAML'}`, { field: fileName });
    }
    const v: unknown = doc.toJS({ maxAliasCount: 100 });
    if (v !== null && v !== undefined) values.push(v);
  }
  return values;
}
