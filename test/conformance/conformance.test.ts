/**
 * The kernel-shim's conformance suite: the unmodified upstream C daemons (Debian's hyperv-daemons)
 * run against the shim's device files through `kernel-shim run`, each driven by a scenario, and
 * must meet every expectation, hibernation and rescind included. What the host saw is compared
 * with the recordings committed in test/conformance/recordings/ (UPDATE_RECORDINGS=1 rewrites
 * them); those recordings are the expected results our own daemons are compared with.
 *
 * Under CI this suite never skips: missing FUSE, namespaces or the package make it fail.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { UPSTREAM } from '../support/shim-harness.js';

const HERE = resolve(import.meta.dirname);
const REPO = resolve(HERE, '../..');
const scratch = mkdtempSync(join(tmpdir(), 'hv-conformance-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

interface Recording {
  summary: { ok: boolean; total: number; failed: number };
  steps: {
    index: number;
    text: string;
    ok: boolean;
    failures: string[];
    op: string;
    host?: Record<string, unknown>;
  }[];
  guest?: { index: number; frozen: string[] }[];
}

/** Run `kernel-shim run … --scenario FILE --record OUT -- COMMAND`; resolve with the exit code and the recording. */
function runScenario(opts: {
  services: string;
  scenario: string;
  command: readonly string[];
  freezeSandbox?: string;
  restart?: boolean;
}): Promise<{ code: number | null; recording: Recording; stderr: string }> {
  const out = join(scratch, `rec-${Math.random().toString(36).slice(2)}.json`);
  const args = [
    '--import',
    'tsx',
    join(REPO, 'kernel-shim/cli.ts'),
    'run',
    '--services',
    opts.services,
    '--scenario',
    opts.scenario,
    '--record',
    out,
    ...(opts.freezeSandbox ? ['--freeze-sandbox', opts.freezeSandbox] : []),
    ...(opts.restart ? ['--restart'] : []),
    '--',
    ...opts.command,
  ];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((done, fail) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      fail(new Error(`kernel-shim run timed out\n${stderr}`));
    }, 150_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (!existsSync(out)) return fail(new Error(`no recording (exit ${code})\n${stderr}`));
      done({ code, recording: JSON.parse(readFileSync(out, 'utf8')) as Recording, stderr });
    });
  });
}

/** The machine-independent view of a recording: temp paths and auto-pool values masked. */
function normalise(r: Recording, dir?: string): unknown {
  let text = JSON.stringify(r);
  if (dir) text = text.split(dir).join('@DIR@');
  const n = JSON.parse(text) as Recording;
  for (const s of n.steps) {
    const auto = / auto( |$)/.test(s.text) && s.op.startsWith('kvp');
    if (auto && s.host) {
      if ('value' in s.host) s.host.value = '(machine-dependent)';
      if (Array.isArray(s.host.items)) {
        s.host.items = (s.host.items as { key: string }[]).map((i) => ({
          key: i.key,
          value: '(machine-dependent)',
        }));
      }
    }
  }
  return n;
}

function failures(r: Recording): string[] {
  return r.steps.filter((s) => !s.ok).map((s) => `line "${s.text}": ${s.failures.join('; ')}`);
}

function checkRecording(name: string, value: unknown): void {
  const path = join(HERE, 'recordings', `${name}.json`);
  const text = `${JSON.stringify(value, null, 2)}\n`;
  if (process.env.UPDATE_RECORDINGS === '1' || !existsSync(path)) {
    if (process.env.CI === 'true') throw new Error(`${path} is missing: record it with UPDATE_RECORDINGS=1`);
    writeFileSync(path, text);
  }
  expect(JSON.parse(text)).toEqual(JSON.parse(readFileSync(path, 'utf8')));
}

describe('prerequisites (fail, never skip)', () => {
  it('root, /dev/fuse, unshare and the upstream daemons are there', () => {
    expect(process.getuid?.(), 'the conformance suite mounts FUSE in namespaces: run as root').toBe(0);
    expect(existsSync('/dev/fuse'), '/dev/fuse').toBe(true);
    for (const bin of [
      ...Object.values(UPSTREAM).map((c) => c[0]),
      '/usr/bin/unshare',
      '/usr/sbin/mkfs.xfs',
    ]) {
      expect(existsSync(bin), `${bin} (bash .ci/deps installs it)`).toBe(true);
    }
  });
});

describe('upstream C daemons against the kernel-shim', () => {
  it('hv_kvp_daemon: pools 0-4 and the auto pool', async () => {
    const r = await runScenario({
      services: 'kvp',
      scenario: join(HERE, 'kvp.scenario'),
      command: UPSTREAM.kvp,
    });
    expect(failures(r.recording), r.stderr).toEqual([]);
    expect(r.code).toBe(0);
    checkRecording('kvp.upstream', normalise(r.recording));
  }, 180_000);

  it('hv_kvp_daemon: a few hundred records', async () => {
    const lines = ['wait-ready kvp 20s'];
    for (let i = 0; i < 300; i++)
      lines.push(`kvp set record-${i} "value ${i}" --pool guest   expect HV_S_OK`);
    lines.push(
      'kvp list guest   expect HV_S_CONT count=300 item.record-0="value 0" item.record-299="value 299"',
    );
    for (const i of [0, 150, 299]) lines.push(`kvp enumerate guest ${i}   expect HV_S_OK key=record-${i}`);
    for (let i = 0; i < 300; i += 3) lines.push(`kvp delete record-${i} --pool guest   expect HV_S_OK`);
    lines.push('kvp list guest   expect count=200 has!=record-0 has=record-1');
    const file = join(scratch, 'kvp-bulk.scenario');
    writeFileSync(file, `${lines.join('\n')}\n`);
    const r = await runScenario({ services: 'kvp', scenario: file, command: UPSTREAM.kvp });
    expect(failures(r.recording), r.stderr).toEqual([]);
  }, 180_000);

  it('hv_kvp_daemon: hibernation, then a rescind it survives through a restart, and a re-offer', async () => {
    const r = await runScenario({
      services: 'kvp',
      scenario: join(HERE, 'kvp-faults.scenario'),
      command: UPSTREAM.kvp,
      restart: true,
    });
    expect(failures(r.recording), r.stderr).toEqual([]);
    checkRecording('kvp-faults.upstream', normalise(r.recording));
  }, 180_000);

  it('hv_vss_daemon: hot backup, freeze and thaw of ext4 and xfs images, hibernation (fake THAW)', async () => {
    const r = await runScenario({
      services: 'vss',
      scenario: join(HERE, 'vss.scenario'),
      command: UPSTREAM.vss,
      freezeSandbox: 'ext4,xfs',
    });
    expect(failures(r.recording), r.stderr).toEqual([]);
    const frozenAfter = (line: string) => {
      const step = r.recording.steps.find(
        (s) => s.text.startsWith(line) && r.recording.guest?.some((g) => g.index === s.index),
      );
      return r.recording.guest?.find((g) => g.index === step?.index)?.frozen;
    };
    expect(frozenAfter('vss freeze')).toEqual(['/mnt/ext4', '/mnt/xfs']);
    expect(frozenAfter('vss thaw')).toEqual([]);
    // after the suspend, the fake THAW has thawed what the second FREEZE froze
    const dmInfos = r.recording.steps.filter((s) => s.text.startsWith('vss dm-info'));
    const afterResume = dmInfos.at(-1);
    expect(r.recording.guest?.find((g) => g.index === afterResume?.index)?.frozen).toEqual([]);
    checkRecording('vss.upstream', normalise(r.recording));
  }, 180_000);

  it('hv_vss_daemon: a rescind it survives through a restart, and a re-offer', async () => {
    const r = await runScenario({
      services: 'vss',
      scenario: join(HERE, 'vss-faults.scenario'),
      command: UPSTREAM.vss,
      freezeSandbox: 'ext4',
      restart: true,
    });
    expect(failures(r.recording), r.stderr).toEqual([]);
    checkRecording('vss-faults.upstream', normalise(r.recording));
  }, 180_000);

  it('hv_fcopy_daemon: a rescind it survives through a restart, and a re-offer', async () => {
    const dir = mkdtempSync(join(scratch, 'fcopy-faults-'));
    const file = join(scratch, 'fcopy-faults.scenario');
    writeFileSync(
      file,
      readFileSync(join(HERE, 'fcopy-faults.scenario.in'), 'utf8').split('@DIR@').join(dir),
    );
    const r = await runScenario({
      services: 'fcopy',
      scenario: file,
      command: UPSTREAM.fcopy,
      restart: true,
    });
    expect(failures(r.recording), r.stderr).toEqual([]);
    expect(readdirSync(dir).sort()).toEqual(['after.txt', 'before.txt']);
    checkRecording('fcopy-faults.upstream', normalise(r.recording, dir));
  }, 180_000);

  it('hv_fcopy_daemon: copies with both flags, the existing-file error, cancel, hibernation (fake CANCEL)', async () => {
    const dir = mkdtempSync(join(scratch, 'fcopy-'));
    const file = join(scratch, 'fcopy.scenario');
    writeFileSync(file, readFileSync(join(HERE, 'fcopy.scenario.in'), 'utf8').split('@DIR@').join(dir));
    const r = await runScenario({ services: 'fcopy', scenario: file, command: UPSTREAM.fcopy });
    expect(failures(r.recording), r.stderr).toEqual([]);
    const files = (sub = ''): string[] =>
      readdirSync(join(dir, sub)).flatMap((f) =>
        statSync(join(dir, sub, f)).isDirectory() ? files(join(sub, f)) : [join(sub, f)],
      );
    expect(files().sort()).toEqual(['after.txt', 'multi.bin', 'new/sub/deep.bin', 'small.txt']);
    expect(readFileSync(join(dir, 'small.txt'), 'utf8')).toBe('replaced');
    expect(readFileSync(join(dir, 'multi.bin'), 'utf8')).toBe('0123456789abcdef'.repeat(2000));
    checkRecording('fcopy.upstream', normalise(r.recording, dir));
  }, 180_000);
});
