#!/usr/bin/env node
// Skein runs on Node.js 24 or newer. This file is read by older versions too, so it checks first,
// in syntax they understand, and says so in one line instead of failing somewhere inside.
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  process.stderr.write(
    `skein: needs Node.js 24 or newer, this is v${process.versions.node}. In a clone of Skein, \`npm ci\` installs one: run \`npx skein ...\`, \`npm test\` or \`npm run demo\`.\n`,
  );
  process.exit(1);
}
const { main } = await import('../dist/src/cli/main.js');

main(process.argv).then(
  (code) => { if (typeof code === 'number') process.exitCode = code; },
  (err) => {
    process.stderr.write(`skein: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
