/**
 * Time for the kernel-shim: the drivers' timeouts (30 s, 900 s, 55 s) run on a Clock that tests
 * replace with FakeClock, and DelayedWork mirrors the kernel's delayed_work, whose cancel reports
 * whether the work was still pending (cancel_delayed_work_sync's return value decides, in the
 * drivers, who answers the host).
 */

export interface TimerHandle {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds on this clock's time line. */
  now(): number;
  /** Run `fn` once after `ms`. */
  setTimer(ms: number, fn: () => void): TimerHandle;
}

/** The wall clock. Timers are unref'd: a pending kernel timeout never keeps a process alive. */
export class RealClock implements Clock {
  now(): number {
    return performance.now();
  }

  setTimer(ms: number, fn: () => void): TimerHandle {
    const t = setTimeout(fn, ms);
    t.unref();
    return { cancel: () => clearTimeout(t) };
  }
}

interface FakeTimer {
  at: number;
  seq: number;
  fn: () => void;
  live: boolean;
}

/** A clock that only moves when a test calls advance(). */
export class FakeClock implements Clock {
  private time = 0;
  private seq = 0;
  private timers: FakeTimer[] = [];

  now(): number {
    return this.time;
  }

  setTimer(ms: number, fn: () => void): TimerHandle {
    const timer: FakeTimer = { at: this.time + Math.max(0, ms), seq: this.seq++, fn, live: true };
    this.timers.push(timer);
    return { cancel: () => void (timer.live = false) };
  }

  /** Number of timers still due to fire. */
  pending(): number {
    return this.timers.filter((t) => t.live).length;
  }

  /** Move time forward by `ms`, firing every timer that falls due, in order. */
  advance(ms: number): void {
    const end = this.time + ms;
    for (;;) {
      this.timers = this.timers.filter((t) => t.live);
      const next = this.timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!next) break;
      this.time = next.at;
      next.live = false;
      next.fn();
    }
    this.time = end;
  }
}

/** The kernel's struct delayed_work: schedule once, cancel and learn whether it was pending. */
export class DelayedWork {
  private handle: TimerHandle | undefined;

  constructor(
    private readonly clock: Clock,
    private readonly fn: () => void,
  ) {}

  get pending(): boolean {
    return this.handle !== undefined;
  }

  /** schedule_delayed_work: does nothing if already pending (as the kernel's returns false). */
  schedule(ms: number): boolean {
    if (this.handle) return false;
    this.handle = this.clock.setTimer(ms, () => {
      this.handle = undefined;
      this.fn();
    });
    return true;
  }

  /** cancel_delayed_work_sync: true if the work was pending and will now not run. */
  cancel(): boolean {
    if (!this.handle) return false;
    this.handle.cancel();
    this.handle = undefined;
    return true;
  }
}
