/**
 * The supervisor's state machine with a fake clock and fake children: the back-off schedule, the
 * crash loop, a clean stop, the wait for a device node, stop with a deadline, hang detection and
 * readiness.
 */
import { describe, expect, it } from 'vitest';
import { memoryLogger } from '../../daemons/common/log.js';
import {
  type Child,
  type ChildEvents,
  type Clock,
  type Probes,
  type Snapshot,
  Supervisor,
  type SupervisorOptions,
} from '../../supervisor/supervisor.js';

class FakeClock implements Clock {
  t = 0;
  private timers = new Map<number, { at: number; fn: () => void }>();
  private next = 1;
  now = () => this.t;
  setTimeout = (fn: () => void, ms: number) => {
    const id = this.next++;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  };
  clearTimeout = (h: unknown) => {
    this.timers.delete(h as number);
  };
  pending(): number {
    return this.timers.size;
  }
  /** Move time forward, firing timers in order. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    await flush();
    for (;;) {
      const due = [...this.timers.entries()]
        .filter(([, x]) => x.at <= end)
        .sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.t = due[1].at;
      due[1].fn();
      await flush();
    }
    this.t = end;
    await flush();
  }
}

const flush = async () => {
  for (let i = 0; i < 20; i++) await Promise.resolve();
};

class FakeChild implements Child {
  signals: string[] = [];
  constructor(
    readonly pid: number,
    readonly events: ChildEvents,
    readonly startedAt: number,
  ) {}
  kill(sig: NodeJS.Signals) {
    this.signals.push(sig);
  }
}

function setup(opts: Partial<SupervisorOptions> = {}, probes: Partial<Probes> = {}) {
  const clock = new FakeClock();
  const children: FakeChild[] = [];
  const logger = memoryLogger();
  const deaths: number[] = [];
  const events: { event: string; snap: Snapshot }[] = [];
  let device = true;
  let busy = false;
  const states = new Map<number, string>();
  const sup = new Supervisor(
    { kind: 'other', command: ['daemon'], ...opts },
    (_argv, ev) => {
      const c = new FakeChild(1000 + children.length, ev, clock.t);
      children.push(c);
      return c;
    },
    clock,
    {
      deviceExists: () => device,
      processState: (pid) => states.get(pid) ?? 'S',
      holdsDevice: () => false,
      ...probes,
    },
    {
      afterDeath: async (pid) => {
        deaths.push(pid);
      },
      inLongOperation: () => busy,
      changed: (snap, event) => events.push({ event, snap }),
    },
    logger,
  );
  let code: number | undefined;
  void sup.run().then((c) => (code = c));
  return {
    sup,
    clock,
    children,
    logger,
    deaths,
    events,
    states,
    last: () => children[children.length - 1]!,
    code: () => code,
    setDevice: (v: boolean) => (device = v),
    setBusy: (v: boolean) => (busy = v),
  };
}

describe('supervisor: restarts', () => {
  it('restarts after unexpected exits with 100 ms doubling to the cap, running the after-death actions first', async () => {
    const s = setup({ maxMs: 800, crashLoopCount: 100 });
    await flush();
    expect(s.children).toHaveLength(1);
    const delays: number[] = [];
    for (let i = 0; i < 6; i++) {
      const before = s.children.length;
      const exitAt = s.clock.t;
      s.last().events.exit(1, null);
      await flush();
      expect(s.deaths.at(-1)).toBe(s.children[before - 1]!.pid);
      // step 1 ms at a time until the next child starts
      while (s.children.length === before) await s.clock.advance(1);
      delays.push(s.clock.t - exitAt);
    }
    expect(delays).toEqual([100, 200, 400, 800, 800, 800]);
    expect(s.sup.snapshot().restarts).toBe(6);
    expect(s.sup.snapshot().lastExit?.reason).toBe('exited with status 1');
  });

  it('resets the back-off after a stable run', async () => {
    const s = setup({ stableMs: 10_000, crashLoopCount: 100 });
    await flush();
    for (let i = 0; i < 3; i++) {
      s.last().events.exit(null, 'SIGKILL');
      await s.clock.advance(1000);
    }
    expect(s.children).toHaveLength(4);
    await s.clock.advance(10_000); // stable now
    s.last().events.exit(1, null);
    await s.clock.advance(99);
    expect(s.children).toHaveLength(4);
    await s.clock.advance(1);
    expect(s.children).toHaveLength(5);
  });

  it('detects a crash loop, says so, and keeps trying slowly', async () => {
    const s = setup({ crashLoopCount: 5, crashLoopWindowMs: 60_000, crashLoopDelayMs: 30_000, maxMs: 5000 });
    await flush();
    for (let i = 0; i < 4; i++) {
      s.last().events.exit(2, null);
      await s.clock.advance(5000);
    }
    expect(s.sup.snapshot().crashLoop).toBe(false);
    s.last().events.exit(2, null);
    await flush();
    expect(s.sup.snapshot().crashLoop).toBe(true);
    expect(s.sup.snapshot().state).toBe('backoff');
    expect(
      s.logger.lines.some((l) => l.level === 'error' && /crash loop: 5 unexpected exits/.test(l.msg)),
    ).toBe(true);
    const n = s.children.length;
    await s.clock.advance(29_999);
    expect(s.children).toHaveLength(n);
    await s.clock.advance(1);
    expect(s.children).toHaveLength(n + 1); // still trying
    expect(s.code()).toBeUndefined();
  });

  it('does not restart after a clean stop (exit 0), and finishes with 0', async () => {
    const s = setup();
    await flush();
    s.last().events.exit(0, null);
    await s.clock.advance(60_000);
    expect(s.children).toHaveLength(1);
    expect(s.deaths).toEqual([1000]);
    expect(s.code()).toBe(0);
  });

  it('does not restart after a usage error (64), and finishes with it', async () => {
    const s = setup();
    await flush();
    s.last().events.exit(64, null);
    await s.clock.advance(60_000);
    expect(s.children).toHaveLength(1);
    expect(s.code()).toBe(64);
  });
});

describe('supervisor: the device node', () => {
  it('waits without spinning while the node is absent, and starts once it appears', async () => {
    const s = setup({ device: '/dev/vmbus/hv_kvp', devicePollMs: 500 });
    await flush();
    s.setDevice(false);
    s.last().events.exit(1, null); // the channel was rescinded
    await s.clock.advance(10_000);
    expect(s.children).toHaveLength(1);
    expect(s.sup.snapshot().state).toBe('waiting-device');
    expect(s.clock.pending()).toBe(1); // one poll timer, nothing else
    expect(s.logger.lines.filter((l) => /waiting for/.test(l.msg))).toHaveLength(1);
    s.setDevice(true);
    await s.clock.advance(500);
    expect(s.children).toHaveLength(2);
    expect(s.sup.snapshot().state).toBe('running');
  });

  it('does not start at all before the node exists', async () => {
    const s = setup({ device: '/dev/x' });
    s.setDevice(false);
    await flush();
    // the first launch ran synchronously in run(): device was present; check a fresh one instead
    const t = setup({ device: '/dev/x' }, { deviceExists: () => false });
    await t.clock.advance(5000);
    expect(t.children).toHaveLength(0);
    expect(t.sup.snapshot().state).toBe('waiting-device');
    t.sup.stop();
    await flush();
    expect(t.code()).toBe(0);
    s.sup.stop();
  });
});

describe('supervisor: stop', () => {
  it('SIGTERM to the child, SIGKILL at the deadline, then 0', async () => {
    const s = setup({ stopTimeoutMs: 3000 });
    await flush();
    s.sup.stop('received SIGTERM');
    expect(s.last().signals).toEqual(['SIGTERM']);
    expect(s.events.some((e) => e.event === 'stopping')).toBe(true);
    await s.clock.advance(2999);
    expect(s.last().signals).toEqual(['SIGTERM']);
    await s.clock.advance(1);
    expect(s.last().signals).toEqual(['SIGTERM', 'SIGKILL']);
    s.last().events.exit(null, 'SIGKILL');
    await flush();
    expect(s.code()).toBe(0);
    expect(s.children).toHaveLength(1);
  });

  it('a stop during the back-off finishes at once, without a restart', async () => {
    const s = setup();
    await flush();
    s.last().events.exit(1, null);
    await flush();
    s.sup.stop();
    await s.clock.advance(10_000);
    expect(s.children).toHaveLength(1);
    expect(s.code()).toBe(0);
  });
});

describe('supervisor: hangs and readiness', () => {
  it('kills a stopped (state T) daemon after the liveness timeout, and restarts it', async () => {
    const s = setup({ livenessTimeoutMs: 2000, probeIntervalMs: 250 });
    await flush();
    s.states.set(1000, 'T');
    await s.clock.advance(2000);
    expect(s.children[0]!.signals).toEqual([]);
    await s.clock.advance(250);
    expect(s.children[0]!.signals).toEqual(['SIGKILL']);
    s.children[0]!.events.exit(null, 'SIGKILL');
    await s.clock.advance(100);
    expect(s.children).toHaveLength(2);
    expect(s.sup.snapshot().lastExit?.reason).toMatch(/^hung: stopped \(state T\) .*killed by SIGKILL/);
  });

  it('does not kill a daemon in state D while it is inside a long operation (a freeze)', async () => {
    const s = setup({ livenessTimeoutMs: 1000 });
    await flush();
    s.setBusy(true);
    s.states.set(1000, 'D');
    await s.clock.advance(10_000);
    expect(s.children[0]!.signals).toEqual([]);
    s.setBusy(false);
    await s.clock.advance(1500);
    expect(s.children[0]!.signals).toEqual(['SIGKILL']);
  });

  it('is ready on the "registered with the kernel" line; READY only once, STATUS on changes', async () => {
    const s = setup();
    await flush();
    expect(s.sup.snapshot().ready).toBe(false);
    s.last().events.line('{"level":"info","msg":"something else"}');
    expect(s.sup.snapshot().ready).toBe(false);
    s.last().events.line(
      '{"level":"info","msg":"registered with the kernel (KVP version 5)","operation":"SET","status":"HV_S_OK"}',
    );
    expect(s.sup.snapshot().ready).toBe(true);
    expect(s.sup.snapshot().lastHostRequest).toMatchObject({ operation: 'SET', status: 'HV_S_OK' });
    s.last().events.exit(1, null);
    await s.clock.advance(100);
    s.last().events.line('{"msg":"registered with the kernel (KVP version 5)"}');
    expect(s.events.filter((e) => e.event === 'ready')).toHaveLength(1);
  });

  it('is ready when the child holds the device open (upstream daemons log to syslog only)', async () => {
    let holds = false;
    const s = setup({ device: '/dev/vmbus/hv_kvp' }, { holdsDevice: () => holds });
    await s.clock.advance(1000);
    expect(s.sup.snapshot().ready).toBe(false);
    holds = true;
    await s.clock.advance(250);
    expect(s.sup.snapshot().ready).toBe(true);
  });
});
