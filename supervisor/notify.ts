/**
 * sd_notify for Type=notify units: READY=1, STATUS=, WATCHDOG=1, STOPPING=1. Node cannot open a
 * unix datagram socket, so a message goes through libsystemd's sd_notify() (koffi, in process, the
 * sender pid is ours) or, when libsystemd cannot be loaded, through /usr/bin/systemd-notify.
 * Without NOTIFY_SOCKET every call is a no-op.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';

export interface Notifier {
  /** Whether a notify socket is configured. */
  readonly enabled: boolean;
  send(fields: Record<string, string>): void;
  /** The watchdog ping interval (half of WATCHDOG_USEC) when systemd asked for one for us. */
  readonly watchdogMs: number | undefined;
}

type SdNotify = (unsetEnvironment: number, state: string) => number;

function loadSdNotify(): SdNotify | undefined {
  try {
    const require = createRequire(import.meta.url);
    const koffi = require('koffi') as typeof import('koffi');
    const lib = koffi.load('libsystemd.so.0');
    return lib.func('int sd_notify(int, const char *)') as SdNotify;
  } catch {
    return undefined;
  }
}

export function formatNotify(fields: Record<string, string>): string {
  return Object.entries(fields)
    .map(([k, v]) => `${k}=${v.replace(/\n/g, ' ')}`)
    .join('\n');
}

export function watchdogInterval(env: NodeJS.ProcessEnv, pid = process.pid): number | undefined {
  const usec = Number(env.WATCHDOG_USEC);
  if (!Number.isFinite(usec) || usec <= 0) return undefined;
  if (env.WATCHDOG_PID && Number(env.WATCHDOG_PID) !== pid) return undefined;
  return Math.max(1, Math.floor(usec / 2000));
}

export function createNotifier(env: NodeJS.ProcessEnv = process.env, via: 'auto' | 'cli' = 'auto'): Notifier {
  const socket = env.NOTIFY_SOCKET;
  const watchdogMs = socket ? watchdogInterval(env) : undefined;
  if (!socket) return { enabled: false, send: () => {}, watchdogMs: undefined };
  const sd = via === 'auto' ? loadSdNotify() : undefined;
  if (sd) {
    return {
      enabled: true,
      watchdogMs,
      send: (fields) => {
        sd(0, formatNotify(fields));
      },
    };
  }
  // The CLI: messages are sent one after the other so that their order is kept.
  let chain: Promise<void> = Promise.resolve();
  return {
    enabled: true,
    watchdogMs,
    send: (fields) => {
      const args = Object.entries(fields).map(([k, v]) => `${k}=${v.replace(/\n/g, ' ')}`);
      chain = chain.then(
        () =>
          new Promise<void>((resolve) => {
            const c = spawn('/usr/bin/systemd-notify', args, {
              stdio: 'ignore',
              env: { ...process.env, ...env },
            });
            c.on('error', () => resolve());
            c.on('exit', () => resolve());
          }),
      );
    },
  };
}
