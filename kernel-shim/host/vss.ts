/**
 * What the Hyper-V backup service does with VSS: check hot-backup support, freeze the guest's
 * filesystems for a snapshot, thaw them. Each call resolves with the status the host sees.
 */
import {
  VSS_OP_FREEZE,
  VSS_OP_GET_DM_INFO,
  VSS_OP_HOT_BACKUP,
  VSS_OP_THAW,
  statusName,
} from '../../uapi/constants.js';
import { decodeVssReply, encodeVssRequest } from '../../uapi/vss.js';
import { ICMSGTYPE_VSS } from '../channel/icmsg.js';
import { VSS_FW_VERSIONS, VSS_SRV_VERSIONS } from '../channel/negotiate.js';
import type { Clock } from '../clock.js';
import type { ShimDevice } from '../device.js';
import { IcClient } from './ic-client.js';
import type { HostResult } from './kvp.js';

export interface VssResult extends HostResult {
  /** vss_cf.flags / dm_info.flags as the guest left them. */
  readonly flags: number;
}

const NAMES: Record<number, string> = { 2: 'HOT_BACKUP', 3: 'GET_DM_INFO', 5: 'FREEZE', 6: 'THAW' };

export class VssHost {
  readonly ic: IcClient;

  constructor(device: ShimDevice, clock: Clock, timeoutMs?: number) {
    this.ic = new IcClient(device, {
      clock,
      msgType: ICMSGTYPE_VSS,
      fwVersions: VSS_FW_VERSIONS,
      srvVersions: VSS_SRV_VERSIONS,
      // The kernel gives FREEZE 900 s; the host waits a little longer by default.
      timeoutMs: timeoutMs ?? 960_000,
    });
  }

  /** Does the guest support hot (application-consistent) backup? */
  hotBackupCheck(flags = 0): Promise<VssResult> {
    return this.request(VSS_OP_HOT_BACKUP, flags);
  }

  freeze(): Promise<VssResult> {
    return this.request(VSS_OP_FREEZE);
  }

  thaw(): Promise<VssResult> {
    return this.request(VSS_OP_THAW);
  }

  getDmInfo(): Promise<VssResult> {
    return this.request(VSS_OP_GET_DM_INFO, 0xffffffff);
  }

  /** Any VSS operation, including the ones Linux answers in the kernel (CREATE, DELETE, …). */
  async request(operation: number, flags = 0): Promise<VssResult> {
    const reply = await this.ic.request(
      encodeVssRequest(operation, flags),
      `VSS ${NAMES[operation] ?? operation}`,
    );
    const msg = decodeVssReply(reply.body.subarray(0, 12));
    return {
      status: reply.status,
      statusName: statusName(reply.status),
      flags: msg.ok ? msg.value.flags : 0,
    };
  }
}
