/**
 * The device loop under a storm: messages always ready at once (readNow) and served synchronously
 * must not keep the event loop from timers and signals.
 */
import { describe, expect, it } from 'vitest';
import type { DeviceBinding, DeviceHandle } from '../../../daemons/common/device.js';
import { DeviceLoop } from '../../../daemons/common/device-loop.js';
import { memoryLogger } from '../../../daemons/common/log.js';

/** How long the storm lasts: far longer than the timer the test waits for. */
const STORM_MS = 1000;

/** A device that has the next message queued at once for STORM_MS, and takes every reply. */
function stormDevice(): { binding: DeviceBinding; writes: () => number } {
  let writes = 0;
  let started: number | undefined;
  const message = Buffer.alloc(16, 1);
  const handle: DeviceHandle = {
    path: '/dev/storm',
    // A long storm, then a message a turn of the event loop: a loop that never yields finishes
    // the storm first, and the timer below fires far too late (instead of the test hanging).
    readNow: () => {
      started ??= performance.now();
      return performance.now() - started < STORM_MS ? message : undefined;
    },
    read: () => new Promise((resolve) => setImmediate(() => resolve(message))),
    write: (data) => {
      writes++;
      return data.length;
    },
    close: () => undefined,
  };
  return { binding: { open: async () => handle }, writes: () => writes };
}

describe('DeviceLoop', () => {
  it('gives the event loop a turn during a storm of messages served at once', async () => {
    const device = stormDevice();
    const reply = Buffer.alloc(4);
    const loop = new DeviceLoop({
      binding: device.binding,
      protocol: {
        devicePath: '/dev/storm',
        readSize: 16,
        registration: () => Buffer.alloc(4),
        serve: () => reply, // synchronous, as KVP answers a read from memory
      },
      logger: memoryLogger(),
    });
    const ac = new AbortController();
    const running = loop.run(ac.signal);
    // A timer, as the supervisor's liveness checks, the deferred syncs and SIGTERM need one.
    const fired = await new Promise<number>((resolve) => {
      const started = performance.now();
      setTimeout(() => resolve(performance.now() - started), 20);
    });
    ac.abort();
    await running;
    expect(device.writes()).toBeGreaterThan(100); // it did serve meanwhile
    // With a turn every YIELD_AFTER_MS the timer is a few ms late; without, it waits out the storm.
    expect(fired).toBeLessThan(STORM_MS / 2);
    expect(loop.state).toBe('stopped');
  });
});
