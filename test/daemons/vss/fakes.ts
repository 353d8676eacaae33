/**
 * Fakes for the VSS freeze logic: a kernel (mount table, sysfs answers, FIFREEZE/FITHAW with the
 * real errnos), hooks, a marker store, and a log sink that flags any line written out while a
 * filesystem is frozen. Every effect takes a number from one shared sequence, so tests can assert
 * the order of freezes, thaws, hook runs, marker writes and log lines.
 */
import type { Freezer } from '../../../daemons/vss/freezer.js';
import type { HookListing, HookPhase, HookResult, HookRunner } from '../../../daemons/vss/hooks.js';
import { type LogGate, gatedLogger } from '../../../daemons/vss/log-gate.js';
import type { FrozenMarker, MarkerRead, MarkerStore } from '../../../daemons/vss/marker.js';
import type { BlockDevices, MountEntry } from '../../../daemons/vss/mounts.js';
import type { Logger } from '../../../daemons/common/log.js';

export class Sequence {
  n = 0;
  next(): number {
    return ++this.n;
  }
}

function errno(code: string, what: string): Error {
  return Object.assign(new Error(`${what}: ${code}`), { code });
}

export interface FakeFs {
  mountPoint: string;
  /** Default: /dev/sdX per filesystem. */
  source?: string;
  fsType?: string;
  /** Default: a device of its own. Give two entries the same device for a bind mount. */
  device?: string;
  options?: string;
  loop?: boolean;
  /** FIFREEZE fails with this errno name. */
  failFreeze?: string;
  /** FITHAW fails with this errno name (`failThawTimes` times, default always). */
  failThaw?: string;
  failThawTimes?: number;
}

export interface KernelOp {
  seq: number;
  op: 'freeze' | 'thaw';
  mountPoint: string;
  result: string;
}

export class FakeKernel implements Freezer, BlockDevices {
  readonly frozen = new Set<string>();
  readonly ops: KernelOp[] = [];
  entries: FakeFs[];

  constructor(
    readonly seq: Sequence,
    fs: FakeFs[],
    /** Non-block mounts shown in the table too (proc, tmpfs, overlay). */
    private readonly extra = true,
  ) {
    this.entries = fs;
  }

  deviceOf(f: FakeFs, i: number): string {
    return f.device ?? `8:${i * 16}`;
  }

  sourceOf(f: FakeFs, i: number): string {
    return f.source ?? `/dev/sd${String.fromCharCode(97 + i)}`;
  }

  mountTable(): MountEntry[] {
    const out: MountEntry[] = [];
    let id = 20;
    const push = (mountPoint: string, source: string, fsType: string, device: string, options = 'rw') => {
      const [maj, min] = device.split(':');
      out.push({
        id: id++,
        parentId: 1,
        major: Number(maj),
        minor: Number(min),
        root: '/',
        mountPoint,
        options: options.split(','),
        fsType,
        source,
        superOptions: ['rw'],
      });
    };
    if (this.extra) {
      push('/proc', 'proc', 'proc', '0:21');
      push('/run', 'tmpfs', 'tmpfs', '0:25');
    }
    this.entries.forEach((f, i) =>
      push(f.mountPoint, this.sourceOf(f, i), f.fsType ?? 'ext4', this.deviceOf(f, i), f.options),
    );
    if (this.extra) push('/usr', 'overlay', 'overlay', '0:40');
    return out;
  }

  private find(mountPoint: string): { f: FakeFs; device: string } {
    const i = this.entries.findIndex((e) => e.mountPoint === mountPoint);
    const f = this.entries[i];
    if (!f) throw errno('ENOENT', `open ${mountPoint}`);
    return { f, device: this.deviceOf(f, i) };
  }

  isFrozen(mountPoint: string): boolean {
    return this.frozen.has(this.find(mountPoint).device);
  }

  freeze(mountPoint: string): void {
    const seq = this.seq.next();
    const record = (result: string) => this.ops.push({ seq, op: 'freeze', mountPoint, result });
    const { f, device } = this.find(mountPoint);
    if (f.failFreeze) {
      record(f.failFreeze);
      throw errno(f.failFreeze, `FIFREEZE ${mountPoint}`);
    }
    if (f.fsType === 'exfat') {
      record('EOPNOTSUPP');
      throw errno('EOPNOTSUPP', `FIFREEZE ${mountPoint}`);
    }
    if (this.frozen.has(device)) {
      record('EBUSY');
      throw errno('EBUSY', `FIFREEZE ${mountPoint}`);
    }
    this.frozen.add(device);
    record('ok');
  }

  thaw(mountPoint: string): void {
    const seq = this.seq.next();
    const record = (result: string) => this.ops.push({ seq, op: 'thaw', mountPoint, result });
    const { f, device } = this.find(mountPoint);
    if (f.failThaw && (f.failThawTimes === undefined || f.failThawTimes > 0)) {
      if (f.failThawTimes !== undefined) f.failThawTimes--;
      record(f.failThaw);
      throw errno(f.failThaw, `FITHAW ${mountPoint}`);
    }
    if (!this.frozen.has(device)) {
      record('EINVAL');
      throw errno('EINVAL', `FITHAW ${mountPoint}`);
    }
    this.frozen.delete(device);
    record('ok');
  }

  deviceNumber(source: string): { major: number; minor: number } {
    const i = this.entries.findIndex((f, j) => this.sourceOf(f, j) === source);
    const f = this.entries[i];
    if (!f) throw errno('ENOENT', `stat ${source}`);
    const [maj, min] = this.deviceOf(f, i).split(':');
    return { major: Number(maj), minor: Number(min) };
  }

  isLoopBacked(major: number, minor: number): boolean {
    return this.entries.some((f, i) => f.loop === true && this.deviceOf(f, i) === `${major}:${minor}`);
  }

  /** The successful operations, as `freeze /a`. */
  done(): string[] {
    return this.ops.filter((o) => o.result === 'ok').map((o) => `${o.op} ${o.mountPoint}`);
  }
}

export interface HookCall {
  seq: number;
  name: string;
  phase: HookPhase;
  /** How many filesystems were frozen when it started (must be 0). */
  frozenAtStart: number;
}

export class FakeHooks implements HookRunner {
  readonly calls: HookCall[] = [];
  /** name → what its run returns for a phase (default ok). */
  behaviour = new Map<string, (phase: HookPhase) => Partial<HookResult>>();
  /** name → a promise its `freeze` run waits for (a slow hook). */
  delays = new Map<string, Promise<void>>();

  constructor(
    private readonly seq: Sequence,
    private readonly kernel: FakeKernel,
    public hooks: string[] = [],
  ) {}

  async list(): Promise<HookListing> {
    return { hooks: [...this.hooks], ignored: [], missing: false };
  }

  async run(name: string, phase: HookPhase, _timeoutMs: number): Promise<HookResult> {
    this.calls.push({ seq: this.seq.next(), name, phase, frozenAtStart: this.kernel.frozen.size });
    await new Promise((r) => setImmediate(r));
    if (phase === 'freeze') await this.delays.get(name);
    const b = this.behaviour.get(name)?.(phase) ?? {};
    return {
      name,
      phase,
      ok: true,
      exitCode: 0,
      signal: null,
      timedOut: false,
      ms: 1,
      output: '',
      ...b,
    };
  }

  /** `name phase` in call order. */
  order(): string[] {
    return this.calls.map((c) => `${c.name} ${c.phase}`);
  }
}

export class MemoryMarker implements MarkerStore {
  readonly path = '/run/hyperv-daemons-ts/vss-frozen.json';
  value: FrozenMarker | undefined;
  corrupt: string | undefined;
  failWrite = false;
  readonly events: { seq: number; what: 'write' | 'remove'; frozenAtCall: number }[] = [];

  constructor(
    private readonly seq: Sequence,
    private readonly kernel: FakeKernel,
  ) {}

  async read(): Promise<MarkerRead> {
    if (this.corrupt !== undefined) return { kind: 'corrupt', error: this.corrupt };
    return this.value ? { kind: 'found', marker: this.value } : { kind: 'none' };
  }

  async write(marker: FrozenMarker): Promise<void> {
    this.events.push({ seq: this.seq.next(), what: 'write', frozenAtCall: this.kernel.frozen.size });
    if (this.failWrite) throw errno('EROFS', `write ${this.path}`);
    this.value = marker;
  }

  async remove(): Promise<void> {
    this.events.push({ seq: this.seq.next(), what: 'remove', frozenAtCall: this.kernel.frozen.size });
    this.value = undefined;
    this.corrupt = undefined;
  }
}

export interface LogLine {
  seq: number;
  level: string;
  msg: string;
  /** Written out while a filesystem was frozen (a violation). */
  whileFrozen: boolean;
  obj: Record<string, unknown>;
}

/** The daemon's real pino logger and gate, writing to memory and checking the freeze rule. */
export function checkedLogger(
  seq: Sequence,
  kernel: FakeKernel,
  held = false,
): { logger: Logger; gate: LogGate; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const sink = {
    write(chunk: string) {
      for (const text of chunk.split('\n')) {
        if (!text) continue;
        const obj = JSON.parse(text) as Record<string, unknown>;
        lines.push({
          seq: seq.next(),
          level: String(obj.level),
          msg: String(obj.msg),
          whileFrozen: kernel.frozen.size > 0,
          obj,
        });
      }
    },
  };
  const { logger, gate } = gatedLogger(sink, { name: 'hv-vss-ts', level: 'debug', held });
  return { logger, gate, lines };
}

/** Timers fired by hand. */
export class ManualTimers {
  private next = 1;
  /** What now() returns; tests move it. */
  clock = 1_000_000;
  now(): number {
    return this.clock;
  }
  readonly pending = new Map<number, { fn: () => void; ms: number }>();

  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.next++;
    this.pending.set(id, { fn, ms });
    return id;
  }

  clearTimeout(h: unknown): void {
    this.pending.delete(h as number);
  }

  /** Fire every pending timer of `ms` (all when omitted). Returns how many fired. */
  fire(ms?: number): number {
    let n = 0;
    for (const [id, t] of [...this.pending]) {
      if (ms !== undefined && t.ms !== ms) continue;
      this.pending.delete(id);
      t.fn();
      n++;
    }
    return n;
  }
}
