/**
 * `npm start`, the main job from a checkout.
 *
 * On a Hyper-V guest (the /dev/vmbus/hv_* devices exist) it runs hv-kvp-ts, hv-vss-ts and
 * hv-fcopy-ts, each under hv-supervisor, on the real devices. Elsewhere it runs them against the embedded kernel-shim, with
 * the interactive host console, clearly labelled as simulated: inside a scratch root whose only
 * freezable file systems are two loop-mounted images (ext4 and xfs), so a FREEZE typed at the
 * console can never reach this machine's own file systems.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';

const REPO = resolve(import.meta.dirname, '..');
const NODE = [process.execPath, '--import', 'tsx'];
/** Each daemon under hv-supervisor: restarted with back-off, cleaned up after, reporting status. */
const supervised = (kind: string, daemon: readonly string[]): string[] => [
  ...NODE,
  `${REPO}/supervisor/main.ts`,
  '--kind',
  kind,
  '--device',
  `/dev/vmbus/hv_${kind}`,
  '--',
  ...daemon,
];
const DAEMONS = {
  kvp: supervised('kvp', [
    ...NODE,
    `${REPO}/daemons/kvp/main.ts`,
    '-n',
    '--scripts-dir',
    `${REPO}/daemons/kvp/scripts`,
  ]),
  vss: supervised('vss', [...NODE, `${REPO}/daemons/vss/main.ts`, '-n']),
  fcopy: supervised('fcopy', [...NODE, `${REPO}/daemons/fcopy/main.ts`, '-n']),
} as const;

const quote = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;

/**
 * A POSIX shell script that starts each command in the background and passes SIGTERM/SIGINT on
 * to all of them (a non-interactive shell does neither by itself), then waits for them.
 */
export function superviseScript(commands: readonly (readonly string[])[], prefix = ''): string {
  const starts = commands.map((c, i) => `${c.map(quote).join(' ')} & p${i}=$!;`).join(' ');
  const pids = commands.map((_c, i) => `$p${i}`).join(' ');
  return `${prefix}${starts} trap 'kill ${pids} 2>/dev/null; wait' TERM INT; wait`;
}

function runAll(services: (keyof typeof DAEMONS)[]): void {
  const child = spawn('/bin/sh', ['-c', superviseScript(services.map((s) => DAEMONS[s]))], {
    stdio: 'inherit',
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => child.kill(sig));
  child.on('exit', (code) => process.exit(code ?? 0));
}

const real = (['kvp', 'vss', 'fcopy'] as const).filter((s) => existsSync(`/dev/vmbus/hv_${s}`));
if (real.length > 0) {
  process.stderr.write(`hyperv-daemons-ts: Hyper-V devices found (${real.join(', ')}): serving them.\n`);
  runAll(real);
} else {
  if (process.getuid?.() !== 0) {
    process.stderr.write(
      'hyperv-daemons-ts: the simulation needs root (mount namespaces, FUSE, loop devices).\n',
    );
    process.exit(77);
  }
  process.stderr.write(
    [
      '',
      '  SIMULATED: no Hyper-V devices here. hv-kvp-ts, hv-vss-ts and hv-fcopy-ts run against the',
      '  embedded kernel-shim in a private sandbox; you are the Hyper-V host. Try:',
      '    kvp set Greeting hello        kvp list auto        kvp list external',
      '    vss freeze                    vss thaw             (two loop images: /mnt/ext4, /mnt/xfs)',
      '    fcopy put /tmp hello.txt "hello from the host"       status      help      quit',
      '',
      '',
    ].join('\n'),
  );
  // After the pivot the working directory is /: tsx resolves from the repository.
  const inner = superviseScript(
    (['kvp', 'vss', 'fcopy'] as const).map((s) => DAEMONS[s]),
    `cd ${quote(REPO)}; `,
  );
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      `${REPO}/kernel-shim/cli.ts`,
      'run',
      '--services',
      'kvp,vss,fcopy',
      '--freeze-sandbox',
      'ext4,xfs',
      '--host-dir',
      REPO,
      '--console',
      '--',
      '/bin/sh',
      '-c',
      inner,
    ],
    { stdio: 'inherit' },
  );
  child.on('exit', (code) => process.exit(code ?? 0));
}
