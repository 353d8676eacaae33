/**
 * The effects behind the KVP daemon's host-facing information (auto pool, GET_IP_INFO,
 * SET_IP_INFO): files, process spawning, interface listing, uname, FQDN resolution. The logic in
 * auto-pool.ts, ip-info.ts and set-ip.ts only sees the `KvpHostDeps` interface; `defaultDeps()`
 * builds the real one, tests pass their own.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, readdir, rename, rm } from 'node:fs/promises';
import { hostname, machine, networkInterfaces, release, type } from 'node:os';
import { basename, dirname, join } from 'node:path';
import type { Logger } from '../common/log.js';

// ---------------------------------------------------------------------------------------------
// Interfaces

export interface RunOptions {
  /** Hard limit: the whole process group is sent SIGTERM (then SIGKILL) and the call resolves. */
  readonly timeoutMs: number;
  readonly env?: NodeJS.ProcessEnv;
}

export interface RunResult {
  readonly stdout: string;
  readonly stderr?: string;
  /** Exit code; null when the process was killed, timed out or could not be started. */
  readonly code: number | null;
  readonly signal?: string | null;
  readonly timedOut?: boolean;
  /** Why the process could not be started (ENOENT, EACCES, …). */
  readonly error?: string;
}

/** Run `cmd` with `args` (an argv array, never a shell line). Never rejects. */
export type RunFn = (cmd: string, args: readonly string[], opts: RunOptions) => Promise<RunResult>;

export interface FileToWrite {
  readonly path: string;
  readonly data: string;
  readonly mode: number;
}

export interface KvpFs {
  readFile(path: string): Promise<string>;
  readdir(path: string): Promise<string[]>;
  /** mkdir -p with mode 0755. */
  mkdir(path: string): Promise<void>;
  /**
   * Write every file to a temp file beside it and fsync it; only when all are written, rename them
   * into place in order. A failure before the renames leaves every target untouched and no temp
   * file behind.
   */
  writeFilesAtomic(files: readonly FileToWrite[]): Promise<void>;
}

export interface NetAddress {
  readonly family: 4 | 6;
  /** inet_ntop text, no zone id. */
  readonly address: string;
  /** Dotted quad for IPv4, address form (`ffff:ffff:ffff:ffff::`) for IPv6. */
  readonly netmask: string;
  /** IFF_LOOPBACK. */
  readonly internal: boolean;
}

export interface NetInterface {
  readonly name: string;
  readonly addresses: readonly NetAddress[];
}

export interface Uname {
  readonly sysname: string;
  readonly release: string;
  readonly machine: string;
}

/** Everything auto-pool.ts, ip-info.ts and set-ip.ts need. */
export interface KvpHostDeps {
  /** Prefix of /sys/class/net and /etc/os-release ('/' on a real system, a temp dir in tests). */
  readonly sysRoot: string;
  /** Directory of hv_get_dns_info, hv_get_dhcp_info, hv_set_ifconfig. */
  readonly scriptsDir: string;
  /** Where SET_IP_INFO writes ifcfg-<if> and <if>.nmconnection (/var/lib/hyperv). */
  readonly configDir: string;
  readonly fs: KvpFs;
  readonly run: RunFn;
  /** Interfaces with their IPv4/IPv6 addresses, in kernel (ifindex) order. */
  interfaces(): Promise<NetInterface[]>;
  uname(): Uname;
  /** The FullyQualifiedDomainName value (a canonical name or upstream's `getaddrinfo failed: …` text). */
  fqdn(): Promise<string>;
  /** The kernel's registration version ("3.1"); undefined before the handshake reply. */
  integrationServicesVersion(): string | undefined;
  readonly logger: Logger;
  /** Limit for each GET_IP_INFO helper (`ip`, hv_get_dns_info, hv_get_dhcp_info). */
  readonly helperTimeoutMs: number;
  /** Limit for hv_set_ifconfig. */
  readonly scriptTimeoutMs: number;
  /** The iproute2 command (default `ip`, looked up in PATH). */
  readonly ipCommand: string;
}

// ---------------------------------------------------------------------------------------------
// Process spawning

const MAX_OUTPUT = 256 * 1024;
const KILL_GRACE_MS = 1000;
/** After the process exited, how long to wait for grandchildren still holding stdout. */
const CLOSE_GRACE_MS = 200;

/**
 * spawn() with an argv array in its own process group (so a timeout kills the helper's children
 * too), bounded output, stdin closed. Resolves once the process has exited (or been killed).
 */
export const runCommand: RunFn = (cmd, args, opts) =>
  new Promise((resolve) => {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outLen = 0;
    let errLen = 0;
    let done = false;
    let exitCode: number | null = null;
    let exitSignal: string | null = null;
    let closeTimer: NodeJS.Timeout | undefined;
    let child: ReturnType<typeof spawn>;
    const finish = (extra: Partial<RunResult> = {}): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(closeTimer);
      child.stdout?.destroy();
      child.stderr?.destroy();
      resolve({
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        code: exitCode,
        signal: exitSignal,
        ...extra,
      });
    };
    const killGroup = (signal: NodeJS.Signals): void => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, signal);
      } catch {
        try {
          child.kill(signal);
        } catch {
          /* already gone */
        }
      }
    };
    try {
      child = spawn(cmd, [...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
        env: opts.env ?? process.env,
      });
    } catch (e) {
      resolve({ stdout: '', code: null, error: e instanceof Error ? e.message : String(e) });
      return;
    }
    const timer = setTimeout(() => {
      killGroup('SIGTERM');
      setTimeout(() => killGroup('SIGKILL'), KILL_GRACE_MS).unref();
      finish({ code: null, timedOut: true });
    }, opts.timeoutMs);
    child.stdout?.on('data', (d: Buffer) => {
      if (outLen < MAX_OUTPUT) out.push(d);
      outLen += d.length;
    });
    child.stderr?.on('data', (d: Buffer) => {
      if (errLen < MAX_OUTPUT) err.push(d);
      errLen += d.length;
    });
    child.on('error', (e: NodeJS.ErrnoException) => finish({ code: null, error: e.code ?? e.message }));
    child.on('exit', (code, signal) => {
      exitCode = code;
      exitSignal = signal;
      closeTimer = setTimeout(() => finish(), CLOSE_GRACE_MS);
    });
    child.on('close', () => finish());
  });

// ---------------------------------------------------------------------------------------------
// Files

async function fsyncDir(dir: string): Promise<void> {
  try {
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    /* best effort: some filesystems refuse fsync on a directory */
  }
}

export async function writeFilesAtomic(files: readonly FileToWrite[]): Promise<void> {
  const temps: string[] = [];
  try {
    for (const f of files) {
      const tmp = join(
        dirname(f.path),
        `.${basename(f.path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`,
      );
      temps.push(tmp);
      const fh = await open(tmp, 'wx', f.mode);
      try {
        await fh.writeFile(f.data, 'utf8');
        await fh.chmod(f.mode); // exact mode, whatever the umask
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
  } catch (e) {
    await Promise.all(temps.map((t) => rm(t, { force: true })));
    throw e;
  }
  for (let i = 0; i < files.length; i++) {
    try {
      await rename(temps[i] ?? '', files[i]?.path ?? '');
    } catch (e) {
      await Promise.all(temps.slice(i).map((t) => rm(t, { force: true })));
      throw e;
    }
  }
  for (const d of new Set(files.map((f) => dirname(f.path)))) await fsyncDir(d);
}

export const nodeFs: KvpFs = {
  readFile: (path) => readFile(path, 'utf8'),
  readdir: (path) => readdir(path),
  mkdir: async (path) => {
    await mkdir(path, { recursive: true, mode: 0o755 });
  },
  writeFilesAtomic,
};

// ---------------------------------------------------------------------------------------------
// Interfaces, uname

/**
 * os.networkInterfaces() (libuv: getifaddrs() without AF_PACKET entries and without interfaces that
 * are not both UP and RUNNING), ordered by /sys/class/net/<if>/ifindex so that the order is the
 * kernel's, as getifaddrs() walks it in the C daemon.
 */
export async function listInterfaces(sysRoot: string): Promise<NetInterface[]> {
  const raw = networkInterfaces();
  const list: { name: string; index: number; addresses: NetAddress[] }[] = [];
  for (const [name, infos] of Object.entries(raw)) {
    const addresses: NetAddress[] = [];
    for (const info of infos ?? []) {
      // Node 18.0–18.3 reported the family as a number.
      const fam = info.family as unknown;
      const family = fam === 'IPv4' || fam === 4 ? 4 : fam === 'IPv6' || fam === 6 ? 6 : undefined;
      if (family === undefined) continue;
      addresses.push({ family, address: info.address, netmask: info.netmask, internal: info.internal });
    }
    let index = Number.MAX_SAFE_INTEGER;
    try {
      const n = parseInt(await readFile(join(sysRoot, 'sys/class/net', name, 'ifindex'), 'utf8'), 10);
      if (Number.isFinite(n)) index = n;
    } catch {
      /* keep Node's order for this one */
    }
    list.push({ name, index, addresses });
  }
  // Array.prototype.sort is stable: interfaces without an ifindex keep Node's relative order.
  list.sort((a, b) => a.index - b.index);
  return list.map(({ name, addresses }) => ({ name, addresses }));
}

export function nodeUname(): Uname {
  return { sysname: type(), release: release(), machine: machine() };
}

// ---------------------------------------------------------------------------------------------
// FQDN

/** glibc EAI_NONAME (-2) as the C daemon prints it. */
export const FQDN_NONAME = 'getaddrinfo failed: 0xfffffffe Name or service not known';
/** glibc EAI_AGAIN (-3) as the C daemon prints it. */
export const FQDN_AGAIN = 'getaddrinfo failed: 0xfffffffd Temporary failure in name resolution';

/**
 * The canonical name of `host` as getaddrinfo(host, AF_INET, AI_CANONNAME) gives it, via
 * `getent ahostsv4 -- <host>` (glibc's getent prints the canonical name as the third column of the
 * first line). A child process, not an in-process getaddrinfo, so that a slow resolver is killed at
 * `timeoutMs` and never pins a libuv thread-pool thread (which would also hold up process exit).
 *
 * Failure texts: getent exits 2 for any getaddrinfo failure without saying which, so exit 2 gives
 * upstream's EAI_NONAME text (the usual case: name not found); a timeout gives the EAI_AGAIN text
 * (what getaddrinfo itself returns when the resolver gives up). If getent is missing or does not know
 * the ahostsv4 database (non-glibc systems), the plain host name is returned and a warning logged.
 */
export async function canonicalName(
  host: string,
  run: RunFn,
  timeoutMs: number,
  logger: Logger,
): Promise<string> {
  const r = await run('getent', ['ahostsv4', '--', host], { timeoutMs });
  if (r.timedOut) {
    logger.warn({ host, timeoutMs }, 'FQDN: getent ahostsv4 timed out');
    return FQDN_AGAIN;
  }
  if (r.code === 0) {
    const first = r.stdout.split('\n')[0] ?? '';
    const canon = first.trim().split(/\s+/)[2];
    return canon !== undefined && canon !== '' ? canon : host;
  }
  if (r.code === 2) return FQDN_NONAME;
  logger.warn(
    { host, code: r.code, error: r.error },
    'FQDN: getent ahostsv4 unusable; reporting the host name',
  );
  return host;
}

export interface FqdnCacheOptions {
  readonly hostname: () => string;
  readonly resolve: (host: string) => Promise<string>;
  /** Age after which a value is refreshed (default 30 s). */
  readonly ttlMs?: number;
  readonly now?: () => number;
}

/**
 * The FQDN as a cached, current value: upstream computes it once at startup; we key the cache on
 * the current host name (a rename shows at the next request) and refresh it after `ttlMs`. A stale
 * value for the same host name is returned at once while the refresh runs in the background
 * (stale-while-revalidate), so only the very first lookup for a host name waits for the resolver
 * (bounded by the resolver's own timeout). One lookup at a time.
 */
export function cachedFqdn(opts: FqdnCacheOptions): () => Promise<string> {
  const ttl = opts.ttlMs ?? 30_000;
  const now = opts.now ?? Date.now;
  let cache: { host: string; value: string; at: number } | undefined;
  let inflight: { host: string; promise: Promise<string> } | undefined;
  const refresh = (host: string): Promise<string> => {
    if (inflight?.host === host) return inflight.promise;
    const promise = opts.resolve(host).then(
      (value) => {
        cache = { host, value, at: now() };
        if (inflight?.promise === promise) inflight = undefined;
        return value;
      },
      () => {
        if (inflight?.promise === promise) inflight = undefined;
        return host;
      },
    );
    inflight = { host, promise };
    return promise;
  };
  return async () => {
    const host = opts.hostname();
    if (cache?.host === host) {
      if (now() - cache.at >= ttl) void refresh(host);
      return cache.value;
    }
    return refresh(host);
  };
}

// ---------------------------------------------------------------------------------------------
// The real deps

export interface DefaultDepsOptions {
  /** Default '/'. */
  readonly sysRoot?: string;
  /** Default /usr/libexec/hypervkvpd (upstream's KVP_SCRIPTS_PATH). */
  readonly scriptsDir: string;
  /** Default /var/lib/hyperv. */
  readonly configDir: string;
  readonly logger: Logger;
  /** The kernel's registration version, from the KVP service's handshake state. */
  readonly integrationServicesVersion?: () => string | undefined;
  readonly helperTimeoutMs?: number;
  readonly scriptTimeoutMs?: number;
  readonly fqdnTimeoutMs?: number;
  readonly fqdnTtlMs?: number;
  readonly run?: RunFn;
  readonly ipCommand?: string;
}

export const DEFAULT_HELPER_TIMEOUT_MS = 5_000;
/**
 * The kernel fails a request after 30 s and the KVP service answers by itself at 25 s
 * (REPLY_DEADLINE_MS); stop the script before, so that the reply is ours and the script is dead.
 */
export const DEFAULT_SCRIPT_TIMEOUT_MS = 20_000;
export const DEFAULT_FQDN_TIMEOUT_MS = 3_000;

export function defaultDeps(opts: DefaultDepsOptions): KvpHostDeps {
  const sysRoot = opts.sysRoot ?? '/';
  const run = opts.run ?? runCommand;
  const fqdnTimeout = opts.fqdnTimeoutMs ?? DEFAULT_FQDN_TIMEOUT_MS;
  const fqdn = cachedFqdn({
    hostname,
    resolve: (host) => canonicalName(host, run, fqdnTimeout, opts.logger),
    ...(opts.fqdnTtlMs !== undefined ? { ttlMs: opts.fqdnTtlMs } : {}),
  });
  return {
    sysRoot,
    scriptsDir: opts.scriptsDir,
    configDir: opts.configDir,
    fs: nodeFs,
    run,
    interfaces: () => listInterfaces(sysRoot),
    uname: nodeUname,
    fqdn,
    integrationServicesVersion: opts.integrationServicesVersion ?? (() => undefined),
    logger: opts.logger,
    helperTimeoutMs: opts.helperTimeoutMs ?? DEFAULT_HELPER_TIMEOUT_MS,
    scriptTimeoutMs: opts.scriptTimeoutMs ?? DEFAULT_SCRIPT_TIMEOUT_MS,
    ipCommand: opts.ipCommand ?? 'ip',
  };
}
