/**
 * The status socket: a root-only (0600) unix stream socket; a client connects and reads one JSON
 * document (the supervisor's Snapshot) and end-of-file. `hv-supervisor status` reads every
 * supervisor's socket in /run/hyperv-daemons-ts (or those named) and prints a table or JSON.
 */
import { chmodSync, lstatSync, mkdirSync, readdirSync, unlinkSync } from 'node:fs';
import { type Server, connect, createServer } from 'node:net';
import { dirname, join } from 'node:path';
import type { Logger } from '../daemons/common/log.js';
import type { Snapshot } from './supervisor.js';

export const STATUS_DIR = '/run/hyperv-daemons-ts';
export const statusSocketPath = (kind: string): string => join(STATUS_DIR, `supervisor-${kind}.sock`);

function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Listen on `path` (0600; a stale socket is replaced, a live one is an error). */
export async function startStatusServer(
  path: string,
  snapshot: () => Snapshot,
  logger: Logger,
): Promise<Server> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  try {
    if (lstatSync(path).isSocket()) {
      if (await canConnect(path)) throw new Error(`${path}: another supervisor is listening there`);
      unlinkSync(path);
    }
  } catch (e) {
    if ((e as { code?: string }).code !== 'ENOENT') throw e;
  }
  const server = createServer((sock) => {
    sock.on('error', () => {});
    sock.end(`${JSON.stringify(snapshot())}\n`);
  });
  const old = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
  } finally {
    process.umask(old);
  }
  chmodSync(path, 0o600);
  server.on('error', (e) => logger.error({ err: String(e) }, `status socket: ${e.message}`));
  return server;
}

/** Read one supervisor's snapshot. */
export function queryStatus(path: string, timeoutMs = 2000): Promise<Snapshot> {
  return new Promise((resolve, reject) => {
    let data = '';
    const s = connect(path);
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`${path}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    s.on('data', (d: Buffer) => (data += d.toString()));
    s.on('error', (e) => {
      clearTimeout(t);
      reject(new Error(`${path}: ${e.message}`));
    });
    s.on('end', () => {
      clearTimeout(t);
      try {
        resolve(JSON.parse(data) as Snapshot);
      } catch (e) {
        reject(new Error(`${path}: not a status document (${(e as Error).message})`));
      }
    });
  });
}

/** The supervisors' sockets in `dir`. */
export function findStatusSockets(dir = STATUS_DIR): string[] {
  try {
    return readdirSync(dir)
      .filter((n) => /^supervisor-.*\.sock$/.test(n))
      .sort()
      .map((n) => join(dir, n));
  } catch {
    return [];
  }
}

export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, '0')}h`;
}

function ago(at: number, now: number): string {
  return `${formatDuration(now - at)} ago`;
}

/** The human table, one row per supervisor. */
export function formatStatusTable(rows: readonly (Snapshot | { socket: string; error: string })[]): string {
  const header = ['DAEMON', 'STATE', 'PID', 'UPTIME', 'RESTARTS', 'LAST EXIT', 'LAST HOST REQUEST'];
  const table = rows.map((r) => {
    if ('error' in r) return [r.socket, 'unreachable', '-', '-', '-', r.error, '-'];
    const state = r.crashLoop
      ? `${r.state} (crash loop)`
      : r.state === 'running' && !r.ready
        ? 'starting'
        : r.state;
    return [
      r.kind === 'other' ? (r.command[0] ?? 'other') : r.kind,
      state,
      r.pid === null ? '-' : String(r.pid),
      r.startedAt === null ? '-' : formatDuration(r.now - r.startedAt),
      String(r.restarts),
      r.lastExit ? `${r.lastExit.reason}, ${ago(r.lastExit.at, r.now)}` : '-',
      r.lastHostRequest
        ? `${r.lastHostRequest.operation}${r.lastHostRequest.status ? ` ${r.lastHostRequest.status}` : ''}, ${ago(r.lastHostRequest.at, r.now)}`
        : '-',
    ];
  });
  const all = [header, ...table];
  const widths = header.map((_, i) => Math.max(...all.map((row) => (row[i] ?? '').length)));
  return (
    all
      .map((row) =>
        row
          .map((c, i) => c.padEnd(widths[i] ?? 0))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}
