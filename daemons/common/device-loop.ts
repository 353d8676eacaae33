/**
 * The life of a daemon on its device, shared by the three daemons: open, register, then read one
 * message, serve it, write the reply, forever. Any read or write error (the EINVAL of a late reply
 * or of hibernation, the EBADF of a rescind) closes the device, waits a bounded back-off, reopens
 * and registers again, as the kernel's design expects; a missing device node (rescinded channel)
 * or a device held by another process is waited for, with back-off, and said once in the log.
 * Only a stop request ends the loop.
 */
import { AbortedError, type DeviceBinding, type DeviceHandle, errnoCode } from './device.js';
import { Backoff, type BackoffOptions, sleep } from './backoff.js';
import type { Logger } from './log.js';

/** What distinguishes one daemon's protocol. */
export interface DeviceProtocol {
  /** e.g. `/dev/vmbus/hv_kvp`. */
  readonly devicePath: string;
  /** The read buffer size (at least the largest kernel-to-daemon message). */
  readonly readSize: number;
  /**
   * When set (at least readSize bytes), every message is read into this one buffer instead of a
   * new one: the message given to serve() is then valid only until serve() resolves, and the
   * protocol keeps no reference to it (or to a view of it) beyond that.
   */
  readonly readBuffer?: Buffer;
  /** The registration message to write after open. */
  registration(): Uint8Array;
  /**
   * Serve one message read from the device. Returns the reply to write, or undefined when the
   * message needs none (the kernel's registration reply); at once, or as a promise.
   */
  serve(message: Buffer): Promise<Uint8Array | undefined> | Uint8Array | undefined;
  /** Called after each open+registration write (before the registration reply is read). */
  opened?(): void;
  /** Called after the device was closed for a reopen or at stop; `reason` says why. */
  closed?(reason: string): Promise<void> | void;
}

/** Longest run of back-to-back messages served before the event loop gets a turn. */
export const YIELD_AFTER_MS = 5;

export type LoopState = 'opening' | 'serving' | 'waiting' | 'stopped';

export interface DeviceLoopOptions {
  binding: DeviceBinding;
  protocol: DeviceProtocol;
  logger: Logger;
  backoff?: BackoffOptions;
  /** Called whenever the state changes (for readiness notification and status). */
  onState?: (state: LoopState, detail?: string) => void;
}

export class DeviceLoop {
  private stateValue: LoopState = 'opening';
  private readonly backoff: Backoff;
  /** Messages served since start. */
  served = 0;
  /** Times the device was (re)opened and registered. */
  registrations = 0;

  constructor(private readonly opts: DeviceLoopOptions) {
    this.backoff = new Backoff(opts.backoff);
  }

  get state(): LoopState {
    return this.stateValue;
  }

  private setState(state: LoopState, detail?: string): void {
    this.stateValue = state;
    this.opts.onState?.(state, detail);
  }

  /** Run until `signal` aborts. Resolves once the device is closed. */
  async run(signal: AbortSignal): Promise<void> {
    const { protocol, logger } = this.opts;
    let lastOpenError: string | undefined;
    while (!signal.aborted) {
      this.setState('opening');
      let dev: DeviceHandle;
      try {
        dev = await this.opts.binding.open(protocol.devicePath);
      } catch (e) {
        const code = errnoCode(e) ?? 'ERROR';
        if (code !== lastOpenError) {
          const hint =
            code === 'ENOENT'
              ? 'the device node is absent (not a Hyper-V guest, hv_utils not loaded, or the channel was rescinded); waiting for it'
              : code === 'EBUSY'
                ? 'another process holds the device (is the upstream daemon running?); retrying'
                : 'retrying';
          logger.warn(
            { device: protocol.devicePath, code, err: String(e) },
            `cannot open ${protocol.devicePath}: ${hint}`,
          );
          lastOpenError = code;
        }
        this.setState('waiting', code);
        await sleep(this.backoff.next(), signal);
        continue;
      }
      lastOpenError = undefined;
      const reason = await this.session(dev, signal);
      dev.close();
      await protocol.closed?.(reason);
      if (signal.aborted) break;
      const delay = this.backoff.next();
      logger.info(
        { device: protocol.devicePath, reason, retryInMs: delay },
        `reopening ${protocol.devicePath} (${reason})`,
      );
      this.setState('waiting', reason);
      await sleep(delay, signal);
    }
    this.setState('stopped');
  }

  /** One open device: register, then serve until an error or a stop. Returns why it ended. */
  private async session(dev: DeviceHandle, signal: AbortSignal): Promise<string> {
    const { protocol, logger } = this.opts;
    try {
      dev.write(protocol.registration());
    } catch (e) {
      logger.error(
        { device: dev.path, code: errnoCode(e), err: String(e) },
        'registration with the kernel failed',
      );
      return `registration failed: ${errnoCode(e) ?? e}`;
    }
    this.registrations++;
    protocol.opened?.();
    let registered = false;
    let busySince = performance.now();
    for (;;) {
      // Messages that keep coming within the quick poll are read and served without returning to
      // the event loop; give it a turn every few milliseconds of that, so that timers, signals
      // and the supervisor's liveness checks are never starved by a storm of host requests.
      if (performance.now() - busySince >= YIELD_AFTER_MS) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        busySince = performance.now();
      }
      let msg: Buffer;
      try {
        if (signal.aborted) return 'stopping';
        const now = dev.readNow?.(protocol.readSize, protocol.readBuffer);
        if (now) msg = now;
        else {
          msg = await dev.read(protocol.readSize, signal, protocol.readBuffer);
          busySince = performance.now(); // the event loop ran while we waited
        }
      } catch (e) {
        if (e instanceof AbortedError || signal.aborted) return 'stopping';
        logger.warn({ device: dev.path, code: errnoCode(e), err: String(e) }, 'read from the device failed');
        return `read failed: ${errnoCode(e) ?? e}`;
      }
      const served = protocol.serve(msg);
      const reply = served instanceof Promise ? await served : served;
      if (!registered) {
        // The first message after registration is the kernel's answer to it.
        registered = true;
        this.backoff.reset();
        this.setState('serving');
      }
      if (reply === undefined) continue;
      try {
        dev.write(reply);
        this.served++;
      } catch (e) {
        logger.warn(
          { device: dev.path, code: errnoCode(e), err: String(e) },
          errnoCode(e) === 'EINVAL'
            ? 'the kernel refused the reply (timed out, or reset by hibernation)'
            : 'write to the device failed',
        );
        return `write failed: ${errnoCode(e) ?? e}`;
      }
    }
  }
}
