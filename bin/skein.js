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
// `skein proxy` runs with a small young generation (4 MB semi-spaces instead of V8's 16-32 MB):
// 0.82x the CPU per request at full load, the same p50/p99 at 1,000 req/s, and 10-20 MB less peak
// RSS (docs/benchmarks.md, "The young generation"). V8 sizes it when the process starts, so the
// process replaces itself with one started with the flag (same PID: execve). Not when the flag is
// given already (node's own arguments or NODE_OPTIONS), nor with SKEIN_PROXY_V8_DEFAULTS=1.
const SEMI_SPACE_FLAG = '--max-semi-space-size';
if (
  process.argv[2] === 'proxy' &&
  typeof process.execve === 'function' &&
  process.env.SKEIN_PROXY_V8_DEFAULTS !== '1' &&
  !process.execArgv.some((a) => a.startsWith(SEMI_SPACE_FLAG)) &&
  !(process.env.NODE_OPTIONS ?? '').includes(SEMI_SPACE_FLAG)
) {
  process.execve(process.execPath, [process.execPath, `${SEMI_SPACE_FLAG}=4`, ...process.execArgv, ...process.argv.slice(1)], process.env);
}
const { main } = await import('../dist/src/cli/main.js');

main(process.argv).then(
  (code) => { if (typeof code === 'number') process.exitCode = code; },
  (err) => {
    process.stderr.write(`skein: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
