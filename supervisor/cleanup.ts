/**
 * After-death actions: what the supervisor does, before a restart, about what a dead daemon left
 * behind. They are keyed by daemon kind (`afterDeathActions(kind, config)`), so a new daemon kind
 * plugs in its own. The work that could block on a frozen filesystem (FITHAW, unlink) runs in a
 * killable child (after-death-child.ts) with a deadline; the supervisor itself only reads and
 * removes small files in /run (a tmpfs VSS never freezes).
 *
 * VSS marker (default /run/hyperv-daemons-ts/vss-frozen.json), either format:
 *   {"version":1,"frozen":["/mnt/a","/"]}                                   (the documented one)
 *   {"format":"hv-vss-frozen","version":1,"pid":N,"filesystems":[{"mountPoint":"/mnt/a",…}],"hooks":[…]}
 * Mount points are thawed in the reverse of the listed (freeze) order; EINVAL means "not frozen",
 * which is fine. The marker is removed when every mount point is thawed or not frozen and it names
 * no hooks; a marker naming hooks is left for the restarted daemon, which runs their `thaw`.
 *
 * FCOPY state file (default /run/hyperv-daemons-ts/fcopy-current.json):
 *   {"version":1,"temp":"/abs/dir/.name.hv-fcopy-….tmp"}
 * and, when configured, the daemon's journal directory (entries `<id>.json` with `dir`, `tmp`,
 * `pid`): an entry of the dead pid has its temporary and itself removed. Only a regular file whose
 * name has the temporary's shape (`.*.hv-fcopy-*.tmp`) is ever removed.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, isAbsolute, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Logger } from '../daemons/common/log.js';
import type { DaemonKind } from './supervisor.js';

export const DEFAULT_VSS_MARKER = '/run/hyperv-daemons-ts/vss-frozen.json';
export const DEFAULT_FCOPY_STATE = '/run/hyperv-daemons-ts/fcopy-current.json';

export interface CleanupConfig {
  vssMarker: string;
  fcopyState: string;
  /** The FCOPY daemon's journal directory, if it keeps one. */
  fcopyJournal?: string | undefined;
  /** The deadline of the killable helper (default 1000 ms). */
  deadlineMs?: number;
  /** The helper's argv prefix (tests and packaging may override). */
  helper?: readonly string[];
}

export interface AfterDeathContext {
  /** The pid of the daemon that died. */
  pid: number;
  logger: Logger;
}

export interface AfterDeathAction {
  readonly name: string;
  run(ctx: AfterDeathContext): Promise<void>;
  /** Whether the daemon `pid` is inside a legitimately long operation (hang checks pause). */
  busy?(pid: number): boolean;
}

// ---------------------------------------------------------------------------------------------
// The killable helper

export interface HelperResult {
  item: string;
  result: string;
  error?: string;
}

/** argv to run after-death-child from source (through tsx) or from dist (plain node). */
export function defaultHelper(): string[] {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.ts')) {
    const require = createRequire(import.meta.url);
    const tsx = join(require.resolve('tsx/package.json'), '..', 'dist', 'loader.mjs');
    return [
      process.execPath,
      '--import',
      pathToFileURL(tsx).href,
      fileURLToPath(new URL('./after-death-child.ts', import.meta.url)),
    ];
  }
  const sibling = fileURLToPath(new URL('./after-death-child.js', import.meta.url));
  if (existsSync(sibling)) return [process.execPath, sibling];
  // A bundle (the packaged hv-supervisor.mjs): no helper file beside it, so the supervisor's own
  // file runs the helper's work when given `__after-death` (supervisor/main.ts).
  return [process.execPath, here, AFTER_DEATH_ARG];
}

/** The hidden first argument with which hv-supervisor acts as its own after-death helper. */
export const AFTER_DEATH_ARG = '__after-death';

/**
 * Run the helper on `items`; SIGKILL it at the deadline. Items it did not report are `timeout`.
 * Never rejects.
 */
export function runHelper(
  op: 'thaw' | 'unlink',
  items: readonly string[],
  opts: { deadlineMs?: number; helper?: readonly string[] } = {},
): Promise<HelperResult[]> {
  const helper = opts.helper ?? defaultHelper();
  const deadlineMs = opts.deadlineMs ?? 1000;
  return new Promise((resolve) => {
    const results: HelperResult[] = [];
    let out = '';
    let settled = false;
    const finish = (why?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      for (const line of out.split('\n')) {
        if (!line.startsWith('{')) continue;
        try {
          results.push(JSON.parse(line) as HelperResult);
        } catch {
          /* a torn line from a killed helper */
        }
      }
      const seen = new Set(results.map((r) => r.item));
      for (const item of items)
        if (!seen.has(item)) results.push({ item, result: 'timeout', ...(why ? { error: why } : {}) });
      resolve(results);
    };
    const child = spawn(helper[0]!, [...helper.slice(1), op, ...items], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish(`no answer within ${deadlineMs} ms`);
    }, deadlineMs);
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.resume();
    child.on('error', (e) => finish(e.message));
    child.on('close', () => finish('the helper exited'));
  });
}

// ---------------------------------------------------------------------------------------------
// VSS

export interface VssMarker {
  /** Mount points in freeze order. */
  mounts: string[];
  hooks: string[];
  pid?: number;
}

/** Parse either marker format; a message when it is neither. */
export function parseVssMarker(text: string): VssMarker | string {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return `not JSON: ${(e as Error).message}`;
  }
  if (typeof v !== 'object' || v === null) return 'not a JSON object';
  const m = v as Record<string, unknown>;
  if (m.version !== 1) return `unknown version ${String(m.version)}`;
  let mounts: unknown[];
  if (Array.isArray(m.frozen)) mounts = m.frozen as unknown[];
  else if (Array.isArray(m.filesystems))
    mounts = (m.filesystems as unknown[]).map((f) =>
      typeof f === 'object' && f !== null ? (f as Record<string, unknown>).mountPoint : undefined,
    );
  else return 'neither "frozen" nor "filesystems" is a list';
  if (!mounts.every((p): p is string => typeof p === 'string' && isAbsolute(p)))
    return 'a mount point that is not an absolute path';
  const hooks = Array.isArray(m.hooks) ? (m.hooks as unknown[]).filter((h) => typeof h === 'string') : [];
  return {
    mounts: mounts as string[],
    hooks: hooks as string[],
    ...(typeof m.pid === 'number' ? { pid: m.pid } : {}),
  };
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as { code?: string }).code === 'ENOENT') return undefined;
    throw e;
  }
}

export function vssThawAction(cfg: CleanupConfig): AfterDeathAction {
  return {
    name: 'vss-thaw',
    busy(pid) {
      try {
        const text = readText(cfg.vssMarker);
        if (text === undefined) return false;
        const m = parseVssMarker(text);
        return typeof m === 'string' || m.pid === undefined || m.pid === pid;
      } catch {
        return false;
      }
    },
    async run({ logger }) {
      let text: string | undefined;
      try {
        text = readText(cfg.vssMarker);
      } catch (e) {
        logger.error({ marker: cfg.vssMarker, err: String(e) }, `cannot read the VSS marker: ${e}`);
        return;
      }
      if (text === undefined) return;
      const marker = parseVssMarker(text);
      if (typeof marker === 'string') {
        logger.error(
          { marker: cfg.vssMarker, error: marker },
          `the VSS marker is unreadable (${marker}): nothing thawed; left for the daemon`,
        );
        return;
      }
      const order = [...marker.mounts].reverse();
      const started = Date.now();
      const results = await runHelper('thaw', order, cfg);
      const ms = Date.now() - started;
      for (const r of results) {
        if (r.result === 'thawed')
          logger.warn({ mount: r.item, ms }, `thawed ${r.item}, left frozen by the dead daemon`);
        else if (r.result === 'not-frozen') logger.info({ mount: r.item }, `${r.item} was not frozen`);
        else
          logger.error(
            { mount: r.item, result: r.result, error: r.error },
            `could not thaw ${r.item}: ${r.error ?? r.result}`,
          );
      }
      const allOk = results.every((r) => r.result === 'thawed' || r.result === 'not-frozen');
      if (allOk && marker.hooks.length === 0) {
        rmSync(cfg.vssMarker, { force: true });
        logger.info({ marker: cfg.vssMarker }, 'removed the VSS marker');
      } else if (allOk) {
        logger.info(
          { marker: cfg.vssMarker, hooks: marker.hooks },
          'the VSS marker names hooks: left for the daemon to run their thaw',
        );
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// FCOPY

const TEMP_RE = /^\..+\.hv-fcopy-[^/]*\.tmp$/s;

/** Whether `path` may be removed as an FCOPY temporary: absolute, with the temporary's name. */
export function isFcopyTemp(path: string): boolean {
  return isAbsolute(path) && TEMP_RE.test(basename(path));
}

export function parseFcopyState(text: string): { temp: string } | string {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return `not JSON: ${(e as Error).message}`;
  }
  const m = v as Record<string, unknown> | null;
  if (typeof m !== 'object' || m === null) return 'not a JSON object';
  if (m.version !== 1) return `unknown version ${String(m.version)}`;
  if (typeof m.temp !== 'string') return '"temp" is not a string';
  if (!isFcopyTemp(m.temp)) return `"${m.temp}" is not an FCOPY temporary file's path`;
  return { temp: m.temp };
}

export function fcopyTempAction(cfg: CleanupConfig): AfterDeathAction {
  return {
    name: 'fcopy-temp',
    async run({ pid, logger }) {
      const toRemove: string[] = [];
      let stateOk = false;
      try {
        const text = readText(cfg.fcopyState);
        if (text !== undefined) {
          const st = parseFcopyState(text);
          if (typeof st === 'string')
            logger.error({ state: cfg.fcopyState, error: st }, `the FCOPY state file is unusable: ${st}`);
          else toRemove.push(st.temp);
          stateOk = true;
        }
      } catch (e) {
        logger.error({ state: cfg.fcopyState, err: String(e) }, `cannot read the FCOPY state file: ${e}`);
      }
      if (cfg.fcopyJournal) {
        let names: string[] = [];
        try {
          names = readdirSync(cfg.fcopyJournal).filter((n) => n.endsWith('.json'));
        } catch (e) {
          if ((e as { code?: string }).code !== 'ENOENT')
            logger.error({ journal: cfg.fcopyJournal, err: String(e) }, `cannot read the FCOPY journal`);
        }
        for (const n of names) {
          const entryPath = join(cfg.fcopyJournal, n);
          try {
            const e = JSON.parse(readFileSync(entryPath, 'utf8')) as Record<string, unknown>;
            if (e.pid !== pid || typeof e.dir !== 'string' || typeof e.tmp !== 'string') continue;
            const temp = join(e.dir, e.tmp);
            if (!isFcopyTemp(temp) || basename(temp) !== e.tmp) continue;
            toRemove.push(temp, entryPath);
          } catch {
            /* a half-written entry: the daemon's own sweep decides */
          }
        }
      }
      if (toRemove.length > 0) {
        const results = await runHelper('unlink', toRemove, cfg);
        for (const r of results) {
          if (r.result === 'removed')
            logger.warn({ path: r.item }, `removed ${r.item}, left by the dead FCOPY daemon`);
          else if (r.result !== 'absent')
            logger.error(
              { path: r.item, result: r.result, error: r.error },
              `could not remove ${r.item}: ${r.error ?? r.result}`,
            );
        }
      }
      if (stateOk) rmSync(cfg.fcopyState, { force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The registry

export type ActionFactory = (cfg: CleanupConfig) => AfterDeathAction;

/** The after-death actions by daemon kind. Add a kind's factory here. */
export const AFTER_DEATH: Record<DaemonKind, readonly ActionFactory[]> = {
  kvp: [],
  vss: [vssThawAction],
  fcopy: [fcopyTempAction],
  other: [],
};

export function afterDeathActions(kind: DaemonKind, cfg: CleanupConfig): AfterDeathAction[] {
  return AFTER_DEATH[kind].map((f) => f(cfg));
}

/** Run the actions in order; an action that throws is logged and the next one runs. */
export async function runAfterDeath(
  actions: readonly AfterDeathAction[],
  ctx: AfterDeathContext,
): Promise<void> {
  for (const a of actions) {
    try {
      await a.run(ctx);
    } catch (e) {
      ctx.logger.error({ action: a.name, err: String(e) }, `after-death action ${a.name} failed: ${e}`);
    }
  }
}
