/**
 * Structured logging: pino JSON lines on stdout (journald takes them from there), never a file on a
 * filesystem VSS may freeze. `Logger` is the subset of pino the code uses, so tests can pass a
 * recording logger instead.
 */
import pino from 'pino';

export type LogFn = (obj: object | string, msg?: string) => void;

export interface Logger {
  fatal: LogFn;
  error: LogFn;
  warn: LogFn;
  info: LogFn;
  debug: LogFn;
  trace: LogFn;
  child(bindings: Record<string, unknown>): Logger;
  /** Whether lines of `level` are written (pino's); absent means every level is. */
  isLevelEnabled?(level: LogLevel): boolean;
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface LoggerOptions {
  /** The program name, e.g. `hv-kvp-ts` (the `name` field of every line). */
  name: string;
  level?: LogLevel;
  /** Write synchronously (default): a line is out before the next step, even at exit. */
  sync?: boolean;
  /** Where to write (default: stdout, fd 1). */
  fd?: number;
}

export function createLogger(opts: LoggerOptions): Logger {
  return pino(
    {
      name: opts.name,
      level: opts.level ?? 'info',
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ dest: opts.fd ?? 1, sync: opts.sync ?? true }),
  ) as unknown as Logger;
}

/** A logger that keeps its lines in memory, for tests. */
export function memoryLogger(): Logger & {
  lines: { level: string; msg: string; obj: Record<string, unknown> }[];
} {
  const lines: { level: string; msg: string; obj: Record<string, unknown> }[] = [];
  const make = (bindings: Record<string, unknown>): Logger => {
    const at =
      (level: string): LogFn =>
      (obj, msg) => {
        if (typeof obj === 'string') lines.push({ level, msg: obj, obj: { ...bindings } });
        else lines.push({ level, msg: msg ?? '', obj: { ...bindings, ...obj } });
      };
    return {
      fatal: at('fatal'),
      error: at('error'),
      warn: at('warn'),
      info: at('info'),
      debug: at('debug'),
      trace: at('trace'),
      child: (b) => make({ ...bindings, ...b }),
    };
  };
  return Object.assign(make({}), { lines });
}
