/**
 * Memory benchmark (a report, not a test): the whole running set as a user gets it. The .deb is
 * built and installed with dpkg into a Debian 12 root (debootstrap, Debian's nodejs 18), and the
 * three units' ExecStart lines (hv-supervisor + its daemon, with the units' Environment=) run
 * there, chrooted, against the kernel-shim's device files. The host script measures every process
 * of the set (smaps_rollup) idle and after serving, and, for scale, six bare Node processes of the
 * same root: the floor of any design with six Node processes.
 *
 *   node --import tsx bench/memory-bench.ts        (root; about a minute once the root is cached)
 *
 * No FREEZE is sent: the chroot sees this machine's mount table (VSS is exercised with HOT_BACKUP
 * and GET_DM_INFO; FREEZE/THAW latency and the freeze path are bench/vss-bench.ts's job).
 */
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runInShim } from '../test/support/shim-harness.js';
import { buildIntoTemp, copyOfBookworm, inChroot, removeRoot } from '../test/packaging/support.js';
import type { MemoryReport } from './memory-bench-host.js';

const build = buildIntoTemp();
const root = copyOfBookworm();
try {
  const arch = build.packages.find((p) => p.arch.node === process.arch);
  if (!arch) throw new Error(`no package for ${process.arch}`);
  writeFileSync(join(root, 'tmp/hv.deb'), readFileSync(arch.deb));
  const installed = inChroot(root, 'dpkg -i /tmp/hv.deb >/dev/null && rm /tmp/hv.deb && node --version');
  if (installed.status !== 0) throw new Error(`dpkg -i failed: ${installed.stderr}`);
  const nodeVersion = installed.stdout.trim();

  // The units as installed: their Environment= and ExecStart= lines, run as systemd would.
  const unitDir = join(root, 'lib/systemd/system');
  const units = readdirSync(unitDir).filter((u) => /^hv-.*-ts\.service$/.test(u));
  const lines = units.map((u) => readFileSync(join(unitDir, u), 'utf8'));
  const env = lines.flatMap((t) => [...t.matchAll(/^Environment=(.*)$/gm)].map((m) => m[1]!));
  const starts = lines.map((t) => /^ExecStart=(.*)$/m.exec(t)?.[1]);
  if (starts.length !== 3 || starts.some((s) => !s)) throw new Error(`three units expected: ${units}`);
  writeFileSync(
    join(root, 'tmp/start-units.sh'),
    [
      ...[...new Set(env)].map((e) => `export ${e}`),
      ...starts.map((s, i) => `${s} & p${i}=$!`),
      "trap 'kill $p0 $p1 $p2 2>/dev/null; wait' TERM INT",
      'wait',
      '',
    ].join('\n'),
  );
  const command =
    `set -e; R=${root}; mkdir -p "$R/dev/vmbus"; mount --bind /dev/vmbus "$R/dev/vmbus"; ` +
    'mount --bind /var/lib/hyperv "$R/var/lib/hyperv"; mount -t proc proc "$R/proc"; ' +
    'mount -t tmpfs -o mode=0755 run "$R/run"; ' +
    'exec chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /bin/sh /tmp/start-units.sh';
  const { result } = await runInShim<MemoryReport>({
    services: ['kvp', 'vss', 'fcopy'],
    command: ['sh', '-c', command],
    script: 'bench/memory-bench-host.ts',
    params: { root },
    timeoutMs: 300_000,
  });

  // The floor of any design with six Node processes: six bare ones of the same root, alone.
  const bare = inChroot(
    root,
    'pids=; for i in 1 2 3 4 5 6; do node -e "setInterval(() => {}, 1e6)" & pids="$pids $!"; done; sleep 2.5; ' +
      "for p in $pids; do sed -n 's/^\\(Pss\\|Anonymous\\): *\\([0-9]*\\) kB/\\1 \\2/p' /proc/$p/smaps_rollup; done; " +
      'kill $pids; wait',
  );
  const sum = (field: string) =>
    [...bare.stdout.matchAll(new RegExp(`^${field} (\\d+)$`, 'gm'))].reduce((t, m) => t + Number(m[1]), 0);
  const floor = {
    pssKiB: sum('Pss'),
    anonKiB: sum('Anonymous'),
    count: bare.stdout.match(/^Pss /gm)?.length ?? 0,
  };
  if (floor.count !== 6) throw new Error(`the floor measurement failed: ${bare.stdout} ${bare.stderr}`);

  const mib = (kib: number) => (kib / 1024).toFixed(1);
  const out: string[] = [
    `Debian 12 root, Node ${nodeVersion}, hyperv-daemons-ts ${build.version} (.deb), units' ExecStart lines`,
    '',
    '| process | PSS idle | anon idle | PSS after | anon after |',
    '|---|---:|---:|---:|---:|',
  ];
  for (const p of result.idle.processes) {
    const a = result.after.processes.find((q) => q.name === p.name);
    out.push(
      `| ${p.name} | ${mib(p.pssKiB)} | ${mib(p.anonKiB)} | ${a ? mib(a.pssKiB) : '-'} | ${a ? mib(a.anonKiB) : '-'} |`,
    );
  }
  out.push(
    `| **total (${result.idle.processes.length} processes)** | **${mib(result.idle.totalPssKiB)}** | ${mib(result.idle.totalAnonKiB)} | **${mib(result.after.totalPssKiB)}** | ${mib(result.after.totalAnonKiB)} |`,
    `| six bare \`node -e 'setInterval(…)'\` of the same root, alone | ${mib(floor.pssKiB)} | ${mib(floor.anonKiB)} | | |`,
    '',
    `Serving between the two measurements: ${result.activity}.`,
  );
  process.stdout.write(`${out.join('\n')}\n`);
} finally {
  removeRoot(root);
  rmSync(build.outDir, { recursive: true, force: true });
}
