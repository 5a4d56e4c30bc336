import { readdirSync } from 'node:fs';
import path from 'node:path';
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';
import { createNodeResolver, importX } from 'eslint-plugin-import-x';

const ROOT = import.meta.dirname;

/**
 * The layers of src/, lowest first (docs/concepts.md#layers). A file imports only its own folder
 * and the layers below its own: no import runs back up, and the folders of one layer (two
 * drivers, two hosts) do not import each other; what they share belongs in a layer below. Tests
 * beside the code (`*.test.ts`) follow the same rule; test/ and bench/ may import anything.
 */
const LAYERS = [
  { name: 'core', folders: ['core', 'version.ts'] },
  { name: 'api', folders: ['api'] },
  { name: 'discovery', folders: ['discovery'] },
  { name: 'balance', folders: ['balance'] },
  { name: 'resilience', folders: ['resilience'] },
  { name: 'identity/authz', folders: ['identity', 'authz'] },
  { name: 'engine', folders: ['engine'] },
  { name: 'telemetry', folders: ['telemetry'] },
  { name: 'proxy/sdk', folders: ['proxy', 'sdk'] },
  { name: 'control/runtime', folders: ['control', 'runtime'] },
  { name: 'cli', folders: ['cli'] },
];

// Every entry of src/ has a layer: a new folder is placed here (and in docs/concepts.md) first.
const placed = new Set(LAYERS.flatMap((l) => l.folders));
const unplaced = readdirSync(path.join(ROOT, 'src'), { withFileTypes: true })
  .filter((e) => (e.isDirectory() || e.name.endsWith('.ts')) && !placed.has(e.name))
  .map((e) => e.name);
if (unplaced.length > 0) {
  throw new Error(`eslint.config.js: src/${unplaced.join(', src/')} belongs to no layer: add it to LAYERS (and to the diagram in docs/concepts.md)`);
}

const order = LAYERS.map((l) => l.name).join(' < ');
const rank = (i) => `layer ${i + 1} of ${LAYERS.length}, ${LAYERS[i].name}`;

/** One zone per (folder, folder it must not import), so that a report names both layers. */
const zones = LAYERS.flatMap((layer, i) =>
  layer.folders.flatMap((folder) =>
    LAYERS.flatMap((other, j) =>
      other.folders
        .filter((o) => j > i || (j === i && o !== folder))
        .map((o) => ({
          target: `src/${folder}`,
          from: `src/${o}`,
          message:
            j > i
              ? `src/${folder} (${rank(i)}) may not import src/${o} (${rank(j)}): imports run down only (${order}). Move the shared contract down (docs/concepts.md#layers).`
              : `src/${folder} and src/${o} are both ${rank(i)} and may not import each other (${order}). Move what they share down (docs/concepts.md#layers).`,
        })),
    ),
  ),
);

/** Network and HTTP modules the engine must not use: it decides, drivers do the I/O. */
const IO_MODULES = ['net', 'tls', 'http', 'https', 'http2', 'dgram'].flatMap((m) => [m, `node:${m}`]);

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'dashboard/dist/', 'test-artifacts/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { ...globals.node } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'off',
      'no-constant-condition': ['error', { checkLoops: false }],
      eqeqeq: ['error', 'always', { null: 'ignore' }],
    },
  },
  {
    // The layers. Imports are resolved as TypeScript's NodeNext does ('./x.js' is ./x.ts), and an
    // import that does not resolve is an error too: no-restricted-paths skips what it cannot
    // resolve, so without no-unresolved a broken resolver would pass every file silently.
    files: ['src/**/*.ts'],
    plugins: { 'import-x': importX },
    settings: {
      'import-x/resolver-next': [createNodeResolver({ extensions: ['.ts', '.js', '.json', '.node'], extensionAlias: { '.js': ['.ts', '.js'] }, conditionNames: ['types', 'import', 'node', 'default'] })],
    },
    rules: {
      'import-x/no-restricted-paths': ['error', { basePath: ROOT, zones }],
      'import-x/no-unresolved': 'error',
    },
  },
  {
    files: ['src/engine/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { paths: IO_MODULES.map((name) => ({ name, message: 'src/engine makes decisions without I/O: sockets and HTTP belong to the drivers (src/proxy, src/sdk).' })) }],
    },
  },
);
