/**
 * Bounded exponential back-off: `initialMs` doubling to `maxMs`, reset by `reset()` (called once
 * the device is registered and serving again). Never a busy loop, never an unbounded wait.
 */
export interface BackoffOptions {
  initialMs?: number;
  maxMs?: number;
}

export class Backoff {
  private nextMs: number;
  private readonly initialMs: number;
  private readonly maxMs: number;
  /** Consecutive failures since the last reset. */
  failures = 0;

  constructor(opts: BackoffOptions = {}) {
    this.initialMs = opts.initialMs ?? 100;
    this.maxMs = opts.maxMs ?? 5_000;
    this.nextMs = this.initialMs;
  }

  /** The delay to wait now; the next one doubles, up to the cap. */
  next(): number {
    const ms = this.nextMs;
    this.failures++;
    this.nextMs = Math.min(this.maxMs, this.nextMs * 2);
    return ms;
  }

  reset(): void {
    this.failures = 0;
    this.nextMs = this.initialMs;
  }
}

/** Resolve after `ms`, or at once (false) when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve(false);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      resolve(false);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
