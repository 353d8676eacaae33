/**
 * FuseSession: serves one FUSE connection (a flat directory of FuseFileHandler files) over a
 * FuseChannel: StreamFuseChannel (stream-channel.ts: /dev/fuse read in this process's event loop,
 * the default) or DevFuseChannel below (a helper process; for sessions with max_write > 60 KiB).
 *
 * DevFuseChannel. A blocking read(2) on /dev/fuse waits until the kernel has a request. A blocked
 * fs.read would pin a libuv threadpool thread of *this* process — which also runs the code under
 * test, whose own blocking reads of our files need pool threads to be served — and process.exit()
 * hangs while it is blocked. So DevFuseChannel reads in a small
 * helper process (`node -e`, the descriptor inherited as fd 3) that forwards each request as a
 * length-prefixed frame on a pipe. The parent's event loop and pool never block; replies are single
 * synchronous write(2)s on the parent's descriptor (the same open file description, writes to
 * /dev/fuse never block). The helper exits with 0 when its read fails with ENODEV, which the kernel
 * returns once the connection ends (unmount and last close of files in it, or abort); it kills
 * itself when its stdin reaches EOF, i.e. when the parent died, so it never keeps a dead server's
 * connection alive; it runs in its own process group so a terminal's Ctrl-C reaches only the parent.
 *
 * Concurrency (checked by experiment, see test/kernel-shim/fuse/fuse.test.ts): every blocking
 * system call on a FUSE file is its own request; the kernel queues them all and the helper reads
 * them in order, so a READ left unanswered (a deferred reply) does not stop other requests: another
 * process's LOOKUP/OPEN/READDIR, or another thread's pwrite(2) on the same open file, are answered
 * meanwhile. The one serialisation is in the VFS, before FUSE: read(2)/write(2) on a regular file
 * shared by threads/processes take the file's f_pos_lock, so a write(2) waits for a pending read(2)
 * on the same open file unless the file is opened FOPEN_STREAM (FileSpec.stream, see files.ts).
 * FUSE_ASYNC_READ is not requested: it only changes page-cache readahead, which direct-I/O files
 * never use. FUSE_PARALLEL_DIROPS is requested so that LOOKUPs in the one directory run in parallel.
 *
 * Interrupts: the kernel sends FUSE_INTERRUPT only for a request it already handed to us, so with a
 * single in-order reader the original request is always known by then; an INTERRUPT for an unknown
 * unique means the request was already answered, and is ignored (INTERRUPT itself needs no reply).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, writeSync, writevSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import {
  type Caller,
  DEFAULT_POLLMASK,
  type Errno,
  type ErrnoName,
  type FileSpec,
  type FileTable,
  type FuseFileHandler,
  isErrno,
  type PendingRead,
  toFileSpec,
  validFileName,
} from './files.js';
import {
  type Attr,
  decode,
  decodeBatchForget,
  decodeInitIn,
  decodeName,
  decodeWriteIn,
  encodeAttrOut,
  encodeDirents,
  encodeEntryOut,
  encodeError,
  encodeOpenOut,
  encodePollOut,
  encodePollWakeup,
  encodeOutHeader,
  encodeReply,
  encodeStatfsOut,
  encodeWriteOut,
  FATTR_GID,
  FATTR_MODE,
  FATTR_UID,
  FOPEN_DIRECT_IO,
  FOPEN_STREAM,
  FUSE_MIN_READ_BUFFER,
  FUSE_POLL_SCHEDULE_NOTIFY,
  FUSE_ROOT_ID,
  fuse_access_in,
  fuse_flush_in,
  fuse_forget_in,
  fuse_in_header,
  fuse_interrupt_in,
  fuse_open_in,
  fuse_poll_in,
  fuse_read_in,
  fuse_release_in,
  fuse_setattr_in,
  FuseInitFlag,
  FuseOpcode,
  type InHeader,
  negotiateInit,
  NO_REPLY_OPCODES,
  opcodeName,
  parseRequest,
  type DirEntry,
} from './protocol.js';

const E = osConstants.errno;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const DT_DIR = 4;
const DT_REG = 8;

// ---------------------------------------------------------------------------------------------
// Channel
// ---------------------------------------------------------------------------------------------

export type FuseEndReason = 'unmounted' | 'aborted' | 'failed';

/** Where requests come from and replies go to. */
export interface FuseChannel {
  /** Starts delivering requests, one whole request per onFrame call; onEnd is called once. */
  start(onFrame: (frame: Buffer) => void, onEnd: (reason: FuseEndReason, error?: Error) => void): void;
  /** Writes one reply or notification; throws the write(2) error. */
  write(data: Buffer): void;
  /**
   * Optional: writes one reply given as consecutive parts with a single writev(2) (the header and
   * the payload without copying them together first); throws the error as `write` does.
   */
  writeParts?(parts: readonly Uint8Array[]): void;
  /** Stops reading and closes the device; pending requests are aborted by the kernel. */
  close(): void;
}

/** The reader helper: blocking reads of fd 3 in its own process, frames to stdout. */
function readerSource(readSize: number): string {
  return `'use strict';
const fs = require('fs');
const buf = Buffer.allocUnsafe(${readSize});
const die = () => process.kill(process.pid, 'SIGKILL');
process.stdin.on('end', die).on('close', die).on('error', die).resume();
process.stdout.on('error', die);
let errors = 0;
const next = () => fs.read(3, buf, 0, buf.length, null, (err, n) => {
  if (err) {
    if (err.code === 'ENODEV' || err.code === 'ECONNABORTED') process.exit(0);
    if (['EINTR', 'EAGAIN', 'EIO'].includes(err.code) && ++errors < 1000) return setTimeout(next, err.code === 'EAGAIN' ? 10 : 0);
    process.stderr.write('read /dev/fuse: ' + (err.code || err.message));
    process.exit(2);
  }
  errors = 0;
  const frame = Buffer.allocUnsafe(4 + n);
  frame.writeUInt32LE(n, 0);
  buf.copy(frame, 4, 0, n);
  process.stdout.write(frame);
  next();
});
next();
`;
}

/** A FuseChannel on an open /dev/fuse descriptor (which it owns and closes). */
export class DevFuseChannel implements FuseChannel {
  private child: ChildProcess | undefined;
  private closed = false;
  private ended = false;
  private aborted = false;
  private onEnd: ((reason: FuseEndReason, error?: Error) => void) | undefined;

  /** `readSize` must be ≥ max_write + 4096 (and ≥ FUSE_MIN_READ_BUFFER). */
  constructor(
    private readonly fd: number,
    private readonly readSize: number,
  ) {
    if (readSize < FUSE_MIN_READ_BUFFER)
      throw new RangeError(`read buffer ${readSize} < ${FUSE_MIN_READ_BUFFER}`);
  }

  /** The helper's pid (for tests and diagnostics). */
  get readerPid(): number | undefined {
    return this.child?.pid;
  }

  start(onFrame: (frame: Buffer) => void, onEnd: (reason: FuseEndReason, error?: Error) => void): void {
    if (this.child || this.closed) throw new Error('DevFuseChannel already started');
    this.onEnd = onEnd;
    const env = { ...process.env };
    delete env.NODE_OPTIONS;
    const child = spawn(process.execPath, ['-e', readerSource(this.readSize)], {
      stdio: ['pipe', 'pipe', 'pipe', this.fd],
      detached: true,
      env,
    });
    this.child = child;
    let pending: Buffer = Buffer.alloc(0);
    child.stdout!.on('data', (chunk: Buffer) => {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      while (pending.length >= 4) {
        const n = pending.readUInt32LE(0);
        if (pending.length < 4 + n) break;
        const frame = Buffer.from(pending.subarray(4, 4 + n));
        pending = pending.subarray(4 + n);
        if (!this.closed) onFrame(frame);
      }
    });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (s: string) => {
      if (stderr.length < 4096) stderr += s;
    });
    child.stdin!.on('error', () => {});
    child.on('error', (err) => this.finish('failed', err));
    child.on('close', (code, signal) => {
      if (this.aborted) this.finish('aborted');
      else if (code === 0) this.finish('unmounted');
      else this.finish('failed', new Error(`FUSE reader exited (${signal ?? code}): ${stderr.trim()}`));
    });
  }

  write(data: Buffer): void {
    if (this.closed) throw Object.assign(new Error('FUSE channel closed'), { code: 'ENODEV' });
    writeSync(this.fd, data);
  }

  writeParts(parts: readonly Uint8Array[]): void {
    if (this.closed) throw Object.assign(new Error('FUSE channel closed'), { code: 'ENODEV' });
    writevSync(this.fd, parts as Uint8Array[]);
  }

  close(): void {
    if (this.closed) return;
    this.aborted = !this.ended;
    this.closeFd();
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
    } else if (!this.child) {
      this.finish('aborted');
    }
  }

  private closeFd(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
  }

  private finish(reason: FuseEndReason, error?: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.closeFd();
    this.child?.stdin?.destroy();
    this.onEnd?.(reason, error);
  }
}

// ---------------------------------------------------------------------------------------------
// Session
// ---------------------------------------------------------------------------------------------

export interface FuseSessionOptions {
  /** Largest WRITE payload (default 128 KiB); the reader buffer is this + 4096. */
  readonly maxWrite?: number;
  /** Max pages per request, i.e. the largest single READ (default 256 = 1 MiB with 4 KiB pages). */
  readonly maxPages?: number;
  /** Owner of the directory and default owner of files (default: this process's uid/gid). */
  readonly uid?: number;
  readonly gid?: number;
  /** Permission bits of the directory (default 0o755). */
  readonly dirPerm?: number;
  /** Diagnostics (handler exceptions, protocol oddities). */
  readonly log?: (msg: string) => void;
  /** Every request, reply and notification, for tests and debugging. */
  readonly trace?: (ev: FuseTraceEvent) => void;
}

export type FuseTraceEvent =
  | {
      readonly kind: 'request';
      readonly opcode: number;
      readonly op: string;
      readonly unique: bigint;
      readonly nodeid: bigint;
      readonly pid: number;
    }
  | { readonly kind: 'reply'; readonly unique: bigint; readonly errno: number }
  | { readonly kind: 'notify'; readonly kh: bigint };

export interface FuseSessionEnd {
  readonly reason: FuseEndReason;
  readonly error?: Error;
}

export interface FuseInitInfo {
  readonly kernelMinor: number;
  readonly minor: number;
  readonly flags: number;
  readonly maxWrite: number;
}

export const DEFAULT_MAX_WRITE = 128 * 1024;
export const DEFAULT_MAX_PAGES = 256;
const WANTED_INIT_FLAGS =
  FuseInitFlag.FUSE_BIG_WRITES | FuseInitFlag.FUSE_MAX_PAGES | FuseInitFlag.FUSE_PARALLEL_DIROPS;

interface Node {
  readonly nodeid: bigint;
  readonly name: string;
  readonly dir: boolean;
  readonly handler: FuseFileHandler | undefined;
  readonly stream: boolean;
  perm: number;
  uid: number;
  gid: number;
  /** LOOKUP replies not yet FORGET-ed by the kernel. */
  nlookup: bigint;
  linked: boolean;
}

interface OpenFile {
  readonly fh: bigint;
  readonly node: Node;
  readonly handler: FuseFileHandler;
  readonly handlerFh: number;
  kh: bigint | undefined;
  pollArmed: boolean;
  released: boolean;
  readonly wake: () => void;
}

type Outcome = { readonly payload: readonly Uint8Array[] } | { readonly errno: number } | 'deferred' | 'none';

const EMPTY: Outcome = { payload: [] };

/** Payloads from this size on are written with writeParts (where the channel has it). */
const LARGE_PAYLOAD = 1024;

function ok(...payload: Uint8Array[]): Outcome {
  return { payload };
}

function fail(errno: number): Outcome {
  return { errno };
}

function toErrnoNumber(e: Errno | ErrnoName | number): number {
  if (typeof e === 'number') return e;
  if (typeof e === 'string') return E[e];
  return e.errno;
}

class PendingReadImpl implements PendingRead {
  settled = false;
  interrupted = false;
  private interruptCb: (() => void) | undefined;

  constructor(
    private readonly session: FuseSession,
    readonly unique: bigint,
    readonly size: number,
    readonly offset: bigint,
    readonly caller: Caller,
  ) {}

  reply(data: Uint8Array): boolean {
    if (this.settled) return false;
    if (data.length > this.size) {
      this.session.logMessage(
        `READ ${this.unique}: handler replied ${data.length} bytes for a ${this.size}-byte read`,
      );
      this.settle(fail(E.EIO));
      return false;
    }
    this.settle(ok(data));
    return true;
  }

  error(e: Errno | ErrnoName | number): boolean {
    if (this.settled) return false;
    this.settle(fail(toErrnoNumber(e)));
    return true;
  }

  onInterrupt(cb: () => void): void {
    this.interruptCb = cb;
  }

  /** FUSE_INTERRUPT arrived. */
  interrupt(): void {
    if (this.settled || this.interrupted) return;
    this.interrupted = true;
    const cb = this.interruptCb;
    if (!cb) {
      this.error(E.EINTR);
      return;
    }
    try {
      cb();
    } catch (err) {
      this.session.logMessage(`READ ${this.unique}: onInterrupt threw: ${String(err)}`);
      this.error(E.EINTR);
    }
  }

  /** The connection ended: nothing can be sent any more. */
  abandon(): void {
    this.settled = true;
  }

  private settle(outcome: Outcome): void {
    this.settled = true;
    this.session.completeRead(this.unique, outcome);
  }
}

/** Serves a flat directory of files over one FUSE connection. */
export class FuseSession {
  /** Resolves after the INIT handshake; rejects if the connection ends or INIT fails first. */
  readonly ready: Promise<FuseInitInfo>;
  /** Resolves once, when the connection has ended (never rejects). */
  readonly closed: Promise<FuseSessionEnd>;

  private resolveReady!: (info: FuseInitInfo) => void;
  private rejectReady!: (err: Error) => void;
  private resolveClosed!: (end: FuseSessionEnd) => void;
  private readonly maxWrite: number;
  private readonly maxPages: number;
  private readonly log: (msg: string) => void;
  private readonly trace: ((ev: FuseTraceEvent) => void) | undefined;
  private readonly defaultUid: number;
  private readonly defaultGid: number;
  private readonly timeSec = BigInt(Math.floor(Date.now() / 1000));

  private readonly root: Node;
  private readonly byId = new Map<bigint, Node>();
  private readonly byName = new Map<string, Node>();
  private readonly openFiles = new Map<bigint, OpenFile>();
  private readonly dirHandles = new Map<bigint, DirEntry[]>();
  private readonly pending = new Map<bigint, PendingReadImpl>();
  private nextNodeId = FUSE_ROOT_ID + 1n;
  private nextFh = 1n;
  private initInfo: FuseInitInfo | undefined;
  private started = false;
  private ended = false;

  constructor(
    private readonly channel: FuseChannel,
    files: FileTable = [],
    opts: FuseSessionOptions = {},
  ) {
    this.maxWrite = opts.maxWrite ?? DEFAULT_MAX_WRITE;
    this.maxPages = opts.maxPages ?? DEFAULT_MAX_PAGES;
    if (this.maxWrite < 4096) throw new RangeError('maxWrite must be at least 4096');
    this.log = opts.log ?? (() => {});
    this.trace = opts.trace;
    this.defaultUid = opts.uid ?? process.getuid?.() ?? 0;
    this.defaultGid = opts.gid ?? process.getgid?.() ?? 0;
    this.root = {
      nodeid: FUSE_ROOT_ID,
      name: '',
      dir: true,
      handler: undefined,
      stream: false,
      perm: opts.dirPerm ?? 0o755,
      uid: this.defaultUid,
      gid: this.defaultGid,
      nlookup: 1n,
      linked: true,
    };
    this.byId.set(FUSE_ROOT_ID, this.root);
    for (const [name, v] of files) this.addFile(name, v);
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => {});
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
  }

  /** The read buffer a channel needs for this session's max_write. */
  get readBufferSize(): number {
    return Math.max(FUSE_MIN_READ_BUFFER, this.maxWrite + 4096);
  }

  get initialized(): FuseInitInfo | undefined {
    return this.initInfo;
  }

  get isEnded(): boolean {
    return this.ended;
  }

  /** Counts for tests and diagnostics. */
  stats(): { files: number; openFiles: number; pendingReads: number; nodes: number } {
    return {
      files: this.byName.size,
      openFiles: this.openFiles.size,
      pendingReads: this.pending.size,
      nodes: this.byId.size - 1,
    };
  }

  /** Names in the directory, in insertion order. */
  fileNames(): string[] {
    return [...this.byName.keys()];
  }

  /** Adds a file; its name must be new and valid. Visible to the next LOOKUP. */
  addFile(name: string, v: FuseFileHandler | FileSpec): void {
    if (!validFileName(name)) throw new Error(`invalid file name ${JSON.stringify(name)}`);
    if (this.byName.has(name)) throw new Error(`file ${JSON.stringify(name)} already exists`);
    const spec = toFileSpec(v);
    const node: Node = {
      nodeid: this.nextNodeId++,
      name,
      dir: false,
      handler: spec.handler,
      stream: spec.stream ?? false,
      perm: spec.attr?.perm ?? 0o600,
      uid: spec.attr?.uid ?? this.defaultUid,
      gid: spec.attr?.gid ?? this.defaultGid,
      nlookup: 0n,
      linked: true,
    };
    this.byName.set(name, node);
    this.byId.set(node.nodeid, node);
  }

  /**
   * Removes a name: new opens get ENOENT (no entry caching, so at once); descriptors already open
   * keep talking to the handler until closed. Returns false if there was no such file.
   */
  removeFile(name: string): boolean {
    const node = this.byName.get(name);
    if (!node) return false;
    this.byName.delete(name);
    node.linked = false;
    this.maybeDropNode(node);
    return true;
  }

  start(): void {
    if (this.started) throw new Error('FuseSession already started');
    this.started = true;
    this.channel.start(
      (frame) => this.onFrame(frame),
      (reason, error) => this.onEnd(reason, error),
    );
  }

  /** Ends the connection now: the kernel fails whatever is outstanding (ENOTCONN/ECONNABORTED). */
  abort(): void {
    this.channel.close();
  }

  // --- internals used by PendingReadImpl -----------------------------------------------------

  /** @internal */
  logMessage(msg: string): void {
    this.log(msg);
  }

  /** @internal */
  completeRead(unique: bigint, outcome: Outcome): void {
    this.pending.delete(unique);
    this.send(unique, outcome);
  }

  // --- dispatch -------------------------------------------------------------------------------

  private onFrame(frame: Buffer): void {
    if (this.ended) return;
    let header: InHeader;
    let body: Buffer;
    try {
      ({ header, body } = parseRequest(frame));
    } catch (err) {
      this.log(`bad request frame: ${String(err)}`);
      if (frame.length >= fuse_in_header.size) {
        const h = decode(fuse_in_header, frame);
        if (!NO_REPLY_OPCODES.has(h.opcode)) this.send(h.unique, fail(E.EIO));
      }
      return;
    }
    this.trace?.({
      kind: 'request',
      opcode: header.opcode,
      op: opcodeName(header.opcode),
      unique: header.unique,
      nodeid: header.nodeid,
      pid: header.pid,
    });
    let outcome: Outcome;
    try {
      outcome =
        !this.initInfo && header.opcode !== FuseOpcode.INIT ? fail(E.EIO) : this.dispatch(header, body);
    } catch (err) {
      this.log(
        `${opcodeName(header.opcode)} ${header.unique}: ${err instanceof Error ? err.stack : String(err)}`,
      );
      outcome = NO_REPLY_OPCODES.has(header.opcode) ? 'none' : fail(E.EIO);
    }
    if (outcome !== 'deferred' && outcome !== 'none') this.send(header.unique, outcome);
  }

  private dispatch(h: InHeader, body: Buffer): Outcome {
    const caller: Caller = { pid: h.pid, uid: h.uid, gid: h.gid };
    switch (h.opcode) {
      case FuseOpcode.INIT:
        return this.onInit(body);
      case FuseOpcode.LOOKUP:
        return this.onLookup(h.nodeid, decodeName(body));
      case FuseOpcode.FORGET:
        this.forget(h.nodeid, decode(fuse_forget_in, body).nlookup);
        return 'none';
      case FuseOpcode.BATCH_FORGET:
        for (const f of decodeBatchForget(body)) this.forget(f.nodeid, f.nlookup);
        return 'none';
      case FuseOpcode.GETATTR: {
        const node = this.byId.get(h.nodeid);
        return node ? ok(encodeAttrOut(this.attrOf(node))) : fail(E.ENOENT);
      }
      case FuseOpcode.SETATTR:
        return this.onSetattr(h.nodeid, body);
      case FuseOpcode.ACCESS:
        decode(fuse_access_in, body);
        return this.byId.has(h.nodeid) ? EMPTY : fail(E.ENOENT);
      case FuseOpcode.STATFS:
        return ok(
          encodeStatfsOut({ bsize: 4096, frsize: 4096, namelen: 255, files: BigInt(this.byName.size) }),
        );
      case FuseOpcode.OPEN:
        return this.onOpen(h.nodeid, decode(fuse_open_in, body).flags, caller);
      case FuseOpcode.READ:
        return this.onRead(body, caller, h.unique);
      case FuseOpcode.WRITE:
        return this.onWrite(body, caller);
      case FuseOpcode.POLL:
        return this.onPoll(body);
      case FuseOpcode.FLUSH: {
        const of = this.openFiles.get(decode(fuse_flush_in, body).fh);
        if (!of) return fail(E.EBADF);
        of.handler.flush?.(of.handlerFh, caller);
        return EMPTY;
      }
      case FuseOpcode.RELEASE:
        this.release(decode(fuse_release_in, body).fh);
        return EMPTY;
      case FuseOpcode.INTERRUPT:
        this.pending.get(decode(fuse_interrupt_in, body).unique)?.interrupt();
        return 'none';
      case FuseOpcode.OPENDIR:
        return this.onOpendir(h.nodeid);
      case FuseOpcode.READDIR: {
        const arg = decode(fuse_read_in, body);
        const entries = this.dirHandles.get(arg.fh) ?? this.listing();
        return ok(encodeDirents(entries, Number(arg.offset), arg.size));
      }
      case FuseOpcode.RELEASEDIR:
        this.dirHandles.delete(decode(fuse_release_in, body).fh);
        return EMPTY;
      case FuseOpcode.DESTROY:
        return EMPTY;
      case FuseOpcode.IOCTL:
        return fail(E.ENOTTY);
      default:
        return NO_REPLY_OPCODES.has(h.opcode) ? 'none' : fail(E.ENOSYS);
    }
  }

  private onInit(body: Buffer): Outcome {
    if (this.initInfo) return fail(E.EPROTO);
    const kernel = decodeInitIn(body);
    const out = negotiateInit(kernel, {
      maxWrite: this.maxWrite,
      maxPages: this.maxPages,
      wantedFlags: WANTED_INIT_FLAGS,
    });
    switch (out.kind) {
      case 'major-only':
        return ok(out.payload);
      case 'error':
        this.rejectReady(new Error(out.reason));
        return fail(out.errno);
      case 'reply':
        this.initInfo = {
          kernelMinor: kernel.minor,
          minor: out.minor,
          flags: out.flags,
          maxWrite: this.maxWrite,
        };
        this.resolveReady(this.initInfo);
        return ok(out.payload);
    }
  }

  private onLookup(parent: bigint, name: string): Outcome {
    if (parent !== FUSE_ROOT_ID) return fail(this.byId.has(parent) ? E.ENOTDIR : E.ENOENT);
    const node = this.byName.get(name);
    if (!node) return fail(E.ENOENT);
    node.nlookup++;
    return ok(encodeEntryOut(node.nodeid, this.attrOf(node)));
  }

  private forget(nodeid: bigint, n: bigint): void {
    const node = this.byId.get(nodeid);
    if (!node || node === this.root) return;
    node.nlookup = node.nlookup > n ? node.nlookup - n : 0n;
    this.maybeDropNode(node);
  }

  private maybeDropNode(node: Node): void {
    if (!node.linked && node.nlookup === 0n) this.byId.delete(node.nodeid);
  }

  private onSetattr(nodeid: bigint, body: Buffer): Outcome {
    const node = this.byId.get(nodeid);
    if (!node) return fail(E.ENOENT);
    const arg = decode(fuse_setattr_in, body);
    // Size and times are accepted and ignored (a device has neither); O_TRUNC opens send a size.
    if (arg.valid & FATTR_MODE) node.perm = arg.mode & 0o7777;
    if (arg.valid & FATTR_UID) node.uid = arg.uid;
    if (arg.valid & FATTR_GID) node.gid = arg.gid;
    return ok(encodeAttrOut(this.attrOf(node)));
  }

  private onOpen(nodeid: bigint, flags: number, caller: Caller): Outcome {
    const node = this.byId.get(nodeid);
    if (!node) return fail(E.ENOENT);
    if (node.dir || !node.handler) return fail(E.EISDIR);
    const handler = node.handler;
    const r = handler.open({ name: node.name, flags, caller });
    if (isErrno(r)) return fail(r.errno);
    if (!Number.isSafeInteger(r)) {
      this.log(`open ${node.name}: handler returned ${String(r)}, not a file handle`);
      return fail(E.EIO);
    }
    const fh = this.nextFh++;
    const of: OpenFile = {
      fh,
      node,
      handler,
      handlerFh: r,
      kh: undefined,
      pollArmed: false,
      released: false,
      wake: () => this.wakePoll(of),
    };
    this.openFiles.set(fh, of);
    return ok(encodeOpenOut(fh, FOPEN_DIRECT_IO | (node.stream ? FOPEN_STREAM : 0)));
  }

  private onRead(body: Buffer, caller: Caller, unique: bigint): Outcome {
    const arg = decode(fuse_read_in, body);
    const of = this.openFiles.get(arg.fh);
    if (!of) return fail(E.EBADF);
    const req = new PendingReadImpl(this, unique, arg.size, arg.offset, caller);
    this.pending.set(unique, req);
    try {
      of.handler.read(of.handlerFh, req);
    } catch (err) {
      this.log(`read ${of.node.name}: ${err instanceof Error ? err.stack : String(err)}`);
      req.error(E.EIO);
    }
    return 'deferred';
  }

  private onWrite(body: Buffer, caller: Caller): Outcome {
    const { arg, data } = decodeWriteIn(body);
    const of = this.openFiles.get(arg.fh);
    if (!of) return fail(E.EBADF);
    const r = of.handler.write(of.handlerFh, data, arg.offset, caller);
    if (isErrno(r)) return fail(r.errno);
    if (!Number.isInteger(r) || r < 0 || r > data.length) {
      this.log(`write ${of.node.name}: handler returned ${String(r)} for ${data.length} bytes`);
      return fail(E.EIO);
    }
    return ok(encodeWriteOut(r));
  }

  private onPoll(body: Buffer): Outcome {
    const arg = decode(fuse_poll_in, body);
    const of = this.openFiles.get(arg.fh);
    if (!of) return fail(E.EBADF);
    if (!of.handler.poll) return ok(encodePollOut(DEFAULT_POLLMASK));
    if (arg.flags & FUSE_POLL_SCHEDULE_NOTIFY) {
      of.kh = arg.kh;
      of.pollArmed = true;
    }
    const r = of.handler.poll(of.handlerFh, arg.events, of.wake);
    if (isErrno(r)) return fail(r.errno);
    return ok(encodePollOut(r >>> 0));
  }

  private wakePoll(of: OpenFile): void {
    if (this.ended || of.released || !of.pollArmed || of.kh === undefined) return;
    of.pollArmed = false;
    this.trace?.({ kind: 'notify', kh: of.kh });
    this.write(encodePollWakeup(of.kh), 'poll notification');
  }

  private release(fh: bigint): void {
    const of = this.openFiles.get(fh);
    if (!of) return;
    this.openFiles.delete(fh);
    of.released = true;
    try {
      of.handler.release(of.handlerFh);
    } catch (err) {
      this.log(`release ${of.node.name}: ${err instanceof Error ? err.stack : String(err)}`);
    }
  }

  private onOpendir(nodeid: bigint): Outcome {
    const node = this.byId.get(nodeid);
    if (!node) return fail(E.ENOENT);
    if (!node.dir) return fail(E.ENOTDIR);
    const fh = this.nextFh++;
    this.dirHandles.set(fh, this.listing());
    return ok(encodeOpenOut(fh, 0));
  }

  private listing(): DirEntry[] {
    return [
      { ino: FUSE_ROOT_ID, name: '.', type: DT_DIR },
      { ino: FUSE_ROOT_ID, name: '..', type: DT_DIR },
      ...[...this.byName.values()].map((n) => ({ ino: n.nodeid, name: n.name, type: DT_REG })),
    ];
  }

  private attrOf(node: Node): Attr {
    return {
      ino: node.nodeid,
      size: 0n,
      blocks: 0n,
      atime: this.timeSec,
      mtime: this.timeSec,
      ctime: this.timeSec,
      mode: (node.dir ? S_IFDIR : S_IFREG) | node.perm,
      nlink: node.dir ? 2 : node.linked ? 1 : 0,
      uid: node.uid,
      gid: node.gid,
      blksize: 4096,
    };
  }

  // --- output ---------------------------------------------------------------------------------

  private send(unique: bigint, outcome: Outcome): void {
    if (outcome === 'deferred' || outcome === 'none') return;
    const errno = 'errno' in outcome ? outcome.errno : 0;
    this.trace?.({ kind: 'reply', unique, errno });
    if ('errno' in outcome) return this.write(encodeError(unique, outcome.errno), unique);
    const payload = outcome.payload;
    // A large payload (a device message) goes out behind its header in one writev(2), uncopied.
    if (this.channel.writeParts && payload.length === 1 && payload[0]!.length >= LARGE_PAYLOAD) {
      return this.write([encodeOutHeader(unique, payload[0]!.length), payload[0]!], unique);
    }
    this.write(encodeReply(unique, ...payload), unique);
  }

  private write(msg: Buffer | readonly Uint8Array[], what: bigint | string): void {
    if (this.ended) return;
    try {
      if (Array.isArray(msg)) this.channel.writeParts!(msg);
      else this.channel.write(msg as Buffer);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // ENOENT: the kernel no longer waits for that request; ENODEV: the connection is gone.
      if (code !== 'ENOENT' && code !== 'ENODEV')
        this.log(`write ${typeof what === 'bigint' ? `reply to ${what}` : what}: ${String(err)}`);
    }
  }

  private onEnd(reason: FuseEndReason, error?: Error): void {
    if (this.ended) return;
    this.ended = true;
    for (const req of this.pending.values()) req.abandon();
    this.pending.clear();
    for (const fh of [...this.openFiles.keys()]) this.release(fh);
    this.dirHandles.clear();
    if (!this.initInfo) this.rejectReady(error ?? new Error(`FUSE connection ended (${reason}) before INIT`));
    this.resolveClosed(error ? { reason, error } : { reason });
  }
}
