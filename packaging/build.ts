/**
 * `npm run package`: build hyperv-daemons-ts_<version>_amd64.deb and
 * hyperv-daemons-ts-<version>-1.x86_64.rpm into dist/packages/ from the sources, with dpkg-deb and
 * rpmbuild (no debhelper, no fpm: see /work/shared/reference/node-platform.md §3).
 *
 * Each program is one esbuild bundle (ESM, target node18, koffi left external) run by a /usr/sbin
 * wrapper with the distribution's /usr/bin/node; koffi's JavaScript and its native binary for the
 * architecture sit next to the bundles in /usr/lib/hyperv-daemons-ts/node_modules. Only the
 * architectures whose koffi prebuilt binary is in node_modules are built (x86_64 here).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PKG = join(REPO, 'packaging');
export const NAME = 'hyperv-daemons-ts';
export const LIB_DIR = '/usr/lib/hyperv-daemons-ts';
/** Our helper scripts: not /usr/libexec/hypervkvpd, which Debian's hyperv-daemons owns. */
export const SCRIPTS_DIR = '/usr/libexec/hyperv-daemons-ts';

/** The programs: bundle entry, installed name. */
export const PROGRAMS = [
  { name: 'hv-kvp-ts', entry: 'daemons/kvp/main.ts' },
  { name: 'hv-vss-ts', entry: 'daemons/vss/main.ts' },
  // daemons/fcopy/main.ts runs itself only under its source path: a two-line entry calls it.
  { name: 'hv-fcopy-ts', entry: 'packaging/entries/hv-fcopy-ts.ts' },
  { name: 'hv-supervisor', entry: 'supervisor/main.ts' },
] as const;

export const UNITS = ['hv-kvp-ts.service', 'hv-vss-ts.service', 'hv-fcopy-ts.service'] as const;

/** Architectures: Debian name, RPM name, Node's process.arch (koffi's package suffix). */
export const ARCHES = [
  { deb: 'amd64', rpm: 'x86_64', node: 'x64' },
  { deb: 'arm64', rpm: 'aarch64', node: 'arm64' },
] as const;
type Arch = (typeof ARCHES)[number];

export interface BuildResult {
  version: string;
  /** Per built architecture: the package files (absolute paths). */
  packages: { arch: Arch; deb: string; rpm: string }[];
  /** Architectures skipped, with the reason. */
  skipped: string[];
  outDir: string;
}

function run(cmd: string, args: string[], opts: { cwd?: string } = {}): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  } catch (e) {
    const err = e as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed:\n${err.stderr ?? ''}${err.stdout ?? ''}${err.message}`);
  }
}

export function requireTool(tool: string, pkg: string): void {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
  } catch {
    throw new Error(`${tool} is missing: apt-get install ${pkg} (bash .ci/deps installs it)`);
  }
}

export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

function write(path: string, text: string | Buffer, mode = 0o644): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  writeFileSync(path, text);
  chmodSync(path, mode);
}

function copy(from: string, to: string, mode = 0o644): void {
  mkdirSync(dirname(to), { recursive: true, mode: 0o755 });
  copyFileSync(from, to);
  chmodSync(to, mode);
}

/** Every directory 0755 and every file 0644 or 0755 (whatever the umask of the checkout). */
function normaliseModes(dir: string): void {
  chmodSync(dir, 0o755);
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) normaliseModes(p);
    else if (e.isFile()) chmodSync(p, statSync(p).mode & 0o111 ? 0o755 : 0o644);
  }
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p));
    else out.push(p);
  }
  return out.sort();
}

/** esbuild bundles of the four programs, shared by every architecture. */
function bundle(outDir: string): void {
  const esbuild = join(REPO, 'node_modules/.bin/esbuild');
  if (!existsSync(esbuild)) throw new Error('esbuild is missing from node_modules: run npm ci');
  for (const p of PROGRAMS) {
    run(
      esbuild,
      [
        join(REPO, p.entry),
        '--bundle',
        '--platform=node',
        '--format=esm',
        '--target=node18',
        '--external:koffi',
        '--legal-comments=none',
        '--log-level=warning',
        // CommonJS dependencies require() builtins: give the ESM bundle a require (aliased: the
        // sources import createRequire themselves).
        "--banner:js=import { createRequire as __hvCreateRequire } from 'node:module'; const require = __hvCreateRequire(import.meta.url);",
        `--outfile=${join(outDir, `${p.name}.mjs`)}`,
      ],
      { cwd: REPO },
    );
  }
}

/**
 * Where koffi's prebuilt package for `arch` is: node_modules for this machine's architecture
 * (npm installs only the matching optional package), otherwise the exact same version fetched
 * from the npm registry with `npm pack` into .cache/koffi/ (once). Undefined if it cannot be had.
 */
function koffiNative(arch: Arch): string | undefined {
  const installed = join(REPO, `node_modules/@koromix/koffi-linux-${arch.node}`);
  if (existsSync(join(installed, `linux_${arch.node}/koffi.node`))) return installed;
  const version = (
    JSON.parse(readFileSync(join(REPO, 'node_modules/koffi/package.json'), 'utf8')) as { version: string }
  ).version;
  const cache = join(REPO, '.cache/koffi', `${arch.node}-${version}`);
  const pkg = join(cache, 'package');
  if (!existsSync(join(pkg, `linux_${arch.node}/koffi.node`))) {
    mkdirSync(cache, { recursive: true });
    const packed = spawnSync('npm', ['pack', '--silent', `@koromix/koffi-linux-${arch.node}@${version}`], {
      cwd: cache,
      encoding: 'utf8',
    });
    const tarball = packed.stdout.trim().split('\n').pop();
    if (packed.status !== 0 || !tarball) return undefined;
    const untar = spawnSync('tar', ['-xzf', tarball], { cwd: cache });
    if (untar.status !== 0) return undefined;
  }
  return existsSync(join(pkg, `linux_${arch.node}/koffi.node`)) ? pkg : undefined;
}

/** koffi's run-time files for one architecture (JavaScript loader + the glibc native binary). */
function koffiRuntime(arch: Arch, dest: string): void {
  const koffi = join(REPO, 'node_modules/koffi');
  const native = koffiNative(arch);
  if (!native) throw new Error(`koffi's prebuilt binary for ${arch.node} is not available`);
  // The loader: every .js/.cjs/package.json outside the C++ sources' vendor/ and doc/ trees, less
  // the build-time tools (cnoke.cjs builds koffi, trampolines.cjs generates C++).
  const buildTools = ['cnoke.cjs', 'src/koffi/src/trampolines.cjs'];
  const loader = filesUnder(koffi)
    .map((f) => relative(koffi, f))
    .filter((f) => /\.(c?js|json)$/.test(f) && !/^(vendor|doc)\//.test(f) && !buildTools.includes(f));
  for (const f of [...loader, 'LICENSE.txt']) copy(join(koffi, f), join(dest, 'koffi', f));
  for (const f of ['package.json', 'index.js', `linux_${arch.node}/koffi.node`])
    copy(join(native, f), join(dest, `@koromix/koffi-linux-${arch.node}`, f));
}

/** The units as installed: the KVP unit's helper scripts are in our own directory. */
function unitText(unit: string): string {
  let text = readFileSync(join(REPO, 'systemd', unit), 'utf8');
  if (unit === 'hv-kvp-ts.service' && !text.includes('--scripts-dir')) {
    text = text.replace(/(ExecStart=.*\/usr\/sbin\/hv-kvp-ts -n)$/m, `$1 --scripts-dir ${SCRIPTS_DIR}`);
    if (!text.includes(`--scripts-dir ${SCRIPTS_DIR}`)) throw new Error('could not patch the KVP unit');
  }
  return text;
}

/** The installed tree, less what differs between deb and rpm (unit and udev paths, docs). */
function stageTree(root: string, arch: Arch, bundles: string, version: string, flavour: 'deb' | 'rpm'): void {
  const lib = join(root, LIB_DIR.slice(1));
  for (const p of PROGRAMS) {
    copy(join(bundles, `${p.name}.mjs`), join(lib, `${p.name}.mjs`));
    write(
      join(root, 'usr/sbin', p.name),
      `#!/bin/sh\nexec /usr/bin/node ${LIB_DIR}/${p.name}.mjs "$@"\n`,
      0o755,
    );
    const man = readFileSync(join(PKG, 'man', `${p.name}.8`), 'utf8').replaceAll('@VERSION@', version);
    write(join(root, 'usr/share/man/man8', `${p.name}.8.gz`), gzipSync(man, { level: 9 }));
  }
  // package.json next to the bundles: marks them as this package (fcopy reads its version here).
  write(
    join(lib, 'package.json'),
    `${JSON.stringify({ name: NAME, version, type: 'module', private: true }, null, 2)}\n`,
  );
  koffiRuntime(arch, join(lib, 'node_modules'));
  for (const s of readdirSync(join(REPO, 'daemons/kvp/scripts')))
    copy(join(REPO, 'daemons/kvp/scripts', s), join(root, SCRIPTS_DIR.slice(1), s), 0o755);
  const unitDir = flavour === 'deb' ? 'lib/systemd/system' : 'usr/lib/systemd/system';
  const udevDir = flavour === 'deb' ? 'lib/udev/rules.d' : 'usr/lib/udev/rules.d';
  for (const u of UNITS) write(join(root, unitDir, u), unitText(u));
  copy(join(REPO, 'systemd/60-hyperv-daemons-ts.rules'), join(root, udevDir, '60-hyperv-daemons-ts.rules'));
  copy(join(PKG, 'etc/fcopy.conf'), join(root, 'etc/hyperv-daemons-ts/fcopy.conf'));
  for (const h of readdirSync(join(REPO, 'daemons/vss/hooks')))
    // Disabled by its .sample suffix (hv-vss-ts ignores such files); executable, so that
    // renaming it is all it takes to enable it.
    copy(join(REPO, 'daemons/vss/hooks', h), join(root, 'etc/hyperv-daemons-ts/vss-hooks.d', h), 0o755);
  mkdirSync(join(root, 'var/lib/hyperv'), { recursive: true });
  normaliseModes(root);
}

function debPackage(arch: Arch, bundles: string, version: string, work: string, outDir: string): string {
  const root = join(work, `deb-${arch.deb}`);
  stageTree(root, arch, bundles, version, 'deb');
  const doc = join(root, 'usr/share/doc', NAME);
  copy(join(PKG, 'debian/copyright'), join(doc, 'copyright'));
  const date = new Date(Number(process.env.SOURCE_DATE_EPOCH ?? Date.now() / 1000) * 1000).toUTCString();
  const changelog =
    `${NAME} (${version}) unstable; urgency=medium\n\n` +
    `  * Release ${version} (built from the hyperv-daemons-ts sources).\n\n` +
    ` -- hyperv-daemons-ts developers <hyperv-daemons-ts@users.noreply.github.com>  ${date.replace('GMT', '+0000')}\n`;
  write(join(doc, 'changelog.gz'), gzipSync(changelog, { level: 9 }));
  const overrides = readFileSync(join(PKG, 'debian/lintian-overrides'), 'utf8');
  if (overrides.split('\n').some((l) => l.trim() !== '' && !l.startsWith('#')))
    write(join(root, 'usr/share/lintian/overrides', NAME), overrides);
  const control = join(root, 'DEBIAN');
  mkdirSync(control, { mode: 0o755 });
  const files = filesUnder(root).filter((f) => !f.startsWith(`${control}/`));
  const conffiles = files
    .filter((f) => relative(root, f).startsWith('etc/'))
    .map((f) => `/${relative(root, f)}`);
  write(join(control, 'conffiles'), `${conffiles.join('\n')}\n`);
  const md5 = files
    .filter((f) => !relative(root, f).startsWith('etc/'))
    .map((f) => `${createHash('md5').update(readFileSync(f)).digest('hex')}  ${relative(root, f)}`);
  write(join(control, 'md5sums'), `${md5.join('\n')}\n`);
  const installedKb = Math.ceil(files.reduce((n, f) => n + statSync(f).size, 0) / 1024);
  const template = readFileSync(join(PKG, 'debian/control'), 'utf8');
  write(
    join(control, 'control'),
    template
      .replaceAll('@VERSION@', version)
      .replaceAll('@ARCH@', arch.deb)
      .replaceAll('@INSTALLED_SIZE@', String(installedKb)),
  );
  for (const s of ['postinst', 'prerm', 'postrm']) copy(join(PKG, 'debian', s), join(control, s), 0o755);
  const out = join(outDir, `${NAME}_${version}_${arch.deb}.deb`);
  run('dpkg-deb', ['--root-owner-group', '-Zxz', '--build', root, out]);
  return out;
}

function rpmPackage(arch: Arch, bundles: string, version: string, work: string, outDir: string): string {
  const root = join(work, `rpm-${arch.rpm}`);
  stageTree(root, arch, bundles, version, 'rpm');
  const top = join(work, `rpmbuild-${arch.rpm}`);
  for (const d of ['SPECS', 'RPMS', 'BUILD', 'BUILDROOT', 'SOURCES', 'SRPMS'])
    mkdirSync(join(top, d), { recursive: true });
  const spec = join(top, 'SPECS', `${NAME}.spec`);
  writeFileSync(
    spec,
    readFileSync(join(PKG, 'rpm', `${NAME}.spec`), 'utf8').replaceAll('@VERSION@', version),
  );
  run('rpmbuild', [
    '--define',
    `_topdir ${top}`,
    '--define',
    `stage ${root}`,
    '--define',
    `readme ${join(REPO, 'README.md')}`,
    '--define',
    `license_file ${join(PKG, 'LICENSE')}`,
    '--target',
    `${arch.rpm}-linux`,
    '-bb',
    spec,
  ]);
  const dir = join(top, 'RPMS', arch.rpm);
  const built = readdirSync(dir).find((f) => f.endsWith('.rpm'));
  if (!built) throw new Error(`rpmbuild made no package in ${dir}`);
  const out = join(outDir, built);
  copyFileSync(join(dir, built), out);
  return out;
}

export function buildPackages(outDir = join(REPO, 'dist/packages')): BuildResult {
  requireTool('dpkg-deb', 'dpkg');
  requireTool('rpmbuild', 'rpm');
  const version = packageVersion();
  rmSync(outDir, { recursive: true, force: true });
  const work = join(outDir, 'work');
  const bundles = join(work, 'bundles');
  mkdirSync(bundles, { recursive: true });
  bundle(bundles);
  const result: BuildResult = { version, packages: [], skipped: [], outDir };
  for (const arch of ARCHES) {
    if (!koffiNative(arch)) {
      result.skipped.push(
        `${arch.deb}: koffi's prebuilt binary for ${arch.node} could not be had (npm pack failed)`,
      );
      continue;
    }
    const deb = debPackage(arch, bundles, version, work, outDir);
    const rpm = rpmPackage(arch, bundles, version, work, outDir);
    result.packages.push({ arch, deb, rpm });
  }
  return result;
}

/** The esbuild bundles alone (for tests that run them with node). */
export function bundlesDir(result: BuildResult): string {
  return join(result.outDir, 'work', 'bundles');
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const r = buildPackages(process.argv[2] ? resolve(process.argv[2]) : undefined);
  for (const p of r.packages)
    process.stdout.write(`${relative(process.cwd(), p.deb)}\n${relative(process.cwd(), p.rpm)}\n`);
  for (const s of r.skipped) process.stdout.write(`skipped ${s}\n`);
  // Keep the staged trees only on request.
  if (!process.env.HV_PACKAGE_KEEP_WORK) rmSync(join(r.outDir, 'work'), { recursive: true, force: true });
}
