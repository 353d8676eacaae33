/**
 * The VSS driver (drivers/hv/hv_snapshot.c) over /dev/vmbus/hv_vss: NEGOTIATE answered even with
 * no daemon, GET_DM_INFO and the operations Linux does not implement answered in the kernel,
 * FREEZE/THAW/HOT_BACKUP forwarded to the daemon as a 12-byte struct hv_vss_msg with a 900 s
 * (FREEZE) or 30 s timeout, and a fake THAW queued before hibernation. Transition table:
 * kernel-protocol.md §2.6 (VSS).
 */
import {
  HV_E_FAIL,
  VSS_HBU_NO_AUTO_RECOVERY,
  VSS_OP_FREEZE,
  VSS_OP_GET_DM_INFO,
  VSS_OP_HOT_BACKUP,
  VSS_OP_REGISTER,
  VSS_OP_REGISTER1,
  VSS_OP_THAW,
} from '../../uapi/constants.js';
import { HV_VSS_MSG } from '../../uapi/layout.js';
import { VSS_MSG_SIZE, encodeVssRegistrationReply, encodeVssRequest } from '../../uapi/vss.js';
import { ICMSG_HDR, ICMSGTYPE_VSS } from '../channel/icmsg.js';
import { VSS_FW_VERSIONS, VSS_SRV_VERSIONS } from '../channel/negotiate.js';
import type { DelayedWork } from '../clock.js';
import { EFAULT, EINVAL } from '../errno.js';
import {
  HV_UTIL_TIMEOUT_MS,
  HVUTIL_DEVICE_INIT,
  HVUTIL_HOSTMSG_RECEIVED,
  HVUTIL_READY,
  HVUTIL_USERSPACE_RECV,
  HVUTIL_USERSPACE_REQ,
  UtilDriver,
  type UtilDriverOptions,
  VSS_FREEZE_TIMEOUT_MS,
  Work,
} from './util.js';

const F = HV_VSS_MSG.fields;

export class VssDriver extends UtilDriver {
  private dmRegValue = 0;
  private readonly timeoutWork: DelayedWork;
  private readonly handleRequestWork: Work;

  constructor(opts: UtilDriverOptions) {
    super('vmbus/hv_vss', 8192, opts);
    this.timeoutWork = this.makeDelayedWork(() => this.onTimeout());
    this.handleRequestWork = new Work(() => this.handleRequest());
  }

  private hostOperation(): number {
    return this.recvBuffer[ICMSG_HDR + F['vss_hdr.operation'].offset] ?? 0;
  }

  protected onChannelCallback(): void {
    if (this.state > HVUTIL_READY) return;
    const len = this.receiveRequest({
      service: 'VSS',
      msgType: ICMSGTYPE_VSS,
      minBody: VSS_MSG_SIZE,
      fw: VSS_FW_VERSIONS,
      srv: VSS_SRV_VERSIONS,
    });
    if (len === 0) return;
    this.recvLen = len;
    this.handleRequestWork.schedule();
  }

  /** vss_handle_request. */
  private handleRequest(): void {
    switch (this.hostOperation()) {
      case VSS_OP_FREEZE:
      case VSS_OP_THAW:
      case VSS_OP_HOT_BACKUP:
        if (this.state < HVUTIL_READY) {
          this.respond(HV_E_FAIL);
          return;
        }
        this.state = HVUTIL_HOSTMSG_RECEIVED;
        this.sendOp();
        return;
      case VSS_OP_GET_DM_INFO:
        this.recvBuffer.writeUInt32LE(0, ICMSG_HDR + F['dm_info.flags'].offset);
        break;
      default:
        break;
    }
    this.respond(0);
    this.pollChannel();
  }

  /** vss_send_op: the 12-byte request, timer started before queuing. */
  private sendOp(): void {
    const op = this.hostOperation();
    this.state = HVUTIL_USERSPACE_REQ;
    this.timeoutWork.schedule(op === VSS_OP_FREEZE ? VSS_FREEZE_TIMEOUT_MS : HV_UTIL_TIMEOUT_MS);
    const rc = this.transport.send(encodeVssRequest(op));
    this.emit({ type: 'queue', length: VSS_MSG_SIZE, rc });
    if (rc !== 0 && this.timeoutWork.cancel()) {
      this.respond(HV_E_FAIL);
      this.state = HVUTIL_READY;
    }
  }

  /** vss_on_msg. */
  onMsg(msg: Buffer): number {
    if (msg.length !== VSS_MSG_SIZE) return -EINVAL;
    const op = msg[F['vss_hdr.operation'].offset];
    if (op === VSS_OP_REGISTER || op === VSS_OP_REGISTER1) {
      if (this.state > HVUTIL_READY) return -EINVAL;
      return this.handleHandshake(op);
    }
    if (this.state !== HVUTIL_USERSPACE_REQ) return -EINVAL;
    this.state = HVUTIL_USERSPACE_RECV;
    // The daemon's status overlays the operation byte: the kernel tests its low byte.
    if (op === VSS_OP_HOT_BACKUP) {
      this.recvBuffer.writeUInt32LE(VSS_HBU_NO_AUTO_RECOVERY, ICMSG_HDR + F['vss_cf.flags'].offset);
    }
    if (this.timeoutWork.cancel()) {
      this.respond(msg.readUInt32LE(F.error.offset));
      this.pollChannel();
    }
    return 0;
  }

  private handleHandshake(op: number): number {
    this.dmRegValue = op;
    if (op === VSS_OP_REGISTER) return 0; // legacy: accepted, nothing sent, no READY
    const rc = this.transport.send(encodeVssRegistrationReply(op), () => this.registrationDone());
    this.emit({ type: 'queue', length: 4, rc });
    return rc !== 0 ? -EFAULT : 0;
  }

  /** The registration the daemon used (129, the legacy 128, or 0 before any). */
  get registration(): number {
    return this.dmRegValue;
  }

  onReset(): void {
    if (this.timeoutWork.cancel()) this.respond(HV_E_FAIL);
    this.state = HVUTIL_DEVICE_INIT;
  }

  private onTimeout(): void {
    this.emit({ type: 'timeout' });
    this.respond(HV_E_FAIL);
    this.pollChannel();
  }

  protected onPreSuspend(): void {
    this.cancelAllWork();
    // The fake THAW: thaw whatever the daemon froze before the VM sleeps (errors ignored).
    const rc = this.transport.send(encodeVssRequest(VSS_OP_THAW));
    this.emit({ type: 'queue', length: VSS_MSG_SIZE, rc });
  }

  protected cancelAllWork(): void {
    this.timeoutWork.cancel();
    this.handleRequestWork.cancel();
  }
}
