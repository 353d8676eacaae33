/**
 * The FCOPY driver (drivers/hv/hv_fcopy.c, the last char-device version before Linux 6.10) over
 * /dev/vmbus/hv_fcopy: START_FILE_COPY converted (names UTF-16LE -> UTF-8), WRITE_TO_FILE relayed as
 * 6196 bytes, COMPLETE/CANCEL relayed with the host packet's *whole* length, replies as 4-byte
 * ints, a fake CANCEL before hibernation. Transition table: kernel-protocol.md §2.6 (FCOPY).
 */
import {
  FCOPY_VERSION_0,
  FCOPY_VERSION_1,
  HV_E_FAIL,
  START_FILE_COPY,
  W_MAX_PATH,
  WRITE_TO_FILE,
} from '../../uapi/constants.js';
import {
  FCOPY_HDR_SIZE,
  FCOPY_INT_SIZE,
  FCOPY_START_SIZE,
  FCOPY_WRITE_SIZE,
  encodeFcopyInt,
  encodeFcopyMessage,
} from '../../uapi/fcopy.js';
import { HV_START_FCOPY } from '../../uapi/layout.js';
import { ICMSG_HDR, ICMSGTYPE_FCOPY } from '../channel/icmsg.js';
import { FCOPY_FW_VERSIONS, FCOPY_SRV_VERSIONS } from '../channel/negotiate.js';
import type { DelayedWork } from '../clock.js';
import { EFAULT, EINVAL } from '../errno.js';
import { type Utf16OverflowRule, utf16sToUtf8s } from '../nls.js';
import {
  HV_UTIL_TIMEOUT_MS,
  HVUTIL_DEVICE_INIT,
  HVUTIL_HOSTMSG_RECEIVED,
  HVUTIL_READY,
  HVUTIL_USERSPACE_RECV,
  HVUTIL_USERSPACE_REQ,
  UtilDriver,
  type UtilDriverOptions,
  Work,
} from './util.js';

const S = HV_START_FCOPY.fields;

export interface FcopyDriverOptions extends UtilDriverOptions {
  utf16Overflow?: Utf16OverflowRule;
}

export class FcopyDriver extends UtilDriver {
  private dmRegValue = -1;
  private readonly timeoutWork: DelayedWork;
  private readonly sendWork: Work;
  private readonly utf16Overflow: Utf16OverflowRule;

  constructor(opts: FcopyDriverOptions) {
    super('vmbus/hv_fcopy', 8192, opts);
    this.utf16Overflow = opts.utf16Overflow ?? 'stop';
    this.timeoutWork = this.makeDelayedWork(() => this.onTimeout());
    this.sendWork = new Work(() => this.sendData());
  }

  protected onChannelCallback(): void {
    if (this.state > HVUTIL_READY) return;
    const len = this.receiveRequest({
      service: 'FCOPY',
      msgType: ICMSGTYPE_FCOPY,
      minBody: FCOPY_HDR_SIZE,
      fw: FCOPY_FW_VERSIONS,
      srv: FCOPY_SRV_VERSIONS,
    });
    if (len === 0) return;
    this.recvLen = len;
    if (this.state < HVUTIL_READY) {
      this.respond(HV_E_FAIL); // no daemon registered
      return;
    }
    this.state = HVUTIL_HOSTMSG_RECEIVED;
    this.sendWork.schedule();
    this.timeoutWork.schedule(HV_UTIL_TIMEOUT_MS);
  }

  /** fcopy_send_data. */
  private sendData(): void {
    const host = this.recvBuffer.subarray(ICMSG_HDR);
    const operation = host.readUInt32LE(0);
    let out: Buffer;
    if (operation === START_FILE_COPY) {
      out = Buffer.alloc(FCOPY_START_SIZE);
      out.writeUInt32LE(operation, S['hdr.operation'].offset);
      host.copy(out, S.copy_flags.offset, S.copy_flags.offset, S.copy_flags.offset + 4);
      host.copy(out, S.file_size.offset, S.file_size.offset, S.file_size.offset + 8);
      for (const f of [S.file_name, S.path_name]) {
        utf16sToUtf8s(host.subarray(f.offset), W_MAX_PATH, W_MAX_PATH - 1, this.utf16Overflow).copy(
          out,
          f.offset,
        );
      }
    } else if (operation === WRITE_TO_FILE) {
      out = Buffer.from(host.subarray(0, FCOPY_WRITE_SIZE));
    } else {
      out = Buffer.from(host.subarray(0, this.recvLen));
    }
    this.state = HVUTIL_USERSPACE_REQ;
    const rc = this.transport.send(out);
    this.emit({ type: 'queue', length: out.length, rc });
    if (rc !== 0 && this.timeoutWork.cancel()) {
      this.respond(HV_E_FAIL);
      this.state = HVUTIL_READY;
    }
  }

  /** fcopy_on_msg. */
  onMsg(msg: Buffer): number {
    if (msg.length !== FCOPY_INT_SIZE) return -EINVAL;
    const value = msg.readUInt32LE(0);
    if (this.state === HVUTIL_DEVICE_INIT) return this.handleHandshake(value);
    if (this.state !== HVUTIL_USERSPACE_REQ) return -EINVAL;
    if (this.timeoutWork.cancel()) {
      this.state = HVUTIL_USERSPACE_RECV;
      this.respond(value);
      this.pollChannel();
    }
    return 0;
  }

  private handleHandshake(version: number): number {
    if (version === FCOPY_VERSION_0) {
      this.dmRegValue = version; // legacy: accepted, never reaches READY
      return 0;
    }
    if (version !== FCOPY_VERSION_1) return -EINVAL;
    this.dmRegValue = version;
    const rc = this.transport.send(encodeFcopyInt(version), () => this.registrationDone());
    this.emit({ type: 'queue', length: FCOPY_INT_SIZE, rc });
    return rc !== 0 ? -EFAULT : 0;
  }

  /** The version the daemon registered with (1, the legacy 0, or -1 before any). */
  get registration(): number {
    return this.dmRegValue;
  }

  onReset(): void {
    this.state = HVUTIL_DEVICE_INIT;
    if (this.timeoutWork.cancel()) this.respond(HV_E_FAIL);
  }

  private onTimeout(): void {
    this.emit({ type: 'timeout' });
    this.respond(HV_E_FAIL);
    this.pollChannel();
  }

  protected onPreSuspend(): void {
    this.cancelAllWork();
    // The fake CANCEL: the daemon drops its partial file (errors ignored).
    const rc = this.transport.send(encodeFcopyMessage({ operation: 3 }));
    this.emit({ type: 'queue', length: FCOPY_HDR_SIZE, rc });
  }

  protected cancelAllWork(): void {
    this.timeoutWork.cancel();
    this.sendWork.cancel();
  }
}
