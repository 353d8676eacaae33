/**
 * What Copy-VMFile does: START_FILE_COPY with the target directory, name and flags, the data in
 * DATA_FRAGMENT pieces, then COMPLETE_FCOPY — or CANCEL_FCOPY when a step fails. Also the single
 * operations, for tests that need to stop midway.
 */
import { Buffer } from 'node:buffer';
import { open } from 'node:fs/promises';
import {
  CANCEL_FCOPY,
  COMPLETE_FCOPY,
  CREATE_PATH,
  DATA_FRAGMENT,
  HV_S_OK,
  OVER_WRITE,
  START_FILE_COPY,
  WRITE_TO_FILE,
  statusName,
} from '../../uapi/constants.js';
import { encodeFcopyMessage } from '../../uapi/fcopy.js';
import { ICMSGTYPE_FCOPY } from '../channel/icmsg.js';
import { FCOPY_FW_VERSIONS, FCOPY_SRV_VERSIONS } from '../channel/negotiate.js';
import type { Clock } from '../clock.js';
import type { ShimDevice } from '../device.js';
import { IcClient } from './ic-client.js';
import type { HostResult } from './kvp.js';

export interface CopyOptions {
  overwrite?: boolean;
  createPath?: boolean;
  /** Announce this size instead of the real one (to test size checks). */
  announcedSize?: bigint;
}

export interface CopyResult extends HostResult {
  /** The step that failed, or 'complete'. */
  readonly step: 'start' | 'write' | 'complete';
  readonly bytesSent: number;
}

export class FcopyHost {
  readonly ic: IcClient;

  constructor(device: ShimDevice, clock: Clock, timeoutMs?: number) {
    this.ic = new IcClient(device, {
      clock,
      msgType: ICMSGTYPE_FCOPY,
      fwVersions: FCOPY_FW_VERSIONS,
      srvVersions: FCOPY_SRV_VERSIONS,
      ...(timeoutMs ? { timeoutMs } : {}),
    });
  }

  async start(
    pathName: string,
    fileName: string,
    fileSize: bigint,
    opts: CopyOptions = {},
  ): Promise<HostResult> {
    const copyFlags = (opts.overwrite ? OVER_WRITE : 0) | (opts.createPath ? CREATE_PATH : 0);
    const body = encodeFcopyMessage(
      { operation: START_FILE_COPY, fileName, pathName, copyFlags, fileSize },
      'utf16le',
    );
    return this.send(body, 'FCOPY START_FILE_COPY');
  }

  write(offset: bigint, data: Uint8Array): Promise<HostResult> {
    return this.send(
      encodeFcopyMessage({ operation: WRITE_TO_FILE, offset, data }, 'utf16le'),
      'FCOPY WRITE_TO_FILE',
    );
  }

  complete(): Promise<HostResult> {
    return this.send(encodeFcopyMessage({ operation: COMPLETE_FCOPY }), 'FCOPY COMPLETE_FCOPY');
  }

  cancel(): Promise<HostResult> {
    return this.send(encodeFcopyMessage({ operation: CANCEL_FCOPY }), 'FCOPY CANCEL_FCOPY');
  }

  /** Copy `data` to `<pathName>/<fileName>` in the guest; CANCEL on a failed write. */
  async copyBuffer(
    data: Uint8Array,
    pathName: string,
    fileName: string,
    opts: CopyOptions = {},
  ): Promise<CopyResult> {
    const size = opts.announcedSize ?? BigInt(data.length);
    const started = await this.start(pathName, fileName, size, opts);
    if (started.status !== HV_S_OK) return { ...started, step: 'start', bytesSent: 0 };
    let sent = 0;
    for (let off = 0; off < data.length; off += DATA_FRAGMENT) {
      const piece = data.subarray(off, off + DATA_FRAGMENT);
      const r = await this.write(BigInt(off), piece);
      if (r.status !== HV_S_OK) {
        await this.cancel();
        return { ...r, step: 'write', bytesSent: sent };
      }
      sent += piece.length;
    }
    const done = await this.complete();
    return { ...done, step: 'complete', bytesSent: sent };
  }

  /** Copy a host-side file, streaming it fragment by fragment. */
  async copyFile(
    source: string,
    pathName: string,
    fileName: string,
    opts: CopyOptions = {},
  ): Promise<CopyResult> {
    const fh = await open(source, 'r');
    try {
      const { size } = await fh.stat();
      const started = await this.start(pathName, fileName, opts.announcedSize ?? BigInt(size), opts);
      if (started.status !== HV_S_OK) return { ...started, step: 'start', bytesSent: 0 };
      const buf = Buffer.alloc(DATA_FRAGMENT);
      let sent = 0;
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, DATA_FRAGMENT, sent);
        if (bytesRead === 0) break;
        const r = await this.write(BigInt(sent), buf.subarray(0, bytesRead));
        if (r.status !== HV_S_OK) {
          await this.cancel();
          return { ...r, step: 'write', bytesSent: sent };
        }
        sent += bytesRead;
      }
      const done = await this.complete();
      return { ...done, step: 'complete', bytesSent: sent };
    } finally {
      await fh.close();
    }
  }

  private async send(body: Uint8Array, what: string): Promise<HostResult> {
    const reply = await this.ic.request(body, what);
    return { status: reply.status, statusName: statusName(reply.status) };
  }
}
