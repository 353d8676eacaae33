/**
 * The shim's devices as FUSE files, used through real system calls by another process (Python):
 * a registration and a host round trip, a blocked read interrupted by a signal (EINTR), a second
 * opener (EBUSY), and a rescind seen by the reader (EBADF), then the node gone (ENOENT) and back.
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HV_S_OK } from '../../uapi/constants.js';
import { type DeviceFiles, mountDeviceFiles } from '../../kernel-shim/device-files.js';
import { KernelShim } from '../../kernel-shim/shim.js';

/** A Python REPL-ish client: each stdin line is a statement; each result is printed as JSON. */
class PyClient {
  readonly proc: ChildProcessWithoutNullStreams;
  private buf = '';
  private waiters: ((line: string) => void)[] = [];

  constructor() {
    const prog = [
      'import os, sys, json, signal, struct',
      // Python retries a syscall on EINTR unless the handler raises (PEP 475).
      'def on_usr1(*a): raise InterruptedError(4, "Interrupted system call")',
      'signal.signal(signal.SIGUSR1, on_usr1)',
      'fds = {}',
      'for line in sys.stdin:',
      '    try:',
      '        r = eval(line)',
      '        print(json.dumps({"ok": r if not isinstance(r, bytes) else r.hex()}), flush=True)',
      '    except OSError as e:',
      '        print(json.dumps({"errno": e.errno}), flush=True)',
    ].join('\n');
    this.proc = spawn('python3', ['-u', '-c', prog]);
    this.proc.stdout.on('data', (d: Buffer) => {
      this.buf += d.toString();
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        this.waiters.shift()?.(line);
      }
    });
  }

  /** Evaluate a Python expression in the client; resolves with {ok} or {errno}. */
  eval(expr: string): Promise<{ ok?: unknown; errno?: number }> {
    return new Promise((resolve) => {
      this.waiters.push((line) => resolve(JSON.parse(line) as { ok?: unknown; errno?: number }));
      this.proc.stdin.write(`${expr}\n`);
    });
  }

  kill(): void {
    this.proc.kill('SIGKILL');
  }
}

let dir: string;
let shim: KernelShim;
let files: DeviceFiles;
const clients: PyClient[] = [];

beforeEach(async () => {
  if (process.getuid?.() !== 0) throw new Error('these tests mount FUSE and need root (CI runs as root)');
  dir = mkdtempSync(join(tmpdir(), 'hv-devfiles-'));
  shim = new KernelShim({ services: ['kvp', 'vss'] });
  files = await mountDeviceFiles(shim, dir);
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.kill();
  await files.unmount();
  rmSync(dir, { recursive: true, force: true });
});

function client(): PyClient {
  const c = new PyClient();
  clients.push(c);
  return c;
}

describe('device files through real system calls', () => {
  it('register, then serve a host SET; a second opener gets EBUSY', async () => {
    const py = client();
    const path = join(dir, 'hv_kvp');
    expect(await py.eval(`fds.__setitem__("k", os.open(${JSON.stringify(path)}, os.O_RDWR)) or 0`)).toEqual({
      ok: 0,
    });
    expect(await py.eval(`os.write(fds["k"], bytes([100]) + bytes(7431))`)).toEqual({ ok: 7432 });
    const reply = await py.eval(`os.read(fds["k"], 8192)`);
    expect(String(reply.ok).slice(0, 2)).toBe('64'); // operation 100
    expect(Buffer.from(String(reply.ok), 'hex').subarray(4, 7).toString()).toBe('3.1');
    const other = client();
    expect(await other.eval(`os.open(${JSON.stringify(path)}, os.O_RDWR)`)).toEqual({ errno: 16 });
    const set = shim.host.kvp.addItem('key', 'value');
    const req = await py.eval(`os.read(fds["k"], 8192)`);
    const msg = Buffer.from(String(req.ok), 'hex');
    expect(msg.length).toBe(7432);
    expect(msg[0]).toBe(1);
    expect(msg.subarray(16, 19).toString()).toBe('key');
    expect(await py.eval(`os.write(fds["k"], bytes(7432))`)).toEqual({ ok: 7432 });
    expect((await set).status).toBe(HV_S_OK);
  });

  it('a blocked read interrupted by a signal returns EINTR, and poll wakes when a message is queued', async () => {
    const py = client();
    const path = join(dir, 'hv_vss');
    await py.eval(`fds.__setitem__("v", os.open(${JSON.stringify(path)}, os.O_RDWR)) or 0`);
    const pending = py.eval(`os.read(fds["v"], 64)`);
    await new Promise((r) => setTimeout(r, 200));
    py.proc.kill('SIGUSR1');
    expect(await pending).toEqual({ errno: 4 });
    // poll: register (queues the 4-byte reply), then poll sees it readable
    expect(await py.eval(`os.write(fds["v"], bytes([129]) + bytes(11))`)).toEqual({ ok: 12 });
    expect(await py.eval(`__import__("select").select([fds["v"]], [], [], 5)[0] == [fds["v"]]`)).toEqual({
      ok: true,
    });
    expect(await py.eval(`os.read(fds["v"], 64)`)).toEqual({ ok: '81000000' });
  });

  it('rescind: the blocked reader gets EBADF, the node goes once closed, a re-offer brings it back', async () => {
    const py = client();
    const path = join(dir, 'hv_kvp');
    await py.eval(`fds.__setitem__("k", os.open(${JSON.stringify(path)}, os.O_RDWR)) or 0`);
    const pending = py.eval(`os.read(fds["k"], 8192)`);
    await new Promise((r) => setTimeout(r, 200));
    const rescind = files.rescind('kvp');
    expect(await pending).toEqual({ errno: 9 });
    expect(await py.eval(`os.write(fds["k"], bytes(7432))`)).toEqual({ errno: 9 });
    expect(await py.eval(`os.close(fds["k"])`)).toEqual({ ok: null });
    await rescind;
    expect(await py.eval(`os.open(${JSON.stringify(path)}, os.O_RDWR)`)).toEqual({ errno: 2 });
    files.reoffer('kvp');
    expect(await py.eval(`os.open(${JSON.stringify(path)}, os.O_RDWR) > 0`)).toEqual({ ok: true });
  });
});
