/**
 * The FUSE server against the real kernel: struct layouts against <linux/fuse.h>, the session's
 * dispatch with a fake channel, and — the main part — a file system mounted on a fresh temp
 * directory, driven through real system calls from separate processes (a python3 client using
 * libc read/pread/write via ctypes, so that EINTR is seen rather than retried).
 *
 * These tests never skip: without /dev/fuse, root, gcc or python3 they fail and say why.
 * Every mount is on a directory made here with mkdtemp, and is unmounted in afterEach/afterAll even
 * when a test fails.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { isRunning } from '../../support/procs.js';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  errno,
  type FuseFileHandler,
  type PendingRead,
  POLLERR,
  POLLHUP,
  POLLIN,
  POLLRDNORM,
} from '../../../kernel-shim/fuse/files.js';
import { type FuseMount, isMountPoint, mountFuse } from '../../../kernel-shim/fuse/mount.js';
import { STREAM_MAX_WRITE } from '../../../kernel-shim/fuse/stream-channel.js';
import {
  decode,
  encode,
  encodeDirents,
  FUSE_HEADER_CONSTANTS,
  FUSE_POLL_SCHEDULE_NOTIFY,
  FUSE_STRUCTS,
  fieldLayout,
  fuse_attr_out,
  fuse_dirent,
  fuse_entry_out,
  fuse_in_header,
  fuse_init_in,
  fuse_init_out,
  fuse_interrupt_in,
  fuse_open_out,
  fuse_out_header,
  fuse_poll_in,
  fuse_poll_out,
  fuse_read_in,
  FuseDecodeError,
  FuseInitFlag,
  FuseOpcode,
  negotiateInit,
  parseRequest,
} from '../../../kernel-shim/fuse/protocol.js';
import {
  type FuseChannel,
  type FuseEndReason,
  FuseSession,
  type FuseTraceEvent,
} from '../../../kernel-shim/fuse/session.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const FUSE_H = '/usr/include/linux/fuse.h';
const EBADF = 9;
const EINTR = 4;
const EBUSY = 16;
const EINVAL = 22;
const ENOENT = 2;
const ENOSYS = 38;
const ESPIPE = 29;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

// =============================================================================================
// 1. Struct layouts and constants against the real header
// =============================================================================================

describe('protocol layouts against <linux/fuse.h>', () => {
  let out: string;

  beforeAll(() => {
    if (!existsSync(FUSE_H)) throw new Error(`${FUSE_H} is missing: install linux-libc-dev`);
    const lines = [
      '#include <stddef.h>',
      '#include <stdio.h>',
      '#include <linux/fuse.h>',
      'int main(void) {',
    ];
    for (const s of FUSE_STRUCTS) {
      lines.push(`  printf("size ${s.name} %zu\\n", sizeof(struct ${s.name}));`);
      for (const f of Object.keys(s.fields)) {
        lines.push(
          `  printf("field ${s.name}.${f} %zu %zu\\n", offsetof(struct ${s.name}, ${f}), sizeof(((struct ${s.name} *)0)->${f}));`,
        );
      }
    }
    for (const c of Object.keys(FUSE_HEADER_CONSTANTS)) {
      lines.push(`  printf("const ${c} %lld\\n", (long long)(${c}));`);
    }
    lines.push('  return 0;', '}');
    const dir = mkdtempSync(join(tmpdir(), 'fuse-probe-'));
    try {
      writeFileSync(join(dir, 'p.c'), lines.join('\n') + '\n');
      execFileSync('cc', ['-std=gnu11', '-Wall', '-Werror', '-o', join(dir, 'p'), join(dir, 'p.c')], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      out = execFileSync(join(dir, 'p'), { encoding: 'utf8' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('every struct size, field offset and field size matches', () => {
    const facts = new Map(
      out.split('\n').map((l) => [l.split(' ').slice(0, 2).join(' '), l.split(' ').slice(2)]),
    );
    const wrong: string[] = [];
    for (const s of FUSE_STRUCTS) {
      const size = Number(facts.get(`size ${s.name}`)?.[0]);
      if (size !== s.size) wrong.push(`sizeof ${s.name}: ours ${s.size}, header ${size}`);
      for (const [f, spec] of Object.entries(s.fields)) {
        const [off, sz] = (facts.get(`field ${s.name}.${f}`) ?? []).map(Number);
        const ours = { off: s.offsets[f], size: fieldLayout(spec).size };
        if (off !== ours.off || sz !== ours.size) {
          wrong.push(`${s.name}.${f}: ours @${ours.off}+${ours.size}, header @${off}+${sz}`);
        }
      }
    }
    expect(wrong).toEqual([]);
  });

  it('every constant matches', () => {
    const consts = new Map(
      out
        .split('\n')
        .filter((l) => l.startsWith('const '))
        .map((l) => [l.split(' ')[1], BigInt(l.split(' ')[2]!)]),
    );
    const wrong = Object.entries(FUSE_HEADER_CONSTANTS)
      .filter(([k, v]) => consts.get(k) !== BigInt(v))
      .map(([k, v]) => `${k}: ours ${v}, header ${consts.get(k)}`);
    expect(wrong).toEqual([]);
  });
});

// =============================================================================================
// 2. Pure codecs
// =============================================================================================

function request(opcode: number, unique: bigint, nodeid: bigint, ...body: Buffer[]): Buffer {
  const b = Buffer.concat(body);
  const h = encode(fuse_in_header, {
    len: fuse_in_header.size + b.length,
    opcode,
    unique,
    nodeid,
    pid: 4242,
  });
  return Buffer.concat([h, b]);
}

describe('protocol codecs', () => {
  const prefs = { maxWrite: 131072, maxPages: 256, wantedFlags: FuseInitFlag.FUSE_MAX_PAGES };

  it('INIT: negotiates the smaller minor and intersects the flags', () => {
    const kernel = decode(
      fuse_init_in,
      encode(fuse_init_in, { major: 7, minor: 45, max_readahead: 65536, flags: 0xffffffff }),
    );
    const r = negotiateInit(kernel, prefs);
    expect(r.kind).toBe('reply');
    if (r.kind !== 'reply') return;
    const o = decode(fuse_init_out, r.payload);
    expect(r.payload.length).toBe(64);
    expect(o).toMatchObject({ major: 7, minor: 38, flags: FuseInitFlag.FUSE_MAX_PAGES, max_write: 131072 });
    expect(o.max_pages).toBe(256);
  });

  it('INIT: 7.22 gets the 24-byte reply, 7.11 is refused, major 8 gets a major-only reply', () => {
    const old = negotiateInit(decode(fuse_init_in, encode(fuse_init_in, { major: 7, minor: 22 })), prefs);
    expect(old.kind === 'reply' && old.payload.length).toBe(24);
    const tooOld = negotiateInit(decode(fuse_init_in, encode(fuse_init_in, { major: 7, minor: 11 })), prefs);
    expect(tooOld.kind).toBe('error');
    const newer = negotiateInit(decode(fuse_init_in, encode(fuse_init_in, { major: 8, minor: 0 })), prefs);
    expect(
      newer.kind === 'major-only' &&
        decode(fuse_init_out, Buffer.concat([newer.payload, Buffer.alloc(56)])).major,
    ).toBe(7);
  });

  it('parseRequest checks the length and strips extensions', () => {
    const f = request(FuseOpcode.GETATTR, 2n, 1n, Buffer.alloc(16));
    expect(parseRequest(f).body.length).toBe(16);
    expect(() => parseRequest(f.subarray(0, 50))).toThrow(FuseDecodeError);
    const withExt = Buffer.from(f);
    withExt.writeUInt16LE(1, 36); // total_extlen: one 8-byte unit
    expect(parseRequest(withExt).body.length).toBe(8);
  });

  it('READDIR records are 8-byte aligned and stop at the size limit', () => {
    const entries = [
      { ino: 1n, name: '.', type: 4 },
      { ino: 1n, name: '..', type: 4 },
      { ino: 2n, name: 'hv_kvp', type: 8 },
    ];
    const all = encodeDirents(entries, 0, 4096);
    expect(all.length).toBe(32 + 32 + 32);
    const third = decode(fuse_dirent, all, 64);
    expect(third).toEqual({ ino: 2n, off: 3n, namelen: 6, type: 8 });
    expect(all.subarray(64 + 24, 64 + 30).toString()).toBe('hv_kvp');
    expect(encodeDirents(entries, 1, 63).length).toBe(32);
    expect(encodeDirents(entries, 3, 4096).length).toBe(0);
  });
});

// =============================================================================================
// 3. Session dispatch with a fake channel (no kernel)
// =============================================================================================

class FakeChannel implements FuseChannel {
  written: Buffer[] = [];
  private onFrame!: (f: Buffer) => void;
  private onEnd!: (r: FuseEndReason) => void;
  start(onFrame: (f: Buffer) => void, onEnd: (r: FuseEndReason) => void): void {
    this.onFrame = onFrame;
    this.onEnd = onEnd;
  }
  write(data: Buffer): void {
    this.written.push(data);
  }
  close(): void {
    this.onEnd('aborted');
  }
  push(frame: Buffer): void {
    this.onFrame(frame);
  }
  /** The reply for `unique`: error (positive errno) and payload. */
  reply(unique: bigint): { errno: number; payload: Buffer } | undefined {
    for (const w of this.written) {
      const h = decode(fuse_out_header, w);
      if (h.unique === unique) return { errno: -h.error || 0, payload: w.subarray(16) };
    }
    return undefined;
  }
}

describe('FuseSession dispatch (fake channel)', () => {
  function setup(handler: FuseFileHandler): { ch: FakeChannel; s: FuseSession } {
    const ch = new FakeChannel();
    const s = new FuseSession(ch, [['f', handler]]);
    s.start();
    ch.push(
      request(FuseOpcode.INIT, 1n, 0n, encode(fuse_init_in, { major: 7, minor: 38, flags: 0xffffffff })),
    );
    return { ch, s };
  }

  function open(ch: FakeChannel): bigint {
    ch.push(request(FuseOpcode.LOOKUP, 3n, 1n, Buffer.from('f\0')));
    const node = decode(fuse_entry_out, ch.reply(3n)!.payload).nodeid;
    ch.push(request(FuseOpcode.OPEN, 5n, node, Buffer.alloc(8)));
    return decode(fuse_open_out, ch.reply(5n)!.payload).fh;
  }

  function readReq(unique: bigint, fh: bigint, size: number): Buffer {
    return request(FuseOpcode.READ, unique, 2n, encode(fuse_read_in, { fh, size }));
  }

  it('sends a large READ reply as header and payload in one writeParts call, small ones joined', () => {
    class VectorChannel extends FakeChannel {
      parts: number[] = [];
      writeParts(parts: readonly Uint8Array[]): void {
        this.parts.push(parts.length);
        this.write(Buffer.concat(parts));
      }
    }
    const ch = new VectorChannel();
    const message = Buffer.alloc(7432, 0x5a);
    const s = new FuseSession(ch, [
      [
        'f',
        {
          open: () => 1,
          read: (_fh, r) => r.reply(r.size > 100 ? message : Buffer.from('tiny')),
          write: () => 0,
          release: () => {},
        },
      ],
    ]);
    s.start();
    ch.push(
      request(FuseOpcode.INIT, 1n, 0n, encode(fuse_init_in, { major: 7, minor: 38, flags: 0xffffffff })),
    );
    const fh = open(ch);
    ch.push(readReq(7n, fh, 8192));
    expect(ch.parts).toEqual([2]);
    const big = ch.written.at(-1)!;
    expect(decode(fuse_out_header, big)).toEqual({ len: 16 + 7432, error: 0, unique: 7n });
    expect(ch.reply(7n)!.payload).toEqual(message);
    ch.push(readReq(9n, fh, 50));
    expect(ch.parts).toEqual([2]); // a small reply is one joined buffer, through write
    expect(ch.reply(9n)!.payload.toString()).toBe('tiny');
  });

  it('defers a READ, completes it with EINTR on FUSE_INTERRUPT by default, and ignores late replies', () => {
    let parked: PendingRead | undefined;
    const { ch, s } = setup({
      open: () => 1,
      read: (_fh, r) => (parked = r),
      write: () => 0,
      release: () => {},
    });
    const fh = open(ch);
    ch.push(readReq(7n, fh, 100));
    expect(ch.reply(7n)).toBeUndefined();
    expect(s.stats().pendingReads).toBe(1);
    ch.push(request(FuseOpcode.INTERRUPT, 9n, 0n, encode(fuse_interrupt_in, { unique: 7n })));
    expect(ch.reply(7n)!.errno).toBe(EINTR);
    expect(ch.reply(9n)).toBeUndefined(); // INTERRUPT itself gets no reply
    expect(parked!.interrupted && parked!.settled).toBe(true);
    expect(parked!.reply(Buffer.from('late'))).toBe(false);
    expect(s.stats().pendingReads).toBe(0);
  });

  it('a reply larger than the READ size becomes EIO', () => {
    const { ch } = setup({
      open: () => 1,
      read: (_fh, r) => r.reply(Buffer.alloc(10)),
      write: () => 0,
      release: () => {},
    });
    const fh = open(ch);
    ch.push(readReq(7n, fh, 4));
    expect(ch.reply(7n)!.errno).toBe(5);
  });

  it('unknown opcodes get ENOSYS; FORGET gets nothing; requests before INIT get EIO', () => {
    const ch = new FakeChannel();
    const s = new FuseSession(ch, []);
    s.start();
    ch.push(request(FuseOpcode.GETATTR, 1n, 1n, Buffer.alloc(16)));
    expect(ch.reply(1n)!.errno).toBe(5);
    ch.push(request(FuseOpcode.INIT, 3n, 0n, encode(fuse_init_in, { major: 7, minor: 38 })));
    expect(ch.reply(3n)!.errno).toBe(0);
    ch.push(request(FuseOpcode.SYMLINK, 5n, 1n, Buffer.from('a\0b\0')));
    ch.push(request(999, 7n, 1n));
    ch.push(request(FuseOpcode.FORGET, 9n, 2n, Buffer.alloc(8)));
    expect([ch.reply(5n)!.errno, ch.reply(7n)!.errno, ch.reply(9n)]).toEqual([ENOSYS, ENOSYS, undefined]);
    ch.push(request(FuseOpcode.GETATTR, 11n, 1n, Buffer.alloc(16)));
    expect(decode(fuse_attr_out, ch.reply(11n)!.payload).attr.mode).toBe(0o40755);
  });

  it('POLL: stores the kernel handle and sends one notification per scheduled poll', () => {
    let wake: (() => void) | undefined;
    let ready = 0;
    const { ch } = setup({
      open: () => 1,
      read: () => {},
      write: () => 0,
      poll: (_fh, _ev, w) => ((wake = w), ready),
      release: () => {},
    });
    const fh = open(ch);
    const poll = (unique: bigint, flags: number): Buffer =>
      request(FuseOpcode.POLL, unique, 2n, encode(fuse_poll_in, { fh, kh: 0xabcn, flags, events: POLLIN }));
    ch.push(poll(11n, FUSE_POLL_SCHEDULE_NOTIFY));
    expect(decode(fuse_poll_out, ch.reply(11n)!.payload).revents).toBe(0);
    const notifies = (): Buffer[] => ch.written.filter((w) => decode(fuse_out_header, w).unique === 0n);
    ready = POLLIN;
    wake!();
    wake!();
    expect(notifies().map((n) => [decode(fuse_out_header, n).error, n.readBigUInt64LE(16)])).toEqual([
      [1, 0xabcn],
    ]);
    ch.push(poll(13n, 0)); // no waiter: not armed
    wake!();
    expect(notifies()).toHaveLength(1);
  });

  it('the end of the connection releases files that are still open', async () => {
    let released = 0;
    const { ch, s } = setup({ open: () => 1, read: () => {}, write: () => 0, release: () => released++ });
    open(ch);
    s.abort();
    expect(released).toBe(1);
    expect(await s.closed).toEqual({ reason: 'aborted' });
  });
});

// =============================================================================================
// 4. Against the kernel
// =============================================================================================

/** A tiny hvutil-like device: one opener, one whole message per read, blocking reads, poll. */
class EchoDevice implements FuseFileHandler {
  opened = false;
  destroyed = false;
  queue: Buffer[] = [];
  readers: PendingRead[] = [];
  wake: (() => void) | undefined;
  opens = 0;
  releases = 0;
  interrupts = 0;
  readSizes: number[] = [];
  writeSizes: number[] = [];

  open(): number | ReturnType<typeof errno> {
    if (this.destroyed) return errno('EBADF');
    if (this.opened) return errno('EBUSY');
    this.opened = true;
    this.opens++;
    return 1;
  }

  read(_fh: number, req: PendingRead): void {
    this.readSizes.push(req.size);
    if (this.destroyed) {
      req.error('EBADF');
      return;
    }
    if (this.queue.length > 0) {
      this.serve(req);
      return;
    }
    req.onInterrupt(() => {
      this.interrupts++;
      this.readers = this.readers.filter((r) => r !== req);
      req.error('EINTR');
    });
    this.readers.push(req);
  }

  write(_fh: number, data: Buffer): number | ReturnType<typeof errno> {
    if (this.destroyed) return errno('EBADF');
    this.writeSizes.push(data.length);
    this.push(Buffer.from(data));
    return data.length;
  }

  poll(_fh: number, _events: number, wake: () => void): number {
    this.wake = wake;
    if (this.destroyed) return POLLERR | POLLHUP;
    return this.queue.length > 0 ? POLLIN | POLLRDNORM : 0;
  }

  release(): void {
    this.opened = false;
    this.releases++;
    this.queue = [];
    this.readers = [];
    this.wake = undefined;
  }

  /** Queue a message (from the "kernel" side). */
  push(msg: Buffer): void {
    this.queue.push(msg);
    while (this.readers.length > 0 && this.queue.length > 0) this.serve(this.readers.shift()!);
    this.wake?.();
  }

  /** Rescind: readers fail with EBADF, poll reports POLLERR|POLLHUP, opens fail with EBADF. */
  destroy(): void {
    this.destroyed = true;
    for (const r of this.readers.splice(0)) r.error('EBADF');
    this.wake?.();
  }

  private serve(req: PendingRead): void {
    const m = this.queue[0]!;
    if (req.size < m.length) {
      req.error('EINVAL');
      return;
    }
    this.queue.shift();
    req.reply(m);
  }
}

const PY_CLIENT = String.raw`
import ctypes, json, os, select, signal, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
ssize, sz, vp, off = ctypes.c_ssize_t, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_long
for name, args in (('read', [ctypes.c_int, vp, sz]), ('write', [ctypes.c_int, vp, sz]),
                   ('pread', [ctypes.c_int, vp, sz, off]), ('pwrite', [ctypes.c_int, vp, sz, off])):
    f = getattr(libc, name); f.argtypes = args; f.restype = ssize
signal.signal(signal.SIGUSR1, lambda s, f: None)
signal.siginterrupt(signal.SIGUSR1, True)
lock = threading.Lock()
threads = {}
def out(o):
    with lock:
        sys.stdout.write(json.dumps(o) + '\n'); sys.stdout.flush()
def run(c):
    op = c['op']
    try:
        if op == 'open':
            return {'fd': os.open(c['path'], os.O_RDWR)}
        if op in ('read', 'pread'):
            n = c['size']; buf = ctypes.create_string_buffer(max(n, 1))
            out({'id': c['id'], 'started': True})
            r = libc.read(c['fd'], buf, n) if op == 'read' else libc.pread(c['fd'], buf, n, c.get('offset', 0))
            if r < 0: return {'errno': ctypes.get_errno()}
            return {'n': r, 'data': buf.raw[:r].decode('latin1')}
        if op in ('write', 'pwrite'):
            d = c['data'].encode('latin1')
            out({'id': c['id'], 'started': True})
            r = libc.write(c['fd'], d, len(d)) if op == 'write' else libc.pwrite(c['fd'], d, len(d), c.get('offset', 0))
            if r < 0: return {'errno': ctypes.get_errno()}
            return {'n': r}
        if op == 'poll':
            p = select.poll(); p.register(c['fd'], c.get('events', select.POLLIN))
            out({'id': c['id'], 'started': True})
            ev = p.poll(c.get('timeout', -1))
            return {'revents': ev[0][1] if ev else 0}
        if op == 'close':
            os.close(c['fd']); return {}
        if op == 'signal':
            signal.pthread_kill(threads[c['target']].ident, signal.SIGUSR1); return {}
        if op == 'listdir':
            return {'names': sorted(os.listdir(c['path']))}
        if op == 'stat':
            st = os.stat(c['path']); return {'mode': st.st_mode, 'size': st.st_size}
        if op == 'mkdir':
            os.mkdir(c['path']); return {}
        return {'errno': -1}
    except OSError as e:
        return {'errno': e.errno}
def job(c):
    r = run(c); r['id'] = c['id']; r['done'] = True; out(r)
for line in sys.stdin:
    c = json.loads(line)
    if c.get('bg'):
        t = threading.Thread(target=job, args=(c,), daemon=True); threads[c['id']] = t; t.start()
    else:
        job(c)
`;

interface PyResult {
  id: number;
  errno?: number;
  fd?: number;
  n?: number;
  data?: string;
  revents?: number;
  names?: string[];
  mode?: number;
}

/** A python3 process that performs system calls on request (one JSON line per command). */
class PyClient {
  readonly proc: ChildProcess;
  private nextId = 1;
  private readonly started = new Map<number, () => void>();
  private readonly done = new Map<number, (r: PyResult) => void>();
  private stderr = '';

  constructor(scriptPath: string) {
    this.proc = spawn('python3', ['-u', scriptPath], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stderr!.setEncoding('utf8').on('data', (s: string) => (this.stderr += s));
    createInterface({ input: this.proc.stdout! }).on('line', (line) => {
      const m = JSON.parse(line) as PyResult & { started?: boolean; done?: boolean };
      if (m.started) this.started.get(m.id)?.();
      if (m.done) this.done.get(m.id)?.(m);
    });
  }

  /** Runs a command in a background thread: resolves `started` just before the system call. */
  bg(cmd: Record<string, unknown>): { id: number; started: Promise<void>; done: Promise<PyResult> } {
    const id = this.nextId++;
    const started = new Promise<void>((r) => this.started.set(id, r));
    const done = new Promise<PyResult>((resolve, reject) => {
      this.done.set(id, resolve);
      this.proc.once('exit', () => reject(new Error(`python client exited: ${this.stderr}`)));
    });
    done.catch(() => {});
    this.proc.stdin!.write(JSON.stringify({ ...cmd, id, bg: true }) + '\n');
    return { id, started, done };
  }

  call(cmd: Record<string, unknown>): Promise<PyResult> {
    return this.bg(cmd).done;
  }

  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

const READERS = ['in-process', 'helper'] as const;
const readerOptions = (reader: (typeof READERS)[number]) =>
  reader === 'in-process' ? { reader, maxWrite: STREAM_MAX_WRITE } : { reader };

for (const reader of READERS)
  describe(`FUSE file system through real system calls (${reader} reader)`, () => {
    let work: string;
    let pyScript: string;
    const mounts: FuseMount[] = [];
    const clients: PyClient[] = [];
    const dirs: string[] = [];

    beforeAll(() => {
      if (!existsSync('/dev/fuse')) {
        throw new Error(
          '/dev/fuse is missing: these tests need a kernel with CONFIG_FUSE_FS and the /dev/fuse node',
        );
      }
      if (process.getuid?.() !== 0)
        throw new Error('these tests mount a FUSE file system and must run as root');
      execFileSync('python3', ['-c', 'import ctypes, select, signal, threading']);
      work = mkdtempSync(join(tmpdir(), 'fuse-test-'));
      pyScript = join(work, 'client.py');
      writeFileSync(pyScript, PY_CLIENT);
    });

    afterEach(async () => {
      for (const c of clients.splice(0)) c.kill();
      for (const m of mounts.splice(0)) await m.unmount().catch(() => {});
      for (const d of dirs.splice(0)) {
        if (isMountPoint(d)) execFileSync('umount', ['-l', d]);
        rmdirSync(d);
      }
    });

    afterAll(() => {
      if (work) rmSync(work, { recursive: true, force: true });
    });

    async function mountEcho(
      opts: { unmountTimeoutMs?: number; stream?: boolean } = {},
    ): Promise<{ m: FuseMount; dev: EchoDevice; path: string; trace: FuseTraceEvent[] }> {
      const dir = mkdtempSync(join(tmpdir(), 'fuse-mnt-'));
      dirs.push(dir);
      const dev = new EchoDevice();
      const trace: FuseTraceEvent[] = [];
      const m = await mountFuse(dir, new Map([['echo', { handler: dev, stream: opts.stream ?? false }]]), {
        ...readerOptions(reader),
        ...opts,
        trace: (ev) => trace.push(ev),
        log: (msg) => console.error(`[fuse] ${msg}`),
      });
      mounts.push(m);
      return { m, dev, path: join(m.dir, 'echo'), trace };
    }

    function client(): PyClient {
      const c = new PyClient(pyScript);
      clients.push(c);
      return c;
    }

    function requests(trace: FuseTraceEvent[], op: string): (FuseTraceEvent & { kind: 'request' })[] {
      return trace.filter(
        (e): e is FuseTraceEvent & { kind: 'request' } => e.kind === 'request' && e.op === op,
      );
    }

    it('mounts as fuse.hvshim and lists one 0600 regular file', async () => {
      const { m, path } = await mountEcho();
      expect(readFileSync('/proc/self/mounts', 'utf8')).toContain(` ${m.dir} fuse.hvshim `);
      const c = client();
      expect((await c.call({ op: 'listdir', path: m.dir })).names).toEqual(['echo']);
      expect((await c.call({ op: 'stat', path })).mode).toBe(0o100600);
      expect(m.session.initialized?.minor).toBeGreaterThanOrEqual(12);
    });

    it('a second open gets EBUSY; the last close releases and resets the device', async () => {
      const { dev, path } = await mountEcho();
      const a = client();
      const b = client();
      const fd = (await a.call({ op: 'open', path })).fd!;
      expect((await b.call({ op: 'open', path })).errno).toBe(EBUSY);
      expect((await a.call({ op: 'write', fd, data: 'left over' })).n).toBe(9);
      await a.call({ op: 'close', fd });
      await waitFor(() => dev.releases === 1, 'RELEASE');
      const fd2 = (await b.call({ op: 'open', path })).fd!;
      expect((await b.call({ op: 'poll', fd: fd2, timeout: 0 })).revents).toBe(0); // queue was dropped
    });

    it('a read blocks until another thread pwrites; each read returns exactly one message', async () => {
      const { m, path } = await mountEcho();
      const c = client();
      const fd = (await c.call({ op: 'open', path })).fd!;
      const r = c.bg({ op: 'read', fd, size: 8192 });
      await r.started;
      await waitFor(() => m.session.stats().pendingReads === 1, 'the READ to reach the server');
      await sleep(100);
      // A pwrite from another thread on the same open file is served while the READ is pending.
      expect((await c.call({ op: 'pwrite', fd, data: 'hello', offset: 0 })).n).toBe(5);
      expect(await r.done).toMatchObject({ n: 5, data: 'hello' });
      await c.call({ op: 'write', fd, data: 'a' });
      await c.call({ op: 'write', fd, data: 'bb' });
      expect((await c.call({ op: 'read', fd, size: 8192 })).data).toBe('a');
      expect((await c.call({ op: 'read', fd, size: 8192 })).data).toBe('bb');
    });

    it('default mode: write(2) from another thread waits in the VFS (f_pos_lock) while a read(2) is pending', async () => {
      const { m, dev, path, trace } = await mountEcho();
      const c = client();
      const fd = (await c.call({ op: 'open', path })).fd!;
      const r = c.bg({ op: 'read', fd, size: 8192 });
      await waitFor(() => m.session.stats().pendingReads === 1, 'the READ to reach the server');
      const w = c.bg({ op: 'write', fd, data: 'queued behind the read' });
      await w.started;
      await sleep(300);
      expect(requests(trace, 'WRITE')).toHaveLength(0); // never reached the server
      dev.push(Buffer.from('from the server'));
      expect((await r.done).data).toBe('from the server');
      expect((await w.done).n).toBe(22);
      expect(requests(trace, 'WRITE')).toHaveLength(1);
    });

    it('stream mode: write(2) from another thread reaches a pending read(2); pread fails ESPIPE', async () => {
      const { m, path } = await mountEcho({ stream: true });
      const c = client();
      const fd = (await c.call({ op: 'open', path })).fd!;
      const r = c.bg({ op: 'read', fd, size: 8192 });
      await waitFor(() => m.session.stats().pendingReads === 1, 'the READ to reach the server');
      expect((await c.call({ op: 'write', fd, data: 'hello' })).n).toBe(5);
      expect((await r.done).data).toBe('hello');
      expect((await c.call({ op: 'pread', fd, size: 100, offset: 0 })).errno).toBe(ESPIPE);
      expect((await c.call({ op: 'pwrite', fd, data: 'x', offset: 0 })).errno).toBe(ESPIPE);
    });

    it('a read with a too-small buffer fails EINVAL and keeps the message', async () => {
      const { path } = await mountEcho();
      const c = client();
      const fd = (await c.call({ op: 'open', path })).fd!;
      await c.call({ op: 'write', fd, data: '0123456789' });
      expect((await c.call({ op: 'read', fd, size: 4 })).errno).toBe(EINVAL);
      expect(await c.call({ op: 'read', fd, size: 10 })).toMatchObject({ n: 10, data: '0123456789' });
    });

    it('a 7432-byte message is one WRITE; a 300 KiB read buffer is one READ of that size', async () => {
      const { dev, path } = await mountEcho();
      const c = client();
      const fd = (await c.call({ op: 'open', path })).fd!;
      const msg = 'k'.repeat(7432);
      expect((await c.call({ op: 'write', fd, data: msg })).n).toBe(7432);
      expect(await c.call({ op: 'read', fd, size: 300 * 1024 })).toMatchObject({ n: 7432, data: msg });
      expect(dev.writeSizes).toEqual([7432]);
      expect(dev.readSizes).toEqual([300 * 1024]);
    });

    it('pread and pwrite at offset 0 work, also after the file position moved', async () => {
      const { path, trace } = await mountEcho();
      const c = client();
      const fd = (await c.call({ op: 'open', path })).fd!;
      await c.call({ op: 'write', fd, data: 'xyz' });
      await c.call({ op: 'read', fd, size: 100 });
      expect((await c.call({ op: 'pwrite', fd, data: 'at zero', offset: 0 })).n).toBe(7);
      expect(await c.call({ op: 'pread', fd, size: 100, offset: 0 })).toMatchObject({
        n: 7,
        data: 'at zero',
      });
      expect(requests(trace, 'READ').length).toBe(2);
    });

    it('a blocked read interrupted by a signal returns EINTR via FUSE_INTERRUPT', async () => {
      const { m, dev, path, trace } = await mountEcho();
      const c = client();
      const fd = (await c.call({ op: 'open', path })).fd!;
      const r = c.bg({ op: 'read', fd, size: 8192 });
      await r.started;
      await waitFor(() => m.session.stats().pendingReads === 1, 'the READ to reach the server');
      await c.call({ op: 'signal', target: r.id });
      expect((await r.done).errno).toBe(EINTR);
      expect(dev.interrupts).toBe(1);
      const read = requests(trace, 'READ').at(-1)!;
      expect(requests(trace, 'INTERRUPT')).toHaveLength(1);
      expect(trace.find((e) => e.kind === 'reply' && e.unique === read.unique)).toMatchObject({
        errno: EINTR,
      });
      // The device is still usable on the same descriptor.
      await c.call({ op: 'write', fd, data: 'after' });
      expect((await c.call({ op: 'read', fd, size: 100 })).data).toBe('after');
    });

    it('poll() sleeps until a message is queued and is woken by FUSE_NOTIFY_POLL', async () => {
      const { dev, path, trace } = await mountEcho();
      const c = client();
      const fd = (await c.call({ op: 'open', path })).fd!;
      expect((await c.call({ op: 'poll', fd, timeout: 0 })).revents).toBe(0);
      const p = c.bg({ op: 'poll', fd, timeout: 10_000 });
      await p.started;
      await waitFor(() => dev.wake !== undefined && requests(trace, 'POLL').length >= 2, 'the POLL');
      await sleep(100);
      const t0 = Date.now();
      dev.push(Buffer.from('ping'));
      const res = await p.done;
      expect(Date.now() - t0).toBeLessThan(2000);
      expect(res.revents! & POLLIN).toBe(POLLIN);
      expect(trace.some((e) => e.kind === 'notify')).toBe(true);
      expect((await c.call({ op: 'read', fd, size: 100 })).data).toBe('ping');
    });

    it('a pending read does not hold up other processes: their OPEN gets EBUSY at once', async () => {
      const { m, path } = await mountEcho();
      const a = client();
      const b = client();
      const fd = (await a.call({ op: 'open', path })).fd!;
      const r = a.bg({ op: 'read', fd, size: 8192 });
      await waitFor(() => m.session.stats().pendingReads === 1, 'the READ to reach the server');
      const t0 = Date.now();
      expect((await b.call({ op: 'open', path })).errno).toBe(EBUSY);
      expect((await b.call({ op: 'listdir', path: m.dir })).names).toEqual(['echo']);
      expect(Date.now() - t0).toBeLessThan(2000);
      await a.call({ op: 'pwrite', fd, data: 'done', offset: 0 });
      expect((await r.done).data).toBe('done');
    });

    it('killing a process blocked in read delivers INTERRUPT then RELEASE', async () => {
      const { m, dev, path, trace } = await mountEcho();
      const a = client();
      const fd = (await a.call({ op: 'open', path })).fd!;
      a.bg({ op: 'read', fd, size: 8192 });
      await waitFor(() => m.session.stats().pendingReads === 1, 'the READ to reach the server');
      const read = requests(trace, 'READ').at(-1)!;
      a.kill();
      await waitFor(() => dev.releases === 1, 'RELEASE after SIGKILL');
      // The dying reader waits (uninterruptibly) until the READ is answered; the INTERRUPT got it EINTR.
      // (Kernel 6.18 may also interrupt the FLUSH of the dying process; that one was already answered.)
      expect(requests(trace, 'INTERRUPT').length).toBeGreaterThanOrEqual(1);
      expect(dev.interrupts).toBe(1);
      expect(trace.find((e) => e.kind === 'reply' && e.unique === read.unique)).toMatchObject({
        errno: EINTR,
      });
      expect(m.session.stats()).toMatchObject({ openFiles: 0, pendingReads: 0 });
      expect((await client().call({ op: 'open', path })).fd).toBeGreaterThan(2);
    });

    it('rescind: pending and later reads, writes and opens fail EBADF, poll says POLLERR|POLLHUP, then ENOENT', async () => {
      const { m, dev, path } = await mountEcho();
      const c = client();
      const fd = (await c.call({ op: 'open', path })).fd!;
      const r = c.bg({ op: 'read', fd, size: 8192 });
      await waitFor(() => m.session.stats().pendingReads === 1, 'the READ to reach the server');
      dev.destroy();
      expect((await r.done).errno).toBe(EBADF);
      expect((await c.call({ op: 'read', fd, size: 100 })).errno).toBe(EBADF);
      expect((await c.call({ op: 'write', fd, data: 'x' })).errno).toBe(EBADF);
      expect((await c.call({ op: 'poll', fd, timeout: 0 })).revents).toBe(POLLERR | POLLHUP);
      expect((await client().call({ op: 'open', path })).errno).toBe(EBADF);
      await c.call({ op: 'close', fd });
      await waitFor(() => dev.releases === 1, 'RELEASE');
      m.session.removeFile('echo');
      expect((await c.call({ op: 'open', path })).errno).toBe(ENOENT);
    });

    it('operations the server does not implement fail with ENOSYS', async () => {
      const { m } = await mountEcho();
      expect((await client().call({ op: 'mkdir', path: join(m.dir, 'sub') })).errno).toBe(ENOSYS);
    });

    it('unmount with nothing open ends the session: the /dev/fuse read returns ENODEV', async () => {
      const { m } = await mountEcho();
      const readerPid = m.readerPid;
      expect(readerPid === undefined).toBe(reader === 'in-process');
      if (readerPid) expect(isRunning(readerPid)).toBe(true);
      // 'unmounted' (not 'aborted'): the reader saw the kernel end the connection
      expect(await m.unmount()).toEqual({ reason: 'unmounted' });
      expect(isMountPoint(m.dir)).toBe(false);
      if (readerPid) await waitFor(() => !isRunning(readerPid), 'the reader to exit');
    });

    it('unmount while a client keeps the file open aborts after the timeout and releases the file', async () => {
      const { m, dev, path } = await mountEcho({ unmountTimeoutMs: 300 });
      const c = client();
      const fd = (await c.call({ op: 'open', path })).fd!;
      const r = c.bg({ op: 'read', fd, size: 8192 });
      await waitFor(() => m.session.stats().pendingReads === 1, 'the READ to reach the server');
      const t0 = Date.now();
      expect(await m.unmount()).toEqual({ reason: 'aborted' });
      expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
      expect(isMountPoint(m.dir)).toBe(false);
      expect(dev.releases).toBe(1);
      // The aborted connection fails the blocked read instead of leaving it hanging.
      expect((await r.done).errno).toBeGreaterThan(0);
    });
  });

// =============================================================================================
// 5. Process exit, signals and crashes (a server in a child process)
// =============================================================================================

describe('reader choice', () => {
  it('the in-process reader refuses a max_write its 64 KiB reads cannot take', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fuse-mnt-'));
    try {
      await expect(
        mountFuse(dir, new Map(), { reader: 'in-process', maxWrite: STREAM_MAX_WRITE + 4096 }),
      ).rejects.toThrow(/in-process reader cannot serve it/);
      expect(isMountPoint(dir)).toBe(false);
    } finally {
      rmdirSync(dir);
    }
  });
});

for (const reader of READERS)
  describe(`teardown of a serving process (${reader} reader)`, () => {
    let work: string;
    let serverScript: string;
    const procs: ChildProcess[] = [];
    const dirs: string[] = [];

    beforeAll(() => {
      if (!existsSync('/dev/fuse')) throw new Error('/dev/fuse is missing: these tests need CONFIG_FUSE_FS');
      work = mkdtempSync(join(tmpdir(), 'fuse-srv-'));
      serverScript = join(work, 'server.mts');
      writeFileSync(
        serverScript,
        `import { mountFuse } from ${JSON.stringify(join(REPO, 'kernel-shim/fuse/mount.js'))};
const [dir, mode, reader] = process.argv.slice(2);
const handler = { open: () => 1, read: () => {}, write: (_fh, d) => d.length, release: () => {} };
const m = await mountFuse(dir, new Map([['f', handler]]), {
  unmountOnExit: mode !== 'plain',
  reader,
  maxWrite: reader === 'in-process' ? 60 * 1024 : 128 * 1024,
});
console.log(JSON.stringify({ pid: process.pid, readerPid: m.readerPid }));
process.stdin.on('data', (d) => { if (String(d).includes('exit')) process.exit(3); });
`,
      );
    });

    afterEach(async () => {
      for (const p of procs.splice(0)) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
      await sleep(50);
      for (const d of dirs.splice(0)) {
        if (isMountPoint(d)) execFileSync('umount', ['-l', d]);
        rmdirSync(d);
      }
    });

    afterAll(() => {
      if (work) rmSync(work, { recursive: true, force: true });
    });

    async function startServer(
      mode: 'exit' | 'plain',
      wrap: string[] = [],
    ): Promise<{
      p: ChildProcess;
      dir: string;
      info: { pid: number; readerPid?: number };
      exited: Promise<[number | null, string | null]>;
    }> {
      const dir = mkdtempSync(join(tmpdir(), 'fuse-mnt-'));
      dirs.push(dir);
      const argv = [process.execPath, '--import', 'tsx', serverScript, dir, mode, reader];
      const cmd = [...wrap, ...argv];
      const p = spawn(cmd[0]!, cmd.slice(1), { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'] });
      procs.push(p);
      let err = '';
      p.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
      const exited = new Promise<[number | null, string | null]>((r) => p.on('exit', (c, s) => r([c, s])));
      const info = await new Promise<{ pid: number; readerPid?: number }>((resolve, reject) => {
        createInterface({ input: p.stdout! }).once('line', (l) => resolve(JSON.parse(l)));
        void exited.then(() => reject(new Error(`server exited before mounting: ${err}`)));
      });
      return { p, dir, info, exited };
    }

    it('unmountOnExit: SIGTERM unmounts, and the process still dies of SIGTERM', async () => {
      const { p, dir, info, exited } = await startServer('exit');
      expect(isMountPoint(dir)).toBe(true);
      p.kill('SIGTERM');
      expect(await exited).toEqual([null, 'SIGTERM']);
      expect(isMountPoint(dir)).toBe(false);
      await waitFor(() => info.readerPid === undefined || !isRunning(info.readerPid), 'the reader to exit');
    });

    it('unmountOnExit: process.exit() unmounts synchronously', async () => {
      const { p, dir, info, exited } = await startServer('exit');
      p.stdin!.write('exit\n');
      expect(await exited).toEqual([3, null]);
      expect(isMountPoint(dir)).toBe(false);
      await waitFor(() => info.readerPid === undefined || !isRunning(info.readerPid), 'the reader to exit');
    });

    it('SIGKILL without a private namespace: the reader dies, the dead mount stays (errors, no hang) until unmounted', async () => {
      const { p, dir, info, exited } = await startServer('plain');
      p.kill('SIGKILL');
      await exited;
      await waitFor(
        () => info.readerPid === undefined || !isRunning(info.readerPid),
        'the reader to kill itself',
      );
      expect(isMountPoint(dir)).toBe(true);
      const st = spawnSync('stat', [join(dir, 'f')], { encoding: 'utf8', timeout: 5000 });
      // ENOTCONN or ECONNABORTED, depending on the kernel path: either way an error, not a hang.
      expect(st.stderr).toMatch(/Transport endpoint is not connected|Software caused connection abort/);
      execFileSync('umount', ['-l', dir]);
      expect(isMountPoint(dir)).toBe(false);
    });

    it('crash safety: SIGKILL inside `unshare --mount --propagation private` leaves no mount anywhere', async () => {
      const { p, dir, info, exited } = await startServer('plain', [
        'unshare',
        '--mount',
        '--propagation',
        'private',
      ]);
      expect(info.pid).toBe(p.pid); // unshare execs node, no extra process
      expect(readFileSync(`/proc/${info.pid}/mounts`, 'utf8')).toContain(` ${dir} fuse.hvshim `);
      expect(isMountPoint(dir)).toBe(false); // never visible outside the namespace
      p.kill('SIGKILL');
      await exited;
      await waitFor(
        () => info.readerPid === undefined || !isRunning(info.readerPid),
        'the reader to kill itself',
      );
      expect(isMountPoint(dir)).toBe(false);
      expect(readFileSync('/proc/self/mounts', 'utf8')).not.toContain(dir);
    });
  });
