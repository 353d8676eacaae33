/**
 * Runs scenario steps against the simulated host and records what the host saw, step by step, as
 * deterministic JSON: the same scenario against the upstream C daemon and against ours gives two
 * recordings that compareRecordings() can set side by side.
 *
 *   const recording = await runScenario(parseScenario(text), { shim, baseDir });
 *   writeFileSync('ours.json', recordingToJson(recording));
 *   compareRecordings(upstream, recording, { labels: ['upstream', 'ours'] });
 */
import { access, constants } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import { statusName } from '../../uapi/constants.js';
import type { KvpIpInfo } from '../../uapi/kvp.js';
import { FakeClock } from '../clock.js';
import type { ServiceName } from '../device.js';
import { HVUTIL_READY, HVUTIL_STATE_NAMES } from '../drivers/util.js';
import type { HostResult } from '../host/kvp.js';
import type { KernelShim } from '../shim.js';
import {
  type Expectation,
  type HostErrorKind,
  NUMERIC_FIELDS,
  type Step,
  type StepOp,
  dataBytes,
  parseScenario,
  quoteWord,
} from './parse.js';

// ---------------------------------------------------------------------------------------------
// recordings

/** What the host saw for one step. Only the fields the operation has are present. */
export interface HostView {
  readonly status?: number;
  /** e.g. `HV_S_CONT (0x80070103)`. */
  readonly statusName?: string;
  readonly key?: string;
  readonly value?: string;
  /** kvp list: the items, in the guest's order. */
  readonly count?: number;
  readonly items?: readonly { readonly key: string; readonly value: string }[];
  readonly ip?: KvpIpInfo;
  /** VSS: the flags the guest left in the reply. */
  readonly flags?: number;
  /** fcopy copy/put: the step that ended the copy, and the bytes the guest accepted. */
  readonly step?: 'start' | 'write' | 'complete';
  readonly bytesSent?: number;
  /** wait-ready: the driver state at the end (READY, or what it was when the wait gave up). */
  readonly state?: string;
  /** The host got no status: it timed out, the channel went away, or the step failed. */
  readonly error?: HostErrorKind;
  readonly message?: string;
}

export interface RecordedStep {
  /** 0-based position in the scenario (the console counts on across lines). */
  readonly index: number;
  readonly line: number;
  readonly text: string;
  readonly op: StepOp;
  readonly args: Readonly<Record<string, unknown>>;
  /** Started with `&`. */
  readonly background: boolean;
  /** Absent when the step was skipped. */
  readonly host?: HostView;
  /** The expectations as written (canonical spelling). */
  readonly expect: readonly string[];
  /** Every expectation held (and, without an `error=` expectation, the host saw no error). */
  readonly ok: boolean;
  readonly failures: readonly string[];
  /** Not run: an earlier step failed under stopOnFailure. */
  readonly skipped: boolean;
}

export interface Recording {
  readonly format: 'hv-scenario-recording';
  readonly version: 1;
  readonly summary: {
    readonly total: number;
    readonly passed: number;
    readonly failed: number;
    readonly skipped: number;
    readonly ok: boolean;
  };
  readonly steps: readonly RecordedStep[];
}

/** The recording as JSON text: 2-space indented, keys in a fixed order, a final newline. */
export function recordingToJson(recording: Recording): string {
  return `${JSON.stringify(recording, null, 2)}\n`;
}

// ---------------------------------------------------------------------------------------------
// options

/** How the runner injects faults; each defaults to the shim's own (in-process devices). */
export interface ScenarioFaults {
  rescind(service: ServiceName): Promise<void> | void;
  reoffer(service: ServiceName): Promise<void> | void;
  suspend(): Promise<void> | void;
  resume(): Promise<void> | void;
}

export interface RunOptions {
  shim: KernelShim;
  /**
   * Fault injection. With FUSE device files pass mountDeviceFiles()'s rescind/reoffer, so the file
   * disappears and comes back; missing members fall back to the shim's.
   */
  faults?: Partial<ScenarioFaults>;
  /** Where relative host paths (`fcopy copy SOURCE`) are resolved (default: the working directory). */
  baseDir?: string;
  /** A real-time limit on each step (default 60 s; `--timeout` on a step overrides it). */
  timeoutMs?: number;
  /** Skip the remaining steps after the first failed one. */
  stopOnFailure?: boolean;
  /** Called as each step's entry is recorded (background steps: when they finish; skipped ones too). */
  onStep?: (entry: RecordedStep, step: Step, info: { durationMs: number }) => void;
  /**
   * What `sleep` does. Default: on a FakeClock shim, advance the clock; otherwise wait for real.
   */
  sleep?: (ms: number) => Promise<void> | void;
}

export const DEFAULT_STEP_TIMEOUT_MS = 60_000;

// ---------------------------------------------------------------------------------------------
// errors the runner classifies

class StepTimeout extends Error {
  readonly code = 'HOST_TIMEOUT';
}

function errorView(e: unknown): HostView {
  const code = (e as { code?: unknown } | undefined)?.code;
  const message = e instanceof Error ? e.message : String(e);
  const error: HostErrorKind =
    code === 'HOST_TIMEOUT' ? 'timeout' : code === 'CHANNEL_GONE' ? 'channel-gone' : 'failed';
  return { error, message };
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolvePromise, reject) => {
    const t = setTimeout(
      () => reject(new StepTimeout(`${what}: no result within ${ms} ms (the step's time limit)`)),
      ms,
    );
    p.then(
      (v) => {
        clearTimeout(t);
        resolvePromise(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

const realSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const turn = () => new Promise<void>((r) => setImmediate(r));

function statusView(r: HostResult): { status: number; statusName: string } {
  return { status: r.status >>> 0, statusName: r.statusName };
}

function ipView(ip: KvpIpInfo): KvpIpInfo {
  return {
    adapterId: ip.adapterId,
    addrFamily: ip.addrFamily,
    dhcpEnabled: ip.dhcpEnabled,
    ipAddr: ip.ipAddr,
    subNet: ip.subNet,
    gateWay: ip.gateWay,
    dnsAddr: ip.dnsAddr,
  };
}

/** Arguments as recorded: the command's own, keys in the parser's order (bigint-free by design). */
function argsOf(step: Step): Record<string, unknown> {
  return JSON.parse(JSON.stringify(step.args)) as Record<string, unknown>;
}

// ---------------------------------------------------------------------------------------------
// expectations

function fieldValue(host: HostView, field: string): unknown {
  if (field.startsWith('ip.')) return host.ip?.[field.slice(3) as keyof KvpIpInfo];
  if (field.startsWith('item.')) return host.items?.find((i) => i.key === field.slice(5))?.value;
  return (host as Record<string, unknown>)[field];
}

function show(v: unknown): string {
  return typeof v === 'string' ? quoteWord(v) : String(v);
}

function num(s: string): number {
  return /^0x/i.test(s) ? parseInt(s, 16) : Number(s);
}

/** Why `e` does not hold for `host`, or undefined when it does. */
function check(e: Expectation, host: HostView): string | undefined {
  switch (e.kind) {
    case 'status': {
      if (host.status === undefined)
        return `${e.text}: the host got no status (error=${host.error ?? 'none'}: ${host.message ?? ''})`;
      const same = host.status >>> 0 === e.status >>> 0;
      if (same === !e.negate) return undefined;
      return `${e.text}: got ${host.statusName ?? statusName(host.status)}`;
    }
    case 'error': {
      const got = host.error ?? 'none';
      if ((got === e.error) === !e.negate) return undefined;
      return `${e.text}: got ${got === 'none' ? `a reply (${host.statusName ?? 'no status'})` : `error=${got} (${host.message ?? ''})`}`;
    }
    case 'field': {
      if (e.field === 'has') {
        const present = (host.items ?? []).some((i) => i.key === e.value);
        if (present === (e.op === '=')) return undefined;
        return `${e.text}: ${present ? 'the key is there' : `no such key among ${host.items?.length ?? 0} items`}`;
      }
      const actual = fieldValue(host, e.field);
      if (actual === undefined)
        return `${e.text}: ${e.field.startsWith('item.') ? 'no such item' : `the result has no ${e.field}`}`;
      const numeric = NUMERIC_FIELDS.includes(e.field) && typeof actual === 'number';
      let holds: boolean;
      switch (e.op) {
        case '=':
        case '!=': {
          const eq = numeric ? actual === num(e.value) : String(actual) === e.value;
          holds = eq === (e.op === '=');
          break;
        }
        case '~=':
          holds = new RegExp(e.value, 'u').test(String(actual));
          break;
        default: {
          const a = Number(actual);
          const b = num(e.value);
          holds = e.op === '>' ? a > b : e.op === '<' ? a < b : e.op === '>=' ? a >= b : a <= b;
        }
      }
      return holds ? undefined : `${e.text}: got ${show(actual)}`;
    }
  }
}

function evaluate(step: Step, host: HostView): string[] {
  const expectsError = step.expect.some((e) => e.kind === 'error');
  if (host.error && !expectsError) return [`the host saw error=${host.error}: ${host.message ?? ''}`];
  return step.expect.map((e) => check(e, host)).filter((m): m is string => m !== undefined);
}

// ---------------------------------------------------------------------------------------------
// the runner

/**
 * Runs steps in order and keeps the recording. runScenario() is one execute() and finish(); the
 * console keeps one runner for a whole session.
 */
export class ScenarioRunner {
  private readonly entries: (RecordedStep | undefined)[] = [];
  private readonly steps: Step[] = [];
  private readonly pending = new Map<number, Promise<void>>();
  private stopped = false;
  private readonly faults: ScenarioFaults;
  private readonly sleep: (ms: number) => Promise<void> | void;

  constructor(private readonly opts: RunOptions) {
    const shim = opts.shim;
    this.faults = {
      rescind: opts.faults?.rescind ?? ((s) => shim.device(s).rescind()),
      reoffer: opts.faults?.reoffer ?? ((s) => shim.device(s).reoffer()),
      suspend: opts.faults?.suspend ?? (() => shim.suspend()),
      resume: opts.faults?.resume ?? (() => shim.resume()),
    };
    const clock = shim.clock;
    this.sleep =
      opts.sleep ??
      (clock instanceof FakeClock
        ? async (ms) => {
            await turn();
            clock.advance(ms);
            await turn();
          }
        : realSleep);
  }

  /** Whether a step failed and stopOnFailure stopped the run. */
  get halted(): boolean {
    return this.stopped;
  }

  /** Steps started with `&` and still running. */
  get running(): number {
    return this.pending.size;
  }

  /** Run these steps (background ones are started, not awaited). */
  async execute(steps: readonly Step[]): Promise<void> {
    for (const step of steps) {
      const index = this.entries.length;
      this.entries.push(undefined);
      this.steps.push(step);
      if (this.stopped) {
        const entry = this.entry(index, step, undefined, []);
        this.entries[index] = entry;
        this.opts.onStep?.(entry, step, { durationMs: 0 });
        continue;
      }
      if (step.background) {
        const p = this.runOne(index, step).finally(() => this.pending.delete(index));
        this.pending.set(index, p);
        await turn(); // let it send its request before the next step goes on
      } else {
        await this.runOne(index, step);
      }
    }
  }

  /** Wait for the background steps, then return the recording. */
  async finish(): Promise<Recording> {
    await this.waitAll();
    return this.recording();
  }

  /** The recording so far (a step still running shows as skipped, with a failure saying so). */
  recording(): Recording {
    const steps = this.entries.map(
      (e, i) =>
        e ?? {
          ...this.entry(i, this.steps[i] as Step, undefined, []),
          ok: false,
          failures: ['still running when the recording was taken'],
        },
    );
    const skipped = steps.filter((s) => s.skipped).length;
    const failed = steps.filter((s) => !s.ok && !s.skipped).length;
    return {
      format: 'hv-scenario-recording',
      version: 1,
      summary: {
        total: steps.length,
        passed: steps.length - failed - skipped,
        failed,
        skipped,
        ok: failed === 0 && skipped === 0,
      },
      steps,
    };
  }

  private async waitAll(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending.values()]);
  }

  private async runOne(index: number, step: Step): Promise<void> {
    const t0 = performance.now();
    let host: HostView;
    try {
      host = await this.perform(step);
    } catch (e) {
      host = errorView(e);
    }
    const entry = this.entry(index, step, host, evaluate(step, host));
    this.entries[index] = entry;
    if (!entry.ok && this.opts.stopOnFailure) this.stopped = true;
    this.opts.onStep?.(entry, step, { durationMs: performance.now() - t0 });
  }

  private entry(index: number, step: Step, host: HostView | undefined, failures: string[]): RecordedStep {
    return {
      index,
      line: step.line,
      text: step.text,
      op: step.op,
      args: argsOf(step),
      background: step.background,
      ...(host ? { host } : {}),
      expect: step.expect.map((e) => e.text),
      ok: host !== undefined && failures.length === 0,
      failures,
      skipped: host === undefined,
    };
  }

  private async perform(step: Step): Promise<HostView> {
    switch (step.op) {
      case 'sleep':
        await this.sleep(step.args.ms);
        return {};
      case 'wait':
        await this.waitAll();
        return {};
      case 'wait-ready':
        return this.waitReady(step.args.service, step.args.timeoutMs);
      default:
        return withTimeout(
          this.call(step),
          step.timeoutMs ?? this.opts.timeoutMs ?? DEFAULT_STEP_TIMEOUT_MS,
          step.op,
        );
    }
  }

  private async waitReady(service: ServiceName, timeoutMs: number): Promise<HostView> {
    const device = this.opts.shim.device(service);
    const deadline = performance.now() + timeoutMs;
    const stateName = () => HVUTIL_STATE_NAMES[device.driver.state] ?? String(device.driver.state);
    for (;;) {
      if (device.exists && device.driver.state === HVUTIL_READY) return { state: stateName() };
      const left = deadline - performance.now();
      if (left <= 0)
        return {
          state: stateName(),
          error: 'timeout',
          message: device.exists
            ? `${service}: no daemon registered within ${timeoutMs} ms (the driver is ${stateName()})`
            : `${service}: the device is rescinded and was not offered again within ${timeoutMs} ms`,
        };
      await realSleep(Math.min(5, left));
    }
  }

  private async call(step: Step): Promise<HostView> {
    const host = this.opts.shim.host;
    switch (step.op) {
      case 'kvp set':
      case 'kvp modify': {
        const { key, value, pool, valueType } = step.args;
        const fn = step.op === 'kvp set' ? host.kvp.addItem : host.kvp.modifyItem;
        return statusView(await fn.call(host.kvp, key, value, { pool, valueType }));
      }
      case 'kvp get': {
        const r = await host.kvp.getItem(step.args.key, { pool: step.args.pool });
        return { ...statusView(r), key: r.key, value: r.value };
      }
      case 'kvp delete':
        return statusView(await host.kvp.removeItem(step.args.key, { pool: step.args.pool }));
      case 'kvp enumerate': {
        const r = await host.kvp.enumerate(step.args.pool, step.args.index);
        return { ...statusView(r), key: r.key, value: r.value };
      }
      case 'kvp list': {
        const r = await host.kvp.listItems(step.args.pool, step.args.max);
        return {
          status: r.endStatus >>> 0,
          statusName: statusName(r.endStatus),
          count: r.items.length,
          items: r.items.map((i) => ({ key: i.key, value: i.value })),
        };
      }
      case 'kvp get-ip': {
        const r = await host.kvp.getIpConfiguration(step.args.adapterId, step.args.addrFamily);
        return { ...statusView(r), ip: ipView(r.ip) };
      }
      case 'kvp set-ip':
        return statusView(await host.kvp.setIpConfiguration(ipView(step.args)));
      case 'vss hot-backup':
      case 'vss freeze':
      case 'vss thaw':
      case 'vss dm-info':
      case 'vss request': {
        const vss = host.vss;
        const r =
          step.op === 'vss hot-backup'
            ? await vss.hotBackupCheck(step.args.flags)
            : step.op === 'vss freeze'
              ? await vss.freeze()
              : step.op === 'vss thaw'
                ? await vss.thaw()
                : step.op === 'vss dm-info'
                  ? await vss.getDmInfo()
                  : await vss.request(step.args.operation, step.args.flags);
        return { ...statusView(r), flags: r.flags >>> 0 };
      }
      case 'fcopy copy': {
        const a = step.args;
        const source = isAbsolute(a.source)
          ? a.source
          : resolve(this.opts.baseDir ?? process.cwd(), a.source);
        // say which file, as written: the recording must not depend on where the scenario lives
        await access(source, constants.R_OK).then(
          () => undefined,
          (e: NodeJS.ErrnoException) => {
            throw new Error(`fcopy copy: cannot read the host file ${a.source}: ${e.code ?? e.message}`);
          },
        );
        const r = await host.fcopy.copyFile(source, a.path, a.name, {
          overwrite: a.overwrite,
          createPath: a.createPath,
          ...(a.size !== undefined ? { announcedSize: BigInt(a.size) } : {}),
        });
        return { ...statusView(r), step: r.step, bytesSent: r.bytesSent };
      }
      case 'fcopy put': {
        const a = step.args;
        const r = await host.fcopy.copyBuffer(dataBytes(a.data), a.path, a.name, {
          overwrite: a.overwrite,
          createPath: a.createPath,
          ...(a.size !== undefined ? { announcedSize: BigInt(a.size) } : {}),
        });
        return { ...statusView(r), step: r.step, bytesSent: r.bytesSent };
      }
      case 'fcopy start': {
        const a = step.args;
        return statusView(
          await host.fcopy.start(a.path, a.name, BigInt(a.size), {
            overwrite: a.overwrite,
            createPath: a.createPath,
          }),
        );
      }
      case 'fcopy write':
        return statusView(await host.fcopy.write(BigInt(step.args.offset), dataBytes(step.args.data)));
      case 'fcopy complete':
        return statusView(await host.fcopy.complete());
      case 'fcopy cancel':
        return statusView(await host.fcopy.cancel());
      case 'fault suspend':
        await this.faults.suspend();
        return {};
      case 'fault resume':
        await this.faults.resume();
        return {};
      case 'fault rescind':
        await this.faults.rescind(step.args.service);
        return {};
      case 'fault reoffer':
        await this.faults.reoffer(step.args.service);
        return {};
      case 'sleep':
      case 'wait':
      case 'wait-ready':
        return this.perform(step);
    }
  }
}

/**
 * Run a scenario (steps, or its text) and return the recording. A failed expectation does not
 * stop the run unless `stopOnFailure`; steps started with `&` are awaited before it returns.
 */
export async function runScenario(steps: readonly Step[] | string, opts: RunOptions): Promise<Recording> {
  const runner = new ScenarioRunner(opts);
  await runner.execute(typeof steps === 'string' ? parseScenario(steps) : steps);
  return runner.finish();
}

// ---------------------------------------------------------------------------------------------
// comparing recordings

/** Which steps (or which of their fields) compareRecordings leaves out. */
export type StepFilter =
  | ((step: RecordedStep) => boolean)
  | {
      /** An operation (`kvp list`) or a pattern over it. */
      readonly op?: StepOp | RegExp;
      readonly line?: number;
      readonly index?: number;
      /**
       * Paths within the step to ignore (`host.items`, `host.message`, `host.ip.ipAddr`); without
       * it, the whole step is ignored.
       */
      readonly fields?: readonly string[];
    };

export interface CompareOptions {
  ignore?: readonly StepFilter[];
  /** Names of the two sides in the diff text (default `a`, `b`). */
  labels?: readonly [string, string];
}

export interface FieldChange {
  /** `host.value`, `host.items[2].key`, `ok`, … */
  readonly path: string;
  readonly a: unknown;
  readonly b: unknown;
}

export interface StepDifference {
  readonly index: number;
  readonly line: number;
  readonly op: string;
  readonly text: string;
  readonly changes: readonly FieldChange[];
  /** The differences as text, one `-`/`+` pair per changed field. */
  readonly diff: string;
}

/** The fields that tell what happened (the script's own text, line and failure wording are not). */
const COMPARED = ['op', 'args', 'background', 'skipped', 'ok', 'host'] as const;

function matches(f: StepFilter, s: RecordedStep): boolean {
  if (typeof f === 'function') return f(s);
  if (f.op !== undefined && !(typeof f.op === 'string' ? f.op === s.op : f.op.test(s.op))) return false;
  if (f.line !== undefined && f.line !== s.line) return false;
  if (f.index !== undefined && f.index !== s.index) return false;
  return true;
}

function leafChanges(path: string, a: unknown, b: unknown, out: FieldChange[]): void {
  if (Object.is(a, b)) return;
  const obj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;
  if (Array.isArray(a) && Array.isArray(b)) {
    for (let i = 0; i < Math.max(a.length, b.length); i++) leafChanges(`${path}[${i}]`, a[i], b[i], out);
    return;
  }
  if (obj(a) && obj(b) && !Array.isArray(a) && !Array.isArray(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])];
    for (const k of keys) leafChanges(path ? `${path}.${k}` : k, a[k], b[k], out);
    return;
  }
  out.push({ path, a, b });
}

function render(v: unknown): string {
  return v === undefined ? '(absent)' : JSON.stringify(v);
}

/**
 * The steps whose outcome differs between two recordings of the same scenario, matched by
 * position. Compared: the operation and arguments, what the host saw, and whether the step passed.
 */
export function compareRecordings(a: Recording, b: Recording, opts: CompareOptions = {}): StepDifference[] {
  const [la, lb] = opts.labels ?? ['a', 'b'];
  const out: StepDifference[] = [];
  const ignore = opts.ignore ?? [];
  for (let i = 0; i < Math.max(a.steps.length, b.steps.length); i++) {
    const sa = a.steps[i];
    const sb = b.steps[i];
    const ref = (sa ?? sb) as RecordedStep;
    const filters = ignore.filter((f) => (sa && matches(f, sa)) || (sb && matches(f, sb)));
    if (filters.some((f) => typeof f === 'function' || !f.fields)) continue;
    const ignored = filters.flatMap((f) => (typeof f === 'function' ? [] : (f.fields ?? [])));
    const changes: FieldChange[] = [];
    if (!sa || !sb) {
      changes.push({ path: '', a: sa ? sa.text : undefined, b: sb ? sb.text : undefined });
    } else {
      for (const k of COMPARED) leafChanges(k, sa[k], sb[k], changes);
    }
    const kept = changes.filter(
      (c) => !ignored.some((p) => c.path === p || c.path.startsWith(`${p}.`) || c.path.startsWith(`${p}[`)),
    );
    if (kept.length === 0) continue;
    const head = `step ${ref.index} (line ${ref.line}): ${ref.text}`;
    const body = kept.map((c) =>
      c.path === ''
        ? `  - ${la}: ${c.a === undefined ? '(no such step)' : String(c.a)}\n  + ${lb}: ${c.b === undefined ? '(no such step)' : String(c.b)}`
        : `  - ${la}.${c.path} = ${render(c.a)}\n  + ${lb}.${c.path} = ${render(c.b)}`,
    );
    out.push({
      index: ref.index,
      line: ref.line,
      op: ref.op,
      text: ref.text,
      changes: kept,
      diff: [head, ...body].join('\n'),
    });
  }
  return out;
}

/** All differences as one text (empty when the recordings agree). */
export function formatDifferences(diffs: readonly StepDifference[]): string {
  return diffs.map((d) => d.diff).join('\n\n');
}
