/**
 * hv-supervisor as a real process with small shell children: SIGTERM, kill -9, SIGSTOP, the
 * sd_notify messages a real AF_UNIX datagram listener receives, and the status socket.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { REPO } from '../support/shim-harness.js';

const run = promisify(execFile);
const SUPERVISOR = [process.execPath, '--import', 'tsx', `${REPO}/supervisor/main.ts`];
const procs: ChildProcess[] = [];
const dirs: string[] = [];

afterEach(() => {
  for (const p of procs.splice(0)) if (p.exitCode === null) p.kill('SIGKILL');
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'hv-sup-'));
  dirs.push(d);
  return d;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until<T>(f: () => T | undefined, ms: number, what: string): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function startSupervisor(args: string[], env: NodeJS.ProcessEnv = {}) {
  const p = spawn(SUPERVISOR[0]!, [...SUPERVISOR.slice(1), ...args], {
    cwd: REPO,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  procs.push(p);
  const lines: Record<string, unknown>[] = [];
  const raw: string[] = [];
  let buf = '';
  p.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      raw.push(line);
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        /* not JSON */
      }
    }
  });
  let err = '';
  p.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
  const started = () =>
    lines
      .filter((l) => typeof l.msg === 'string' && l.msg.startsWith('started '))
      .map((l) => l.child as number);
  return { p, lines, raw, exited, started, err: () => err };
}

describe('hv-supervisor, real processes', () => {
  it('SIGTERM stops the child and the supervisor exits 0', async () => {
    const s = startSupervisor(['--no-status-socket', '--', 'sleep', '300']);
    const [pid] = await until(() => (s.started().length ? s.started() : undefined), 10_000, 'the child');
    expect(alive(pid!)).toBe(true);
    const t0 = Date.now();
    s.p.kill('SIGTERM');
    expect(await s.exited).toBe(0);
    expect(Date.now() - t0).toBeLessThan(1500);
    expect(alive(pid!)).toBe(false);
  });

  it('a child that ignores SIGTERM is killed at the stop deadline; exit 0', async () => {
    const s = startSupervisor([
      '--no-status-socket',
      '--stop-timeout',
      '300',
      '--',
      'sh',
      '-c',
      'trap "" TERM; echo ready; while :; do sleep 0.05; done',
    ]);
    await until(() => s.raw.includes('ready') || undefined, 10_000, 'the child');
    s.p.kill('SIGTERM');
    expect(await s.exited).toBe(0);
    expect(s.lines.some((l) => /did not stop within 300 ms: SIGKILL/.test(String(l.msg)))).toBe(true);
  });

  it('kill -9 of the child: restarted with a new pid; its stdout lines pass through unchanged', async () => {
    const s = startSupervisor([
      '--no-status-socket',
      '--',
      'sh',
      '-c',
      'echo "plain line $$"; exec sleep 300',
    ]);
    const [first] = await until(() => (s.started().length ? s.started() : undefined), 10_000, 'the child');
    await until(() => s.raw.includes(`plain line ${first}`) || undefined, 5000, 'the line');
    process.kill(first!, 'SIGKILL');
    const second = await until(() => s.started()[1], 5000, 'a restart');
    expect(second).not.toBe(first);
    expect(s.lines.some((l) => l.msg === 'killed by SIGKILL')).toBe(true);
    s.p.kill('SIGTERM');
    expect(await s.exited).toBe(0);
  });

  it('a SIGSTOPped child is detected, killed and restarted', async () => {
    const s = startSupervisor(['--no-status-socket', '--liveness-timeout', '500', '--', 'sleep', '300']);
    const [first] = await until(() => (s.started().length ? s.started() : undefined), 10_000, 'the child');
    process.kill(first!, 'SIGSTOP');
    const second = await until(() => s.started()[1], 5000, 'a restart');
    expect(second).not.toBe(first);
    expect(alive(first!)).toBe(false);
    expect(s.lines.some((l) => /the daemon is hung \(stopped \(state T\)/.test(String(l.msg)))).toBe(true);
    s.p.kill('SIGTERM');
    expect(await s.exited).toBe(0);
  });

  it('a clean exit (0) is not restarted; the supervisor exits 0', async () => {
    const s = startSupervisor(['--no-status-socket', '--', 'true']);
    expect(await s.exited).toBe(0);
    expect(s.started()).toHaveLength(1);
  });

  it('usage errors exit 64', async () => {
    const r = await run(SUPERVISOR[0]!, [...SUPERVISOR.slice(1), '--kind', 'nope', '--', 'true'], {
      cwd: REPO,
    }).catch((e: { code: number; stderr: string }) => e);
    expect((r as { code: number }).code).toBe(64);
    const r2 = await run(SUPERVISOR[0]!, [...SUPERVISOR.slice(1), '--backoff-initial', 'x', '--', 'true'], {
      cwd: REPO,
    }).catch((e: { code: number }) => e);
    expect((r2 as { code: number }).code).toBe(64);
  });

  it('sends READY=1 once registered, STATUS=, WATCHDOG=1 and STOPPING=1 to a real notify socket', async () => {
    const dir = tmp();
    const sock = join(dir, 'notify.sock');
    const listener = spawn(
      'python3',
      [
        '-u',
        '-c',
        [
          'import socket,sys',
          's=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
          `s.bind(${JSON.stringify(sock)})`,
          'print("LISTENING", flush=True)',
          'while True:',
          '    m=s.recv(4096)',
          '    print(repr(m.decode()), flush=True)',
        ].join('\n'),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    procs.push(listener);
    let got = '';
    listener.stdout.on('data', (d: Buffer) => (got += d.toString()));
    await until(() => got.includes('LISTENING') || undefined, 5000, 'the listener');
    const s = startSupervisor(
      [
        '--no-status-socket',
        '--',
        'sh',
        '-c',
        'sleep 0.3; echo \'{"level":"info","msg":"registered with the kernel (KVP version 5)"}\'; exec sleep 300',
      ],
      { NOTIFY_SOCKET: sock, WATCHDOG_USEC: '400000' },
    );
    await until(() => got.includes('READY=1') || undefined, 10_000, 'READY=1');
    const beforeReady = got.slice(0, got.indexOf('READY=1'));
    expect(beforeReady).toMatch(/STATUS=sh: starting \(pid \d+\)/);
    expect(got).toMatch(/READY=1\\nSTATUS=sh: running \(pid \d+\)/);
    await until(() => (got.match(/WATCHDOG=1/g)?.length ?? 0) >= 2 || undefined, 5000, 'two WATCHDOG=1');
    s.p.kill('SIGTERM');
    expect(await s.exited).toBe(0);
    await until(() => got.includes('STOPPING=1') || undefined, 5000, 'STOPPING=1');
    expect(got.match(/READY=1/g)).toHaveLength(1);
  });

  it('a daemon that keeps crashing: the crash loop shows in status, and retries go on slowly', async () => {
    const dir = tmp();
    const sock = join(dir, 'supervisor-other.sock');
    const s = startSupervisor([
      '--status-socket',
      sock,
      '--backoff-initial',
      '50',
      '--backoff-max',
      '400',
      '--crash-loop-count',
      '4',
      '--crash-loop-window',
      '10000',
      '--crash-loop-delay',
      '300',
      '--',
      'sh',
      '-c',
      'exit 3',
    ]);
    await until(() => (s.started().length >= 6 ? true : undefined), 15_000, 'six starts');
    const json = await run(SUPERVISOR[0]!, [...SUPERVISOR.slice(1), 'status', '--socket', sock, '--json'], {
      cwd: REPO,
    });
    const [row] = JSON.parse(json.stdout) as Record<string, unknown>[];
    expect(row).toMatchObject({ crashLoop: true, lastExit: { reason: 'exited with status 3' } });
    expect(row?.restarts as number).toBeGreaterThanOrEqual(5);
    const table = await run(SUPERVISOR[0]!, [...SUPERVISOR.slice(1), 'status', '--socket', sock], {
      cwd: REPO,
    });
    expect(table.stdout).toMatch(/crash loop/);
    // still trying, slowly: more starts come after the loop was declared
    const n = s.started().length;
    await until(() => (s.started().length > n ? true : undefined), 5_000, 'another start');
    s.p.kill('SIGTERM');
    expect(await s.exited).toBe(0);
  });

  it('answers `hv-supervisor status` over a 0600 socket: pid, uptime, restarts, last exit, last request', async () => {
    const dir = tmp();
    const sock = join(dir, 'supervisor-kvp.sock');
    const s = startSupervisor([
      '--kind',
      'kvp',
      '--status-socket',
      sock,
      '--',
      'sh',
      '-c',
      'echo \'{"msg":"KVP SET","operation":"SET","status":"HV_S_OK"}\'; exec sleep 300',
    ]);
    const [first] = await until(() => (s.started().length ? s.started() : undefined), 10_000, 'the child');
    await until(() => s.raw.some((l) => l.includes('KVP SET')) || undefined, 5000, 'the line');
    process.kill(first!, 'SIGKILL');
    const second = await until(() => s.started()[1], 5000, 'a restart');
    await until(
      () => s.raw.filter((l) => l.includes('"KVP SET"')).length >= 2 || undefined,
      5000,
      'the line',
    );
    expect(statSync(sock).mode & 0o777).toBe(0o600);
    const json = await run(SUPERVISOR[0]!, [...SUPERVISOR.slice(1), 'status', '--socket', sock, '--json'], {
      cwd: REPO,
    });
    const [row] = JSON.parse(json.stdout) as Record<string, unknown>[];
    expect(row).toMatchObject({
      kind: 'kvp',
      state: 'running',
      pid: second,
      restarts: 1,
      lastExit: { reason: 'killed by SIGKILL', pid: first },
      lastHostRequest: { operation: 'SET', status: 'HV_S_OK' },
    });
    const table = await run(SUPERVISOR[0]!, [...SUPERVISOR.slice(1), 'status', '--socket', sock], {
      cwd: REPO,
    });
    expect(table.stdout).toMatch(/^DAEMON\s+STATE\s+PID\s+UPTIME\s+RESTARTS\s+LAST EXIT\s+LAST HOST REQUEST/);
    expect(table.stdout).toMatch(new RegExp(`kvp\\s+\\S+\\s+${second}\\s+\\d+s\\s+1\\s+killed by SIGKILL`));
    expect(table.stdout).toMatch(/SET HV_S_OK, \d+s ago/);
    s.p.kill('SIGTERM');
    expect(await s.exited).toBe(0);
    expect(() => statSync(sock)).toThrow(); // removed at exit
  });
});
