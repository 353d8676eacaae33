/**
 * The VSS service: one kernel message in, one reply out, over injected effects (the freezer, the
 * mount table, sysfs, the hooks, the marker, the log gate), so that the whole freeze logic runs in
 * tests against a fake kernel. Upstream's semantics and status codes (daemons.md §3) with the
 * deliberate differences listed in daemons/vss/README.md.
 *
 * A FREEZE: plan the targets (mounts.ts) → write the marker → run the `freeze` hooks in name
 * order → hold the log → FIFREEZE each target, root last (EBUSY: already frozen, success) → reply.
 * If a hook fails nothing is frozen; if a FIFREEZE fails, everything is thawed, then the failure is
 * logged; either way the `freezefail` hooks run in reverse order and the host gets HV_E_FAIL.
 *
 * While frozen the daemon writes nothing to any filesystem, starts no program and loads no module:
 * log lines are held in memory, hooks run only before the freeze and after the thaw, and the
 * freeze and thaw passes are synchronous ioctls whose native code was loaded at start.
 *
 * A THAW (from the host, the hibernation fake THAW, the freeze watchdog, a reopen or a stop): thaw
 * every target in reverse order (EINVAL: not frozen, success) → release the log → reply; then the
 * `thaw` hooks in reverse order, then the marker is removed. All of this is serialised: a request
 * waits for the previous one's hooks.
 */
import { constants as osConstants } from 'node:os';
import {
  HV_E_FAIL,
  HV_S_OK,
  VSS_OP_FREEZE,
  VSS_OP_GET_DM_INFO,
  VSS_OP_HOT_BACKUP,
  VSS_OP_REGISTER1,
  VSS_OP_THAW,
  statusName,
} from '../../uapi/constants.js';
import { VSS_MSG_SIZE, decodeVssMessage, encodeVssRegister, encodeVssReply } from '../../uapi/vss.js';
import type { DeviceProtocol } from '../common/device-loop.js';
import type { Logger } from '../common/log.js';
import { type Freezer, type PassFailure, freezePass, thawPass } from './freezer.js';
import type { HookPhase, HookResult, HookRunner } from './hooks.js';
import type { LogHold } from './log-gate.js';
import type { FrozenMarker, MarkerStore } from './marker.js';
import {
  type BlockDevices,
  type FreezePlan,
  type FreezeTarget,
  type MountEntry,
  SKIP_REASONS,
  planFreeze,
  thawOrder,
} from './mounts.js';

export const VSS_DEVICE = '/dev/vmbus/hv_vss';
/** Thaw by itself when no THAW comes within this (the kernel gives the host 15 min per FREEZE). */
export const DEFAULT_WATCHDOG_MS = 10 * 60_000;
export const DEFAULT_HOOK_TIMEOUT_MS = 60_000;
/** Hooks and freeze together must answer before the kernel's 900 s FREEZE timeout. */
export const FREEZE_BUDGET_MS = 840_000;
/** A thaw that failed is tried again this often. */
export const THAW_RETRY_MS = 5_000;

/**
 * While a thaw keeps failing, log lines stay held (the filesystem still frozen may be where they
 * go) for at most this long; then they are written out, because a person must learn of it.
 */
export const THAW_FAILURE_HOLD_MS = 60_000;

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  now(): number;
}

const realTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
  now: () => Date.now(),
};

export interface VssServiceDeps {
  freezer: Freezer;
  /** The mount table now; throws when it cannot be read. */
  mountTable(): readonly MountEntry[];
  blockDevices: BlockDevices;
  hooks: HookRunner;
  marker: MarkerStore;
  logger: Logger;
  logHold: LogHold;
  /** This boot's id (marker staleness); '' when unknown. */
  bootId?: string;
  hookTimeoutMs?: number;
  watchdogMs?: number;
  timers?: Timers;
  /** True once the daemon is stopping: a FREEZE is then refused rather than started. */
  stopping?(): boolean;
}

const OP_NAMES: Record<number, string> = {
  [VSS_OP_HOT_BACKUP]: 'HOT_BACKUP',
  [VSS_OP_GET_DM_INFO]: 'GET_DM_INFO',
  [VSS_OP_FREEZE]: 'FREEZE',
  [VSS_OP_THAW]: 'THAW',
};

export type ThawTrigger = 'host' | 'watchdog' | 'reopen' | 'stop' | 'start' | 'retry' | 'rollback';

/** What a request's handling decided: the status, and work to do after the reply is written. */
interface Handled {
  status: number;
  flags: number;
  after?: () => Promise<void>;
}

function errnoNumber(code: string): number {
  return (osConstants.errno as Record<string, number | undefined>)[code] ?? 0;
}

function markerTargets(m: FrozenMarker): FreezeTarget[] {
  return m.filesystems.map((f) => ({ ...f, alsoAt: [] }));
}

function sameFs(a: FreezeTarget, b: FreezeTarget): boolean {
  return (a.device !== '' && a.device === b.device) || a.mountPoint === b.mountPoint;
}

/** `b`'s targets not already in `a` (same superblock or same mount point), appended to `a`. */
function union(a: readonly FreezeTarget[], b: readonly FreezeTarget[]): FreezeTarget[] {
  const out = [...a];
  for (const t of b) if (!out.some((o) => sameFs(o, t))) out.push(t);
  return out;
}

/**
 * What a thaw pass visits: ours in reverse freeze order (root first), then the other eligible
 * filesystems (upstream thaws them all; EINVAL when not frozen), also in reverse order.
 */
function thawList(ours: readonly FreezeTarget[], eligible: readonly FreezeTarget[]): FreezeTarget[] {
  return [...thawOrder(ours), ...thawOrder(eligible).filter((t) => !ours.some((o) => sameFs(o, t)))];
}

export class VssService implements DeviceProtocol {
  readonly devicePath: string;
  readonly readSize = VSS_MSG_SIZE;
  /** The kernel's VSS version from the registration reply (0 before it). */
  kernelVersion = 0;
  private awaitingRegistration = false;
  /** What this daemon froze (or found frozen), in freeze order. */
  private frozen: FreezeTarget[] = [];
  /** Hooks that ran `freeze` and get `thaw` once the filesystems are thawed, in name order. */
  private hooksToThaw: string[] = [];
  /** The marker file is there (written by us, or left by a previous instance). */
  private markerPresent = false;
  /** A watchdog thaw not yet reported to the host. */
  private pendingFailure: { reason: string; at: string } | undefined;
  private watchdog: unknown;
  private retry: unknown;
  private queue: Promise<void> = Promise.resolve();
  /** When the current run of failed thaws began. */
  private thawFailingSince: number | undefined;
  private readonly timers: Timers;
  /** For status and tests. */
  lastFreeze: { at: string; status: number; filesystems: string[]; ms: number } | undefined;

  constructor(
    private readonly deps: VssServiceDeps,
    devicePath = VSS_DEVICE,
  ) {
    this.devicePath = devicePath;
    this.timers = deps.timers ?? realTimers;
  }

  get watchdogMs(): number {
    return this.deps.watchdogMs ?? DEFAULT_WATCHDOG_MS;
  }

  /** Mount points frozen by this daemon now, in freeze order. */
  get frozenMountPoints(): string[] {
    return this.frozen.map((t) => t.mountPoint);
  }

  registration(): Uint8Array {
    return encodeVssRegister(VSS_OP_REGISTER1);
  }

  opened(): void {
    this.awaitingRegistration = true;
  }

  async serve(message: Buffer): Promise<Uint8Array | undefined> {
    const { logger } = this.deps;
    const wasAwaiting = this.awaitingRegistration;
    this.awaitingRegistration = false;
    const decoded = decodeVssMessage(message);
    if (!decoded.ok) {
      const op = decoded.error.operation ?? message[0] ?? 0;
      if (decoded.error.code === 'unknown-operation') {
        logger.error({ operation: op }, `Illegal op:${op}`);
      } else {
        logger.error({ length: message.length, code: decoded.error.code }, decoded.error.message);
      }
      return encodeVssReply({ error: HV_E_FAIL, flags: 0 });
    }
    const msg = decoded.value;
    if (msg.kind === 'registered') {
      this.kernelVersion = msg.version;
      logger.info({ version: msg.version }, `VSS: kernel module version: ${msg.version}`);
      return undefined;
    }
    if (wasAwaiting) {
      logger.warn(
        { operation: msg.operation },
        'invalid version negotiation: a request came before the registration reply; serving it',
      );
    }
    let handled: Handled;
    try {
      handled = await this.exclusive(() => this.handle(msg.operation, msg.flags));
    } catch (e) {
      // Not expected (every effect is caught where it happens); never let the loop die of it.
      logger.error({ operation: msg.operation, err: String(e) }, `op=${msg.operation} failed!`);
      handled = { status: HV_E_FAIL, flags: msg.flags };
    }
    if (handled.after) this.enqueue(handled.after);
    return encodeVssReply({ error: handled.status, flags: handled.flags });
  }

  /** The device was closed (read/write error, hibernation, stop): thaw first, as upstream does. */
  async closed(reason: string): Promise<void> {
    await this.exclusive(async () => {
      if (this.frozen.length === 0) return;
      const after = this.thaw(reason === 'stopping' ? 'stop' : 'reopen', reason);
      await after.after?.();
    });
  }

  /**
   * At start: if a previous instance left its marker, thaw what it lists and run its `thaw` hooks.
   * Releases the log gate (the daemon starts with it held, in case the machine is frozen).
   */
  async recover(): Promise<{ thawed: readonly string[]; failed: string[] } | undefined> {
    return this.exclusive(async () => {
      const { logger, marker } = this.deps;
      const read = await marker
        .read()
        .catch((e: unknown) => ({ kind: 'corrupt' as const, error: String(e) }));
      if (read.kind === 'none') {
        this.deps.logHold.release();
        return undefined;
      }
      this.markerPresent = true;
      let targets: FreezeTarget[];
      let hooks: readonly string[] = [];
      let from = 'a previous instance';
      if (read.kind === 'corrupt') {
        // What is frozen is unknown: thaw every eligible filesystem (EINVAL when it is not frozen).
        targets = this.safePlan()?.targets.slice() ?? [];
        from = `an unreadable marker (${read.error})`;
      } else {
        const m = read.marker;
        const boot = this.deps.bootId ?? '';
        if (boot !== '' && m.bootId !== '' && m.bootId !== boot) {
          this.deps.logHold.release();
          logger.info(
            { marker: marker.path, bootId: m.bootId },
            'removing a frozen marker from an earlier boot (nothing of this boot is frozen by it)',
          );
          await this.removeMarker();
          return undefined;
        }
        targets = markerTargets(m);
        hooks = m.hooks;
        from = `a previous instance (pid ${m.pid}, marker written ${m.writtenAt})`;
      }
      this.frozen = targets;
      this.hooksToThaw = [...hooks];
      const out = this.thaw('start', `marker left by ${from}`, false);
      const result = {
        thawed: out.thawed ?? [],
        failed: this.frozen.map((t) => t.mountPoint),
      };
      await out.after?.();
      return result;
    });
  }

  /** Resolves once the queued work (e.g. the thaw hooks after a THAW reply) is done. */
  async idle(): Promise<void> {
    let tail: Promise<void>;
    do {
      tail = this.queue;
      await tail;
    } while (tail !== this.queue);
  }

  /** Stop the timers (at exit). */
  dispose(): void {
    if (this.watchdog !== undefined) this.timers.clearTimeout(this.watchdog);
    if (this.retry !== undefined) this.timers.clearTimeout(this.retry);
    this.watchdog = undefined;
    this.retry = undefined;
  }

  /**
   * Last resort at process exit (synchronous: only ioctls): thaw what we froze. The marker stays
   * if hooks were due, for the next start.
   */
  emergencyThaw(): string[] {
    if (this.frozen.length === 0) return [];
    const out = thawPass(thawOrder(this.frozen), this.deps.freezer);
    this.frozen = thawOrder(out.failures.map((f) => f.target));
    // Held lines are lost rather than risk an exit that blocks on a frozen filesystem.
    if (this.frozen.length === 0) this.deps.logHold.release();
    return [...out.thawed, ...out.notFrozen];
  }

  // -------------------------------------------------------------------------------------------

  private exclusive<T>(job: () => Promise<T>): Promise<T> {
    const run = this.queue.then(job);
    this.queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private enqueue(job: () => Promise<void>): void {
    void this.exclusive(job).catch((e: unknown) =>
      this.deps.logger.error({ err: String(e) }, `after-reply work failed: ${e}`),
    );
  }

  private async handle(operation: number, flags: number): Promise<Handled> {
    const { logger } = this.deps;
    const name = OP_NAMES[operation] ?? String(operation);
    if (this.pendingFailure && (operation === VSS_OP_HOT_BACKUP || operation === VSS_OP_FREEZE)) {
      return { status: this.reportPending(name), flags };
    }
    switch (operation) {
      case VSS_OP_HOT_BACKUP:
        logger.info({ operation: name }, 'VSS: op=CHECK HOT BACKUP');
        return { status: HV_S_OK, flags };
      case VSS_OP_GET_DM_INFO:
        // The kernel answers it (flags 0); should one reach us, answer as the kernel does.
        logger.info({ operation: name }, 'VSS: op=GET_DM_INFO');
        return { status: HV_S_OK, flags: 0 };
      case VSS_OP_FREEZE:
        return { ...(await this.freeze()), flags };
      case VSS_OP_THAW: {
        const pending = this.pendingFailure;
        const out = this.thaw(
          'host',
          pending ? 'THAW from the host, after the watchdog' : 'THAW from the host',
        );
        const status = pending ? this.reportPending(name) : out.status;
        return { status, flags, ...(out.after ? { after: out.after } : {}) };
      }
      default:
        logger.error({ operation }, `Illegal op:${operation}`);
        return { status: HV_E_FAIL, flags };
    }
  }

  private reportPending(name: string): number {
    const p = this.pendingFailure;
    this.pendingFailure = undefined;
    this.deps.logger.warn(
      { operation: name, since: p?.at, reason: p?.reason },
      `reporting HV_E_FAIL to the host's ${name}: the filesystems were thawed without its THAW (${p?.reason})`,
    );
    return HV_E_FAIL;
  }

  private plan(): FreezePlan {
    return planFreeze(this.deps.mountTable(), this.deps.blockDevices);
  }

  private safePlan(): FreezePlan | undefined {
    try {
      return this.plan();
    } catch (e) {
      this.deps.logger.error({ err: String(e) }, `cannot read the mount table: ${e}`);
      return undefined;
    }
  }

  private logPlan(plan: FreezePlan): void {
    const { logger } = this.deps;
    for (const p of plan.problems) {
      logger.error({ mountPoint: p.mountPoint, source: p.source }, `Can't stat: ${p.source}; ${p.message}`);
    }
    logger.debug(
      {
        targets: plan.targets.map((t) => ({ mountPoint: t.mountPoint, source: t.source, fsType: t.fsType })),
        skipped: plan.skipped.map((s) => ({ mountPoint: s.mountPoint, why: SKIP_REASONS[s.reason] })),
      },
      `FREEZE plan: ${plan.targets.length} filesystems (${plan.targets.map((t) => t.mountPoint).join(', ')})`,
    );
  }

  private failFreeze(message: string, fields: Record<string, unknown> = {}): { status: number } {
    const { logger } = this.deps;
    logger.error(fields, message);
    logger.info({ operation: 'FREEZE', status: statusName(HV_E_FAIL) }, 'VSS: op=FREEZE: failed');
    this.lastFreeze = { at: new Date().toISOString(), status: HV_E_FAIL, filesystems: [], ms: 0 };
    return { status: HV_E_FAIL };
  }

  private async freeze(): Promise<{ status: number }> {
    const { logger, freezer } = this.deps;
    if (this.frozen.length > 0) return this.freezeAgain();
    const started = Date.now();
    let plan: FreezePlan;
    try {
      plan = this.plan();
    } catch (e) {
      return this.failFreeze(`cannot read the mount table: ${e}`, { err: String(e) });
    }
    this.logPlan(plan);
    if (this.deps.stopping?.()) return this.failFreeze('not freezing: the daemon is stopping');

    let hooks: readonly string[];
    try {
      const listing = await this.deps.hooks.list();
      for (const i of listing.ignored)
        logger.debug({ hook: i.name, why: i.reason }, `hook ignored: ${i.name}`);
      hooks = listing.hooks;
    } catch (e) {
      return this.failFreeze(`cannot list the hooks: ${e}`, { err: String(e) });
    }

    try {
      await this.deps.marker.write({
        format: 'hv-vss-frozen',
        version: 1,
        pid: process.pid,
        bootId: this.deps.bootId ?? '',
        writtenAt: new Date().toISOString(),
        filesystems: plan.targets.map((t) => ({
          mountPoint: t.mountPoint,
          device: t.device,
          source: t.source,
          fsType: t.fsType,
        })),
        hooks,
      });
      this.markerPresent = true;
    } catch (e) {
      return this.failFreeze(
        `not freezing: cannot write the frozen marker ${this.deps.marker.path} (${e}); without it a crash while frozen could not be recovered`,
        { marker: this.deps.marker.path, err: String(e) },
      );
    }

    // Pre-freeze hooks, in name order, within the kernel's FREEZE time.
    const ran: string[] = [];
    for (const name of hooks) {
      const left = FREEZE_BUDGET_MS - (Date.now() - started);
      const timeout = Math.min(this.deps.hookTimeoutMs ?? DEFAULT_HOOK_TIMEOUT_MS, left);
      if (timeout <= 0) {
        await this.runHooks(thawOrder(ran), 'freezefail');
        await this.removeMarker();
        return this.failFreeze(`not freezing: the hooks used up the time the kernel gives a FREEZE`);
      }
      const r = await this.deps.hooks.run(name, 'freeze', timeout);
      this.logHook(r);
      if (!r.ok) {
        // The failed hook's own freeze did not complete: only the earlier ones get freezefail.
        await this.runHooks(thawOrder(ran), 'freezefail');
        await this.removeMarker();
        return this.failFreeze(`FREEZE refused by hook ${name}: ${this.hookOutcome(r)}`, { hook: name });
      }
      ran.push(name);
    }
    if (this.deps.stopping?.()) {
      await this.runHooks(thawOrder(ran), 'freezefail');
      await this.removeMarker();
      return this.failFreeze('not freezing: the daemon is stopping');
    }

    // The freeze window: from here to the end of the thaw, nothing is written anywhere.
    this.deps.logHold.hold();
    const out = freezePass(plan.targets, freezer);
    if (!out.ok) {
      // Roll back as upstream does: a full thaw pass, then the error is logged.
      this.hooksToThaw = [];
      const rollback = thawPass(thawList(out.frozen, plan.targets), freezer);
      this.frozen = thawOrder(rollback.failures.map((f) => f.target));
      if (this.frozen.length === 0) this.deps.logHold.release();
      else this.thawFailingSince = this.timers.now();
      const f = out.failure as PassFailure;
      logger.error(
        {
          mountPoint: f.target.mountPoint,
          code: f.code,
          rolledBack: [...rollback.thawed],
          stillFrozen: this.frozen.map((t) => t.mountPoint),
        },
        `FREEZE of ${f.target.mountPoint} failed; error:${errnoNumber(f.code)} ${f.code}`,
      );
      if (!rollback.ok) this.logThawFailures(rollback.failures, 'rollback');
      await this.runHooks(thawOrder(ran), 'freezefail');
      if (this.frozen.length === 0) await this.removeMarker();
      else this.armRetry();
      return this.failFreeze(`op=${VSS_OP_FREEZE} failed!`, { mountTable: '/proc/self/mountinfo' });
    }
    this.frozen = [...out.frozen];
    this.hooksToThaw = ran;
    this.armWatchdog();
    const ms = Date.now() - started;
    this.lastFreeze = {
      at: new Date().toISOString(),
      status: HV_S_OK,
      filesystems: this.frozenMountPoints,
      ms,
    };
    logger.info(
      {
        operation: 'FREEZE',
        frozen: this.frozenMountPoints,
        alreadyFrozen: out.alreadyFrozen,
        cannotFreeze: out.unsupported.map((t) => t.mountPoint),
        hooks: ran,
        freezeMs: Math.round(out.totalMs * 1000) / 1000,
        watchdogMs: this.watchdogMs,
      },
      'VSS: op=FREEZE: succeeded',
    );
    return { status: HV_S_OK };
  }

  /** A FREEZE while frozen: no hooks and no marker write (nothing may be written now). */
  private freezeAgain(): { status: number } {
    const { logger, freezer } = this.deps;
    let plan: FreezePlan;
    try {
      plan = this.plan();
    } catch (e) {
      return this.failFreeze(`cannot read the mount table: ${e}`, { err: String(e) });
    }
    const out = freezePass(plan.targets, freezer);
    this.frozen = union(this.frozen, out.frozen);
    if (!out.ok) {
      const f = out.failure as PassFailure;
      const rollback = this.thaw('rollback', `FREEZE of ${f.target.mountPoint} failed`);
      logger.error(
        { mountPoint: f.target.mountPoint, code: f.code, rolledBack: rollback.thawed },
        `FREEZE of ${f.target.mountPoint} failed; error:${errnoNumber(f.code)} ${f.code}`,
      );
      if (rollback.after) this.enqueue(rollback.after);
      return this.failFreeze(`op=${VSS_OP_FREEZE} failed!`);
    }
    this.armWatchdog();
    logger.info(
      { operation: 'FREEZE', frozen: this.frozenMountPoints, again: true },
      'VSS: op=FREEZE: succeeded',
    );
    return { status: HV_S_OK };
  }

  /**
   * Thaw everything we froze, and (for the host's THAW, a reopen or a stop, as upstream) every
   * eligible filesystem, in reverse freeze order. Synchronous up to the log release; the returned
   * `after` runs the thaw hooks and removes the marker.
   */
  private thaw(
    trigger: ThawTrigger,
    why: string,
    includeEligible = true,
  ): { status: number; thawed?: readonly string[]; after?: () => Promise<void> } {
    const { logger, freezer } = this.deps;
    this.disarmWatchdog();
    this.disarmRetry();
    const wasFrozen = this.frozen.length > 0;
    const eligible = includeEligible ? (this.safePlan()?.targets ?? []) : [];
    const out = thawPass(thawList(this.frozen, eligible), freezer);
    // What failed to thaw stays ours (back in freeze order) and is retried.
    this.frozen = thawOrder(out.failures.map((f) => f.target));
    if (this.frozen.length === 0) {
      this.thawFailingSince = undefined;
      this.deps.logHold.release();
    } else {
      this.thawFailingSince ??= this.timers.now();
      if (this.timers.now() - this.thawFailingSince >= THAW_FAILURE_HOLD_MS) this.deps.logHold.release();
    }

    const status = out.ok ? HV_S_OK : HV_E_FAIL;
    const fields = {
      trigger,
      thawed: out.thawed,
      notFrozen: out.notFrozen.length,
      thawMs: Math.round(out.totalMs * 1000) / 1000,
    };
    if (trigger === 'host') {
      // After a watchdog thaw the host is told the THAW failed (reportPending says why).
      const ok = out.ok && !this.pendingFailure;
      logger.info({ operation: 'THAW', ...fields }, `VSS: op=THAW: ${ok ? 'succeeded' : 'failed'}`);
    } else if (trigger === 'watchdog') {
      logger.error(
        fields,
        `no THAW came within ${this.watchdogMs / 1000} s of the FREEZE: the freeze watchdog thawed ${out.thawed.join(', ') || 'nothing'}; the host will be told at its next request`,
      );
    } else if (trigger === 'start') {
      logger.warn(fields, `${why}: thawed ${out.thawed.join(', ') || 'nothing (nothing was frozen)'}`);
    } else if (wasFrozen || out.thawed.length > 0) {
      logger.warn(
        fields,
        `thawed before ${trigger === 'stop' ? 'stopping' : 'reopening the device'} (${why})`,
      );
    }
    if (!out.ok) {
      this.logThawFailures(out.failures, trigger);
      if (trigger === 'reopen' || trigger === 'stop')
        logger.error(
          { err: out.failures.map((f) => f.code).join(',') },
          `failed to thaw file system: err=${errnoNumber(out.failures[0]?.code ?? 'EIO')}`,
        );
    }
    if (this.frozen.length > 0) {
      this.armRetry();
      return { status, thawed: out.thawed };
    }
    const hooks = this.hooksToThaw;
    this.hooksToThaw = [];
    if (hooks.length === 0 && !this.markerPresent) return { status, thawed: out.thawed };
    return {
      status,
      thawed: out.thawed,
      after: async () => {
        await this.runHooks(thawOrder(hooks), 'thaw');
        // A FREEZE may have come and written a new marker meanwhile: only remove it if not frozen.
        if (this.frozen.length === 0) await this.removeMarker();
      },
    };
  }

  private logThawFailures(failures: readonly PassFailure[], trigger: ThawTrigger): void {
    for (const f of failures) {
      this.deps.logger.error(
        { mountPoint: f.target.mountPoint, code: f.code, trigger },
        `THAW of ${f.target.mountPoint} failed; error:${errnoNumber(f.code)} ${f.code}; retrying every ${THAW_RETRY_MS / 1000} s`,
      );
    }
  }

  private async runHooks(names: readonly string[], phase: HookPhase): Promise<void> {
    if (this.frozen.length > 0) {
      // Never start a program while something is frozen (its binary or its writes may be there).
      this.deps.logger.error(
        { phase, hooks: names },
        `not running the ${phase} hooks: filesystems are still frozen`,
      );
      return;
    }
    for (const name of names) {
      const r = await this.deps.hooks.run(name, phase, this.deps.hookTimeoutMs ?? DEFAULT_HOOK_TIMEOUT_MS);
      this.logHook(r);
    }
  }

  private hookOutcome(r: HookResult): string {
    if (r.timedOut) return `timed out after ${r.ms} ms (killed)`;
    if (r.error) return `could not be started (${r.error})`;
    if (r.signal) return `killed by ${r.signal}`;
    return `exit status ${r.exitCode}`;
  }

  private logHook(r: HookResult): void {
    const fields = {
      hook: r.name,
      phase: r.phase,
      exitCode: r.exitCode,
      signal: r.signal,
      timedOut: r.timedOut,
      ms: r.ms,
      ...(r.output ? { output: r.output.trimEnd() } : {}),
    };
    if (r.ok) this.deps.logger.info(fields, `hook ${r.name} ${r.phase}: ok`);
    else this.deps.logger.error(fields, `hook ${r.name} ${r.phase}: ${this.hookOutcome(r)}`);
  }

  private async removeMarker(): Promise<void> {
    try {
      await this.deps.marker.remove();
      this.markerPresent = false;
    } catch (e) {
      this.deps.logger.error(
        { marker: this.deps.marker.path, err: String(e) },
        `cannot remove the frozen marker: ${e}`,
      );
    }
  }

  private armWatchdog(): void {
    this.disarmWatchdog();
    this.watchdog = this.timers.setTimeout(() => {
      this.watchdog = undefined;
      this.enqueue(async () => {
        if (this.frozen.length === 0) return;
        this.pendingFailure = {
          reason: `no THAW within ${this.watchdogMs / 1000} s; thawed by the freeze watchdog`,
          at: new Date().toISOString(),
        };
        const out = this.thaw('watchdog', 'freeze watchdog', false);
        await out.after?.();
      });
    }, this.watchdogMs);
  }

  private disarmWatchdog(): void {
    if (this.watchdog !== undefined) this.timers.clearTimeout(this.watchdog);
    this.watchdog = undefined;
  }

  private armRetry(): void {
    this.disarmRetry();
    this.retry = this.timers.setTimeout(() => {
      this.retry = undefined;
      this.enqueue(async () => {
        if (this.frozen.length === 0) return;
        const out = this.thaw('retry', 'a thaw failed earlier', false);
        await out.after?.();
      });
    }, THAW_RETRY_MS);
  }

  private disarmRetry(): void {
    if (this.retry !== undefined) this.timers.clearTimeout(this.retry);
    this.retry = undefined;
  }
}
