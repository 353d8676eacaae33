/**
 * Log lines are held in memory while filesystems are frozen and written out after the thaw.
 *
 * The daemon logs JSON lines to stdout. Under systemd that is journald's socket, and journald
 * writes /var/log/journal, on the root filesystem, which a FREEZE freezes: journald then blocks,
 * its socket fills, and a synchronous write to stdout would stop the daemon, which then never
 * sees the THAW. stdout may also be redirected to a file on a frozen filesystem. So from the
 * first FIFREEZE to the end of the thaw, every line (the daemon's and the device loop's) goes to a
 * bounded buffer; each line keeps the time it was logged. If the buffer fills, later lines are
 * counted and dropped, and the count is logged when the gate opens.
 */
import pino from 'pino';
import type { Logger, LogLevel } from '../common/log.js';

/** What a FREEZE needs from the logging: hold lines, and let them go. */
export interface LogHold {
  hold(): void;
  release(): void;
}

export interface LogSink {
  write(chunk: string): unknown;
}

export const DEFAULT_HOLD_LIMIT_BYTES = 4 * 1024 * 1024;

export class LogGate implements LogHold {
  private heldLines: string[] = [];
  private heldBytes = 0;
  private dropped = 0;
  private isHeld = false;

  constructor(
    private readonly sink: LogSink,
    private readonly limitBytes = DEFAULT_HOLD_LIMIT_BYTES,
  ) {}

  get held(): boolean {
    return this.isHeld;
  }

  /** The stream interface pino writes to. */
  write(line: string): boolean {
    if (!this.isHeld) {
      this.sink.write(line);
      return true;
    }
    // Once full, later lines are dropped too, so what is kept has no holes.
    if (this.dropped > 0 || this.heldBytes + line.length > this.limitBytes) {
      this.dropped++;
      return true;
    }
    this.heldLines.push(line);
    this.heldBytes += line.length;
    return true;
  }

  hold(): void {
    this.isHeld = true;
  }

  /** Write out what was held, then pass lines through again. */
  release(): void {
    if (!this.isHeld) return;
    this.isHeld = false;
    const lines = this.heldLines;
    const dropped = this.dropped;
    this.heldLines = [];
    this.heldBytes = 0;
    this.dropped = 0;
    if (lines.length > 0) this.sink.write(lines.join(''));
    if (dropped > 0) {
      this.sink.write(
        `${JSON.stringify({ level: 'warn', time: new Date().toISOString(), pid: process.pid, dropped, msg: `${dropped} log lines were dropped while filesystems were frozen (hold buffer full)` })}\n`,
      );
    }
  }
}

export interface GatedLoggerOptions {
  name: string;
  level?: LogLevel;
  /** Default: stdout (fd 1). */
  fd?: number;
  /** Start held (the daemon does until it knows nothing is frozen). */
  held?: boolean;
  limitBytes?: number;
}

/** A pino logger (the format of common/log.ts) writing through a new LogGate to `sink`. */
export function gatedLogger(
  sink: LogSink,
  opts: { name: string; level?: LogLevel; held?: boolean; limitBytes?: number },
): { logger: Logger; gate: LogGate } {
  const gate = new LogGate(sink, opts.limitBytes);
  if (opts.held) gate.hold();
  const logger = pino(
    {
      name: opts.name,
      level: opts.level ?? 'info',
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    gate,
  ) as unknown as Logger;
  return { logger, gate };
}

/** The daemon's logger: through a gate to a synchronous destination (stdout by default). */
export function createGatedLogger(opts: GatedLoggerOptions): { logger: Logger; gate: LogGate } {
  return gatedLogger(pino.destination({ dest: opts.fd ?? 1, sync: true }), opts);
}
