/**
 * The supervisor's state machine: start one daemon, watch it, restart it. Every effect (spawning,
 * the clock, /proc and /dev probes, the after-death cleanup) is injected, so the unit tests drive it
 * with fake time and fake children.
 *
 *   waiting-device ──(node appears)──▶ running ──(unexpected exit)──▶ cleanup ──▶ backoff ──▶ …
 *          ▲                              │ (exit 0 / 64 / 78)            (after-death actions)
 *          └────── (node absent) ◀────────┤──▶ stopped (no restart)
 *                                         └──(SIGTERM/SIGINT)──▶ stopping ──▶ stopped (exit 0)
 *
 * Back-off: `initialMs` doubling to `maxMs`; a run that lasted `stableMs` resets it. `crashLoopCount`
 * unexpected exits within `crashLoopWindowMs` is a crash loop: it is logged as such and the restart
 * delay becomes `crashLoopDelayMs` until a run is stable again. Never gives up.
 */
import { Backoff } from '../daemons/common/backoff.js';
import type { Logger } from '../daemons/common/log.js';

export type DaemonKind = 'kvp' | 'vss' | 'fcopy' | 'other';
export type Readiness = 'auto' | 'log' | 'device' | 'spawn';
export type State = 'waiting-device' | 'running' | 'cleanup' | 'backoff' | 'stopping' | 'stopped';

export interface Child {
  readonly pid: number;
  kill(signal: NodeJS.Signals): void;
}

export interface ChildEvents {
  /** One line of the child's stdout (without the newline). */
  line(text: string): void;
  exit(code: number | null, signal: NodeJS.Signals | null): void;
}

export type SpawnFn = (argv: readonly string[], events: ChildEvents) => Child;

export type TimerHandle = unknown;
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

export const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** What the supervisor asks of the system about the device and the child. */
export interface Probes {
  deviceExists(path: string): boolean;
  /** The state letter of /proc/<pid>/stat (R, S, D, T, t, Z…), undefined if gone. */
  processState(pid: number): string | undefined;
  /** Whether `pid` has `path` open (a /proc/<pid>/fd link to it). */
  holdsDevice(pid: number, path: string): boolean;
}

export interface SupervisorHooks {
  /** The after-death actions of the daemon's kind (thaw, temp-file removal). Must not reject. */
  afterDeath(pid: number): Promise<void>;
  /** Whether the daemon is inside a legitimately long operation (a freeze): hang checks pause. */
  inLongOperation(pid: number): boolean;
  /** Called on every change of what `snapshot()` says (STATUS=, READY=1 on the first `ready`). */
  changed?(snapshot: Snapshot, event: 'ready' | 'state' | 'stopping'): void;
}

export interface SupervisorOptions {
  kind: DaemonKind;
  command: readonly string[];
  device?: string | undefined;
  readiness?: Readiness;
  initialMs?: number;
  maxMs?: number;
  stableMs?: number;
  crashLoopCount?: number;
  crashLoopWindowMs?: number;
  crashLoopDelayMs?: number;
  stopTimeoutMs?: number;
  /** 0 disables the hang check. */
  livenessTimeoutMs?: number;
  probeIntervalMs?: number;
  devicePollMs?: number;
}

export interface ExitRecord {
  at: number;
  pid: number;
  code: number | null;
  signal: string | null;
  /** A human reason: "exited with status 1", "killed by SIGKILL", "hung (stopped, state T) …". */
  reason: string;
}

export interface Snapshot {
  kind: DaemonKind;
  command: readonly string[];
  state: State;
  pid: number | null;
  startedAt: number | null;
  ready: boolean;
  /** False while the hang check sees the daemon stopped or stuck. */
  healthy: boolean;
  restarts: number;
  crashLoop: boolean;
  nextRestartAt: number | null;
  lastExit: ExitRecord | null;
  lastHostRequest: { at: number; operation: string; status?: string } | null;
  device: string | null;
  now: number;
}

/** Exit statuses after which a restart cannot help (EX_USAGE, EX_CONFIG), as RestartPreventExitStatus. */
export const NO_RESTART_STATUSES = new Set([64, 78]);

const READY_RE = /registered with the kernel|kernel module version/;

export class Supervisor {
  readonly opts: Required<Omit<SupervisorOptions, 'device'>> & { device: string | undefined };
  private state: State = 'stopped';
  private child: Child | undefined;
  private startedAt: number | null = null;
  private ready = false;
  private everReady = false;
  private restarts = 0;
  private crashLoop = false;
  private exits: number[] = [];
  private nextRestartAt: number | null = null;
  private lastExit: ExitRecord | null = null;
  private lastHostRequest: Snapshot['lastHostRequest'] = null;
  private readonly backoff: Backoff;
  private timer: TimerHandle | undefined;
  private probeTimer: TimerHandle | undefined;
  private killTimer: TimerHandle | undefined;
  private unhealthySince: number | undefined;
  private hangReason: string | undefined;
  private waitingLogged = false;
  private stopRequested = false;
  private finish: ((code: number) => void) | undefined;

  constructor(
    options: SupervisorOptions,
    private readonly spawn: SpawnFn,
    private readonly clock: Clock,
    private readonly probes: Probes,
    private readonly hooks: SupervisorHooks,
    private readonly logger: Logger,
  ) {
    this.opts = {
      readiness: 'auto',
      initialMs: 100,
      maxMs: 5_000,
      stableMs: 10_000,
      crashLoopCount: 5,
      crashLoopWindowMs: 60_000,
      crashLoopDelayMs: 30_000,
      stopTimeoutMs: 3_000,
      livenessTimeoutMs: 5_000,
      probeIntervalMs: 250,
      devicePollMs: 500,
      ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
      kind: options.kind,
      command: options.command,
      device: options.device,
    } as Supervisor['opts'];
    this.backoff = new Backoff({ initialMs: this.opts.initialMs, maxMs: this.opts.maxMs });
  }

  /** Start supervising; resolves with the supervisor's exit status. */
  run(): Promise<number> {
    return new Promise((resolve) => {
      this.finish = resolve;
      this.launch();
    });
  }

  /** SIGTERM/SIGINT: stop the child (SIGTERM, then SIGKILL after stopTimeoutMs) and finish with 0. */
  stop(reason = 'stop requested'): void {
    if (this.stopRequested) return;
    this.stopRequested = true;
    this.logger.info({ reason }, `stopping: ${reason}`);
    this.clearTimer();
    this.nextRestartAt = null;
    const inCleanup = this.state === 'cleanup';
    this.setState('stopping', 'stopping');
    if (this.child) {
      const child = this.child;
      child.kill('SIGTERM');
      this.killTimer = this.clock.setTimeout(() => {
        if (this.child === child) {
          this.logger.warn(
            { child: child.pid, timeoutMs: this.opts.stopTimeoutMs },
            `the daemon did not stop within ${this.opts.stopTimeoutMs} ms: SIGKILL`,
          );
          child.kill('SIGKILL');
        }
      }, this.opts.stopTimeoutMs);
    } else if (!inCleanup) {
      this.done(0);
    }
  }

  snapshot(): Snapshot {
    return {
      kind: this.opts.kind,
      command: this.opts.command,
      state: this.state,
      pid: this.child?.pid ?? null,
      startedAt: this.child ? this.startedAt : null,
      ready: this.ready,
      healthy: this.unhealthySince === undefined,
      restarts: this.restarts,
      crashLoop: this.crashLoop,
      nextRestartAt: this.nextRestartAt,
      lastExit: this.lastExit,
      lastHostRequest: this.lastHostRequest,
      device: this.opts.device ?? null,
      now: this.clock.now(),
    };
  }

  private setState(state: State, event: 'state' | 'stopping' = 'state'): void {
    this.state = state;
    this.hooks.changed?.(this.snapshot(), event);
  }

  private clearTimer(): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  private launch = (): void => {
    this.timer = undefined;
    this.nextRestartAt = null;
    if (this.stopRequested) return this.done(0);
    const device = this.opts.device;
    if (device && !this.probes.deviceExists(device)) {
      if (!this.waitingLogged) {
        this.logger.warn({ device }, `waiting for ${device} (the channel is absent or rescinded)`);
        this.waitingLogged = true;
        this.setState('waiting-device');
      }
      this.timer = this.clock.setTimeout(this.launch, this.opts.devicePollMs);
      return;
    }
    if (this.waitingLogged) this.logger.info({ device }, `${device} is present`);
    this.waitingLogged = false;
    this.ready = false;
    this.unhealthySince = undefined;
    this.hangReason = undefined;
    let child: Child;
    const events: ChildEvents = {
      line: (text) => this.onLine(child, text),
      exit: (code, signal) => this.onExit(child, code, signal),
    };
    try {
      child = this.spawn(this.opts.command, events);
    } catch (e) {
      this.logger.error({ err: String(e) }, `cannot start ${this.opts.command[0]}: ${(e as Error).message}`);
      this.afterExit({ at: this.clock.now(), pid: 0, code: null, signal: null, reason: String(e) }, 0);
      return;
    }
    this.child = child;
    this.startedAt = this.clock.now();
    this.logger.info({ child: child.pid, command: this.opts.command }, `started ${this.opts.command[0]}`);
    this.setState('running');
    if (this.opts.readiness === 'spawn') this.markReady('spawn');
    this.probeTimer = this.clock.setTimeout(this.probe, this.opts.probeIntervalMs);
  };

  private markReady(how: string): void {
    if (this.ready || !this.child) return;
    this.ready = true;
    this.logger.info({ child: this.child.pid, how }, `the daemon is ready (${how})`);
    const first = !this.everReady;
    this.everReady = true;
    this.hooks.changed?.(this.snapshot(), first ? 'ready' : 'state');
  }

  private onLine(child: Child, text: string): void {
    if (child !== this.child || !text.startsWith('{')) return;
    let obj: Record<string, unknown>;
    try {
      obj = JSON.parse(text) as Record<string, unknown>;
    } catch {
      return;
    }
    const msg = typeof obj.msg === 'string' ? obj.msg : '';
    if ((this.opts.readiness === 'auto' || this.opts.readiness === 'log') && READY_RE.test(msg))
      this.markReady('log');
    if (typeof obj.operation === 'string') {
      this.lastHostRequest = {
        at: typeof obj.time === 'string' ? Date.parse(obj.time) || this.clock.now() : this.clock.now(),
        operation: obj.operation,
        ...(typeof obj.status === 'string' ? { status: obj.status } : {}),
      };
    }
  }

  /** The periodic check: readiness by the device held open, and the hang check. */
  private probe = (): void => {
    this.probeTimer = undefined;
    const child = this.child;
    if (!child || this.state !== 'running') return;
    const device = this.opts.device;
    if (
      !this.ready &&
      device &&
      (this.opts.readiness === 'auto' || this.opts.readiness === 'device') &&
      this.probes.holdsDevice(child.pid, device)
    )
      this.markReady('device held open');
    if (this.opts.livenessTimeoutMs > 0) this.checkLiveness(child);
    if (this.child === child) this.probeTimer = this.clock.setTimeout(this.probe, this.opts.probeIntervalMs);
  };

  private checkLiveness(child: Child): void {
    const st = this.probes.processState(child.pid);
    let bad: string | undefined;
    if (st === 'T' || st === 't') bad = `stopped (state ${st})`;
    else if (st === 'D' && !this.hooks.inLongOperation(child.pid)) bad = 'in uninterruptible sleep (state D)';
    const now = this.clock.now();
    if (!bad) {
      if (this.unhealthySince !== undefined)
        this.logger.info({ child: child.pid }, 'the daemon is alive again');
      this.unhealthySince = undefined;
      return;
    }
    if (this.unhealthySince === undefined) {
      this.unhealthySince = now;
      this.logger.warn({ child: child.pid, state: st }, `the daemon is ${bad}`);
      return;
    }
    const ms = now - this.unhealthySince;
    if (ms >= this.opts.livenessTimeoutMs && this.hangReason === undefined) {
      this.hangReason = `hung: ${bad} for ${ms} ms`;
      this.logger.error(
        { child: child.pid, state: st, ms },
        `the daemon is hung (${bad} for ${ms} ms): SIGKILL`,
      );
      child.kill('SIGKILL');
    }
  }

  private onExit(child: Child, code: number | null, signal: NodeJS.Signals | null): void {
    if (child !== this.child) return;
    this.child = undefined;
    if (this.probeTimer !== undefined) this.clock.clearTimeout(this.probeTimer);
    if (this.killTimer !== undefined) this.clock.clearTimeout(this.killTimer);
    this.probeTimer = this.killTimer = undefined;
    const now = this.clock.now();
    const ranMs = now - (this.startedAt ?? now);
    const base = signal ? `killed by ${signal}` : `exited with status ${code}`;
    const record: ExitRecord = {
      at: now,
      pid: child.pid,
      code,
      signal,
      reason: this.hangReason ? `${this.hangReason} (${base})` : base,
    };
    this.ready = false;
    this.afterExit(record, ranMs);
  }

  private afterExit(record: ExitRecord, ranMs: number): void {
    this.lastExit = record;
    const stopping = this.stopRequested;
    const clean = !stopping && record.code === 0 && !record.signal;
    const fatal = !stopping && record.code !== null && NO_RESTART_STATUSES.has(record.code);
    const level = stopping || clean ? 'info' : 'error';
    this.logger[level]({ child: record.pid, code: record.code, signal: record.signal, ranMs }, record.reason);
    this.setState('cleanup');
    const cleanup = record.pid > 0 ? this.hooks.afterDeath(record.pid) : Promise.resolve();
    void cleanup.then(() => {
      if (this.stopRequested) return this.done(0);
      if (clean) {
        this.logger.info('the daemon stopped cleanly: not restarting');
        return this.done(0);
      }
      if (fatal) {
        this.logger.error(
          { code: record.code },
          `the daemon refused its configuration (status ${record.code}): not restarting`,
        );
        return this.done(record.code ?? 1);
      }
      this.scheduleRestart(ranMs);
    });
  }

  private scheduleRestart(ranMs: number): void {
    const now = this.clock.now();
    if (ranMs >= this.opts.stableMs) {
      this.backoff.reset();
      this.exits = [];
      if (this.crashLoop) this.logger.info('the daemon ran stably: the crash loop is over');
      this.crashLoop = false;
    }
    this.exits = this.exits.filter((t) => now - t < this.opts.crashLoopWindowMs);
    this.exits.push(now);
    let delay = this.backoff.next();
    if (this.exits.length >= this.opts.crashLoopCount) {
      this.crashLoop = true;
      delay = Math.max(delay, this.opts.crashLoopDelayMs);
      this.logger.error(
        { exits: this.exits.length, windowMs: this.opts.crashLoopWindowMs, delayMs: delay },
        `crash loop: ${this.exits.length} unexpected exits within ${this.opts.crashLoopWindowMs / 1000} s; ` +
          `trying again every ${delay / 1000} s`,
      );
    }
    this.restarts++;
    this.nextRestartAt = now + delay;
    this.logger.info({ delayMs: delay, restarts: this.restarts }, `restarting in ${delay} ms`);
    this.setState('backoff');
    this.timer = this.clock.setTimeout(this.launch, delay);
  }

  private done(code: number): void {
    this.clearTimer();
    if (this.probeTimer !== undefined) this.clock.clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
    this.state = 'stopped';
    const f = this.finish;
    this.finish = undefined;
    f?.(code);
  }
}
