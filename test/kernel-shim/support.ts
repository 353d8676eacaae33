import { FakeClock } from '../../kernel-shim/clock.js';
import type { ServiceName } from '../../kernel-shim/device.js';
import type { DriverEvent } from '../../kernel-shim/drivers/util.js';
import { KernelShim, type KernelShimOptions } from '../../kernel-shim/shim.js';

/** Let queued microtasks and immediates (driver work, tasklets, host drains) run. */
export async function flush(rounds = 3): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((r) => setImmediate(r));
}

export interface TracedShim {
  shim: KernelShim;
  clock: FakeClock;
  events: { service: ServiceName; event: DriverEvent }[];
  /** Replies the driver sent to the host, as statuses. */
  replies(service?: ServiceName): number[];
}

export function tracedShim(
  services: ServiceName[],
  opts: Omit<KernelShimOptions, 'clock' | 'trace' | 'services'> = {},
): TracedShim {
  const clock = new FakeClock();
  const events: TracedShim['events'] = [];
  const shim = new KernelShim({
    ...opts,
    services,
    clock,
    trace: (service, event) => events.push({ service, event }),
  });
  return {
    shim,
    clock,
    events,
    replies: (service) =>
      events
        .filter((e) => (!service || e.service === service) && e.event.type === 'reply')
        .map((e) => (e.event as { status: number }).status),
  };
}

/** Settle a promise that must not have resolved yet, or report what it did. */
export function watch<T>(p: Promise<T>): { settled: boolean; value?: T; error?: unknown } {
  const state: { settled: boolean; value?: T; error?: unknown } = { settled: false };
  p.then(
    (v) => Object.assign(state, { settled: true, value: v }),
    (e) => Object.assign(state, { settled: true, error: e }),
  );
  return state;
}
