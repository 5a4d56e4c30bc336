/** `skein schema` and `skein validate FILE`. */
import { Command } from 'commander';
import { resourceFileJsonSchema } from '../api/schema.js';
import { parseResourceFile } from '../api/parse.js';
import { meshFileJsonSchema, parseMeshFile } from '../api/mesh.js';
import { outputOption, print, printJson, readText } from './common.js';

export function schemaCommand(): Command {
  return new Command('schema')
    .description('print the JSON Schema of resource files, or of mesh files with --mesh (for editor completion, e.g. yaml-language-server)')
    .option('--mesh', 'the schema of mesh files (skein up) instead')
    .action((o: { mesh?: boolean }) => printJson(o.mesh === true ? meshFileJsonSchema() : resourceFileJsonSchema()));
}

export function validateCommand(): Command {
  return new Command('validate')
    .description('check a resource file or a mesh file (kind: Mesh) without starting or changing anything')
    .argument('<file>', 'YAML or JSON resource file or mesh file ("-" for standard input)')
    .addOption(outputOption())
    .action(async (file: string, o: { output: string }) => {
      const text = await readText(file);
      if (/^kind:\s*Mesh\s*$/m.test(text) || /"kind"\s*:\s*"Mesh"/.test(text)) {
        const mesh = parseMeshFile(text, file);
        if (o.output === 'json') return printJson({ file, valid: true, mesh: mesh.name, services: mesh.services.map((s) => s.name) });
        print(`${file}: mesh "${mesh.name}" valid (${mesh.services.length} service(s): ${mesh.services.map((s) => s.name).join(', ')})\n`);
        return;
      }
      const resources = parseResourceFile(text, file);
      if (o.output === 'json') return printJson({ file, valid: true, resources: resources.map((r) => ({ kind: r.kind, name: r.kind === 'Service' ? r.name : `${r.service}/${r.id}` })) });
      print(`${file}: ${resources.length} resource(s) valid\n`);
    });
}
