/**
 * The shim's devices as real files: each ShimDevice becomes a FUSE file (`hv_kvp`, `hv_vss`,
 * `hv_fcopy`) whose open/read/write/poll/close are the transport's, so other processes (our daemons,
 * the upstream C daemons) use them through real system calls. A read waits in the FUSE server until
 * a message is queued; a signal to the reader arrives as FUSE_INTERRUPT and ends it with EINTR. A
 * rescind removes the file once the daemon has released the device; a re-offer brings it back.
 */
import type { ShimDevice, ServiceName } from './device.js';
import { EBADF, EIO } from './errno.js';
import { errno, type FuseFileHandler } from './fuse/files.js';
import { type FuseMount, type MountOptions, mountFuse } from './fuse/mount.js';
import { STREAM_MAX_WRITE } from './fuse/stream-channel.js';
import type { KernelShim } from './shim.js';
import type { TransportFile } from './transport.js';

function errnoOf(e: unknown): number {
  const n = (e as { errno?: unknown }).errno;
  return typeof n === 'number' && n > 0 ? n : EIO;
}

interface OpenDevice {
  file: TransportFile;
  reads: Set<AbortController>;
  unwatch?: () => void;
  wake?: () => void;
}

/** A FUSE file handler over one shim device. */
export function deviceFileHandler(device: () => ShimDevice): FuseFileHandler {
  const open = new Map<number, OpenDevice>();
  let nextFh = 1;
  return {
    open() {
      try {
        const file = device().open();
        const fh = nextFh++;
        open.set(fh, { file, reads: new Set() });
        return fh;
      } catch (e) {
        return errno(errnoOf(e));
      }
    },
    read(fh, req) {
      const o = open.get(fh);
      if (!o) return void req.error(EBADF);
      // A read that cannot wait (a message is queued, or the device is gone) cannot be interrupted
      // either, and needs no AbortController: the common case, the daemon polled first.
      const ac = o.file.poll() !== 0 ? undefined : new AbortController();
      if (ac) {
        o.reads.add(ac);
        req.onInterrupt(() => ac.abort());
      }
      o.file
        .read(req.size, ac ? { signal: ac.signal } : {})
        .then(
          (msg) => req.reply(msg),
          (e) => req.error(errnoOf(e)),
        )
        .finally(() => ac && o.reads.delete(ac));
    },
    write(fh, data) {
      const o = open.get(fh);
      if (!o) return errno(EBADF);
      try {
        return o.file.write(data);
      } catch (e) {
        return errno(errnoOf(e));
      }
    },
    poll(fh, _events, wake) {
      const o = open.get(fh);
      if (!o) return errno(EBADF);
      o.wake = wake;
      o.unwatch ??= o.file.watch(() => o.wake?.());
      return o.file.poll();
    },
    release(fh) {
      const o = open.get(fh);
      if (!o) return;
      open.delete(fh);
      o.unwatch?.();
      // A read can only be pending here if the connection ended under it.
      for (const ac of o.reads) ac.abort();
      o.file.close();
    },
  };
}

export interface DeviceFiles {
  readonly mount: FuseMount;
  /** Rescind a channel: readers get EBADF, the file disappears once the daemon closed it. */
  rescind(service: ServiceName): Promise<void>;
  /** Offer it again: the file is back, with a fresh driver. */
  reoffer(service: ServiceName): void;
  unmount(): Promise<void>;
}

/** Mount the shim's devices as files `hv_<service>` in `dir` (an empty directory). */
export async function mountDeviceFiles(
  shim: KernelShim,
  dir: string,
  opts: MountOptions = {},
): Promise<DeviceFiles> {
  const name = (s: ServiceName) => `hv_${s}`;
  const handlers = new Map<string, FuseFileHandler>();
  for (const s of shim.devices.keys())
    handlers.set(
      name(s),
      deviceFileHandler(() => shim.device(s)),
    );
  const mount = await mountFuse(dir, handlers, {
    subtype: 'hvshim',
    source: 'kernel-shim',
    maxWrite: STREAM_MAX_WRITE,
    ...opts,
  });
  return {
    mount,
    async rescind(service) {
      await shim.device(service).rescind();
      mount.session.removeFile(name(service));
    },
    reoffer(service) {
      shim.device(service).reoffer();
      mount.session.addFile(
        name(service),
        deviceFileHandler(() => shim.device(service)),
      );
    },
    async unmount() {
      await mount.unmount();
    },
  };
}
