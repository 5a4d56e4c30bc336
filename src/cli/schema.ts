/** `skein schema` and `skein validate FILE`. */
import { Command } from 'commander';
import { outputOption, print, printJson, readText } from './common.js';
import { resourceKey } from '../api/types.js';

export function schemaCommand(): Command {
  return new Command('schema')
    .description('print the JSON Schema of resource files, or of mesh files with --mesh (for editor completion, e.g. yaml-language-server)')
    .option('--mesh', 'the schema of mesh files (skein up) instead')
    .action(async (o: { mesh?: boolean }) => {
      // Loaded here: the schema modules are heavy, and other commands do not need them.
      if (o.mesh === true) printJson((await import('../api/mesh.js')).meshFileJsonSchema());
      else printJson((await import('../api/schema.js')).resourceFileJsonSchema());
    });
}

export function validateCommand(): Command {
  return new Command('validate')
    .description('check a resource file or a mesh file (kind: Mesh) without starting or changing anything')
    .argument('<file>', 'YAML or JSON resource file or mesh file ("-" for standard input)')
    .addOption(outputOption())
    .action(async (file: string, o: { output: string }) => {
      const text = await readText(file);
      const [{ parseMeshFile }, { parseResourceFile }] = await Promise.all([import('../api/mesh.js'), import('../api/parse.js')]);
      if (/^kind:\s*Mesh\s*$/m.test(text) || /"kind"\s*:\s*"Mesh"/.test(text)) {
        const mesh = parseMeshFile(text, file);
        if (o.output === 'json') return printJson({ file, valid: true, mesh: mesh.name, services: mesh.services.map((s) => s.name) });
        print(`${file}: mesh "${mesh.name}" valid (${mesh.services.length} service(s): ${mesh.services.map((s) => s.name).join(', ')})\n`);
        return;
      }
      const resources = parseResourceFile(text, file);
      if (o.output === 'json') return printJson({ file, valid: true, resources: resources.map((r) => ({ kind: r.kind, name: resourceKey(r).replace(/^[A-Za-z]+\//, '') })) });
      print(`${file}: ${resources.length} resource(s) valid\n`);
    });
}
