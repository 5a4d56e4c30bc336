/** `skein schema` and `skein validate FILE`. */
import { Command } from 'commander';
import { resourceFileJsonSchema } from '../api/schema.js';
import { parseResourceFile } from '../api/parse.js';
import { outputOption, print, printJson, readText } from './common.js';

export function schemaCommand(): Command {
  return new Command('schema')
    .description('print the JSON Schema of resource files (for editor completion, e.g. yaml-language-server)')
    .action(() => printJson(resourceFileJsonSchema()));
}

export function validateCommand(): Command {
  return new Command('validate')
    .description('check a resource file without starting or changing anything')
    .argument('<file>', 'YAML or JSON resource file ("-" for standard input)')
    .addOption(outputOption())
    .action(async (file: string, o: { output: string }) => {
      const resources = parseResourceFile(await readText(file), file);
      if (o.output === 'json') return printJson({ file, valid: true, resources: resources.map((r) => ({ kind: r.kind, name: r.kind === 'Service' ? r.name : `${r.service}/${r.id}` })) });
      print(`${file}: ${resources.length} resource(s) valid\n`);
    });
}
