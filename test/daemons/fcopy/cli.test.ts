/**
 * The hv-fcopy-ts program as an administrator meets it: --help and --version, upstream's -n, the
 * exit codes of a bad command line (64) and a bad configuration (78), and a prompt stop on SIGTERM
 * while it waits for a device that is not there.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO } from './run-harness.js';

const MAIN = join(REPO, 'daemons', 'fcopy', 'main.ts');
const dir = mkdtempSync(join(tmpdir(), 'fcopy-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const run = (args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', MAIN, ...args], {
    cwd: REPO,
    encoding: 'utf8',
    timeout: 20_000,
  });

describe('hv-fcopy-ts command line', () => {
  it('--help lists the options and exits 0', () => {
    const r = run(['--help']);
    expect(r.status).toBe(0);
    for (const opt of [
      '-n, --no-daemon',
      '--config <file>',
      '--state-dir <dir>',
      '--device <path>',
      '--log-level',
    ]) {
      expect(r.stdout).toContain(opt);
    }
    expect(r.stdout).toContain('Usage: hv-fcopy-ts');
  });

  it('--version', () => {
    const r = run(['--version']);
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('an unknown option: 64 and a hint', () => {
    const r = run(['--frobnicate']);
    expect(r.status).toBe(64);
    expect(r.stderr).toContain("Try 'hv-fcopy-ts --help'");
  });

  it('a bad or missing named configuration file: 78, with the line at fault', () => {
    const bad = join(dir, 'bad.conf');
    writeFileSync(bad, 'file-mode = rw-r--r--\n');
    const r = run(['-n', '--config', bad, '--state-dir', join(dir, 'state')]);
    expect(r.status).toBe(78);
    expect(r.stdout).toContain('bad.conf:1: file-mode: an octal mode of at most 0777 expected');
    const m = run(['-n', '--config', join(dir, 'absent.conf')]);
    expect(m.status).toBe(78);
    expect(m.stdout).toContain('ENOENT');
  });

  it('stops within a second on SIGTERM while waiting for its device', async () => {
    const conf = join(dir, 'ok.conf');
    const state = join(dir, 'state-ok');
    writeFileSync(conf, `state-dir = ${state}\n`);
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', MAIN, '-n', '--config', conf, '--device', join(dir, 'no-such-device')],
      { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const end = Date.now() + 15_000;
    while (!out.includes('cannot open') && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    expect(out).toContain('the device node is absent');
    expect(existsSync(join(state, 'lock'))).toBe(true);
    const t0 = Date.now();
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(Date.now() - t0).toBeLessThan(1000);
  });
});
