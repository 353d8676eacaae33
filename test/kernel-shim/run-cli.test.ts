/**
 * `kernel-shim run` as a program: the namespace keeps every mount private, a stop by SIGTERM or
 * SIGINT is clean, a SIGKILL of the shim leaves no stale mount behind, and the console drives the
 * host from piped input.
 */
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { childrenOf } from '../support/procs.js';
import { until } from '../support/until.js';

const REPO = resolve(import.meta.dirname, '../..');
const CLI = [process.execPath, '--import', 'tsx', `${REPO}/kernel-shim/cli.ts`];

function start(args: string[], input?: string, env: Record<string, string> = {}) {
  const child = spawn(CLI[0]!, [...CLI.slice(1), ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  if (input !== undefined) child.stdin.end(input);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.on('exit', (code, signal) => r({ code, signal })),
  );
  return { child, exited, out: () => out, err: () => err };
}

const hostMounts = () =>
  readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .filter((l) => /hvshim|hv-shim-/.test(l));

/** The shim re-executed inside the namespace: a node descendant of `outer` (outer → unshare → node). */
function innerShim(outer: number): number | undefined {
  for (const unshare of childrenOf(outer))
    for (const pid of childrenOf(unshare)) {
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('kernel-shim/cli.ts')) return pid;
      } catch {
        // gone
      }
    }
  return undefined;
}

describe('kernel-shim run', () => {
  it('passes the exit status on; the mounts exist only inside its namespace', async () => {
    const r = start([
      'run',
      '--services',
      'kvp',
      '--',
      'sh',
      '-c',
      'test -e /dev/vmbus/hv_kvp && grep -q hvshim /proc/self/mounts && exit 7',
    ]);
    expect((await r.exited).code).toBe(7);
    expect(hostMounts()).toEqual([]);
  }, 60_000);

  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    it(`stops cleanly on ${sig}: the command is stopped, nothing is left mounted`, async () => {
      const r = start(['run', '--services', 'kvp,vss', '--', 'sleep', '600']);
      await until(() => /devices/.test(r.err()), 20_000, 'the shim to serve its devices');
      r.child.kill(sig);
      const { code } = await r.exited;
      expect(code).not.toBeNull();
      expect(hostMounts()).toEqual([]);
    }, 60_000);
  }

  it('a stop requested while the shim inside the namespace is still starting is not lost', async () => {
    // The shim is PID 1 of its namespace: the kernel drops a signal that reaches it before it has
    // installed a handler, so a stop forwarded once at that moment would be lost (the command then
    // runs on). Signal as soon as the inner shim process exists, and at moments after that.
    for (const delayMs of [0, 100, 250, 500]) {
      const r = start(['run', '--stop-timeout', '1000', '--services', 'kvp', '--', 'sleep', '600']);
      await until(() => innerShim(r.child.pid!) !== undefined, 20_000, 'the shim inside the namespace');
      await new Promise((done) => setTimeout(done, delayMs));
      const t0 = Date.now();
      r.child.kill('SIGTERM');
      const ended = await Promise.race([
        r.exited,
        new Promise<'hung'>((done) => setTimeout(done, 30_000, 'hung')),
      ]);
      if (ended === 'hung') r.child.kill('SIGKILL');
      expect(ended, `SIGTERM ${delayMs} ms after the inner shim started`).not.toBe('hung');
      // not by the outer deadline (--stop-timeout + 10 s): the shim itself heard the stop
      expect(Date.now() - t0).toBeLessThan(8_000);
      await until(() => hostMounts().length === 0, 10_000);
    }
  }, 180_000);

  it('a SIGKILL of the shim leaves no stale mount (the namespace dies with its processes)', async () => {
    const marker = `hv-sigkill-${process.pid}`;
    // a grandchild of the shim: it carries the marker through its environment
    const r = start(['run', '--services', 'kvp', '--', 'sh', '-c', 'sleep 600; true', marker], undefined, {
      HV_TEST_MARKER: marker,
    });
    await until(() => /devices/.test(r.err()), 20_000, 'the shim to serve its devices');
    r.child.kill('SIGKILL');
    await r.exited;
    // unshare --kill-child takes the sandbox's processes with it; the namespace and its mounts go.
    await until(() => hostMounts().length === 0, 10_000);
    // and no process of the sandbox survives (an orphan would keep the namespace alive)
    const pids = () =>
      readdirSync('/proc')
        .filter((d) => /^\d+$/.test(d))
        .filter((d) => {
          try {
            return (
              readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(marker) ||
              readFileSync(`/proc/${d}/environ`, 'utf8').includes(marker)
            );
          } catch {
            return false;
          }
        });
    await until(() => pids().length === 0, 10_000);
  }, 60_000);

  it('the console drives the host from piped input', async () => {
    const r = start(
      ['run', '--services', 'kvp', '--console', '--', '/usr/sbin/hv_kvp_daemon', '-n'],
      'wait-ready kvp 20s\nkvp set Console works\nkvp get Console\nkvp list external\nquit\n',
    );
    await r.exited;
    expect(r.out()).toMatch(/HV_S_OK/);
    expect(r.out()).toMatch(/Console/);
    expect(hostMounts()).toEqual([]);
  }, 60_000);
});
