/**
 * The KVP driver (drivers/hv/hv_kvp.c) over the hvutil transport /dev/vmbus/hv_kvp: host
 * negotiation deferred until a daemon registers (55 s handshake work), one host transaction at a
 * time, the UTF-16LE <-> UTF-8 conversions both ways, the 30 s timeout, and the reply to the host
 * built in the host's own packet. Transition table: kernel-protocol.md §2.6 (KVP).
 */
import {
  HV_E_FAIL,
  HV_S_CONT,
  HV_S_OK,
  HV_KVP_EXCHANGE_MAX_KEY_SIZE,
  HV_KVP_EXCHANGE_MAX_VALUE_SIZE,
  KVP_OP_DELETE,
  KVP_OP_ENUMERATE,
  KVP_OP_GET,
  KVP_OP_GET_IP_INFO,
  KVP_OP_REGISTER,
  KVP_OP_REGISTER1,
  KVP_OP_SET,
  KVP_OP_SET_IP_INFO,
  MAX_ADAPTER_ID_SIZE,
  MAX_GATEWAY_SIZE,
  MAX_IP_ADDR_SIZE,
  REG_SZ,
  REG_U32,
  REG_U64,
} from '../../uapi/constants.js';
import { HV_KVP_IP_MSG, HV_KVP_MSG } from '../../uapi/layout.js';
import { KVP_MSG_SIZE } from '../../uapi/kvp.js';
import { ICMSG_HDR, ICMSGTYPE_KVPEXCHANGE, ICMSGTYPE_NEGOTIATE } from '../channel/icmsg.js';
import { KVP_FW_VERSIONS, KVP_SRV_VERSIONS, prepNegotiateResponse } from '../channel/negotiate.js';
import type { DelayedWork } from '../clock.js';
import { EINVAL } from '../errno.js';
import { type Utf16OverflowRule, strlen, utf16sToUtf8s, utf8sToUtf16sInto } from '../nls.js';
import {
  HV_UTIL_NEGO_TIMEOUT_MS,
  HV_UTIL_TIMEOUT_MS,
  HVUTIL_HOSTMSG_RECEIVED,
  HVUTIL_READY,
  HVUTIL_USERSPACE_RECV,
  HVUTIL_USERSPACE_REQ,
  HVUTIL_DEVICE_INIT,
  UtilDriver,
  type UtilDriverOptions,
  Work,
} from './util.js';

const F = HV_KVP_MSG.fields;
const IPF = HV_KVP_IP_MSG.fields;

/** Offsets of the hv_kvp_exchg_msg_value fields of GET's and of ENUMERATE's body. */
function exchangeFields(prefix: 'body.kvp_get.data' | 'body.kvp_enum_data.data') {
  const at = (f: string) => F[`${prefix}.${f}` as keyof typeof F].offset;
  return {
    key: at('key'),
    key_size: at('key_size'),
    value: at('value'),
    value_size: at('value_size'),
    value_type: at('value_type'),
  };
}
const GET_DATA = exchangeFields('body.kvp_get.data');
const ENUM_DATA = exchangeFields('body.kvp_enum_data.data');

/** HV_DRV_VERSION: the version string the kernel returns at registration. */
export const HV_DRV_VERSION = '3.1';

const NEGO_NOT_STARTED = 0;
const NEGO_IN_PROGRESS = 1;
const NEGO_FINISHED = 2;

export interface KvpDriverOptions extends UtilDriverOptions {
  /**
   * Kernels with upstream commit 3fcf923302a8 (2026) return the registration reply's queuing
   * error from the registration write; older ones always succeed. Default: true.
   */
  registrationReturnsQueueError?: boolean;
  /** How UTF-16 -> UTF-8 treats a character that does not fit (see nls.ts). Default: 'stop'. */
  utf16Overflow?: Utf16OverflowRule;
}

export class KvpDriver extends UtilDriver {
  /** Which registration the daemon used (KVP_OP_REGISTER1 or the legacy KVP_OP_REGISTER). */
  private dmRegValue = 0;
  private hostNegotiated = NEGO_NOT_STARTED;
  private readonly timeoutWork: DelayedWork;
  private readonly handshakeWork: DelayedWork;
  private readonly sendKeyWork: Work;
  private readonly registrationReturnsQueueError: boolean;
  private readonly utf16Overflow: Utf16OverflowRule;
  /** The struct hv_kvp_msg being built for the daemon (kvp_send_key's kzalloc, zeroed each time). */
  private readonly message = Buffer.alloc(KVP_MSG_SIZE);

  constructor(opts: KvpDriverOptions) {
    super('vmbus/hv_kvp', 4 * 4096, opts);
    this.registrationReturnsQueueError = opts.registrationReturnsQueueError ?? true;
    this.utf16Overflow = opts.utf16Overflow ?? 'stop';
    this.timeoutWork = this.makeDelayedWork(() => this.onTimeout());
    this.handshakeWork = this.makeDelayedWork(() => this.scheduleCallback());
    this.sendKeyWork = new Work(() => this.sendKey());
  }

  /** True while the host's version negotiation waits for a daemon (no packet read at all). */
  get negotiationDeferred(): boolean {
    return this.hostNegotiated !== NEGO_FINISHED;
  }

  protected onChannelCallback(): void {
    if (this.state < HVUTIL_READY) {
      if (this.hostNegotiated === NEGO_NOT_STARTED) {
        this.hostNegotiated = NEGO_IN_PROGRESS;
        this.handshakeWork.schedule(HV_UTIL_NEGO_TIMEOUT_MS);
      }
      return;
    }
    if (this.state > HVUTIL_READY) return;
    const len = this.receive();
    if (len === 0 || !this.hasIcHeader(len)) return;
    const type = this.msgType();
    if (type === ICMSGTYPE_NEGOTIATE) {
      prepNegotiateResponse(this.recvBuffer.subarray(0, len), KVP_FW_VERSIONS, KVP_SRV_VERSIONS);
    } else if (type === ICMSGTYPE_KVPEXCHANGE) {
      this.recvLen = len;
      this.state = HVUTIL_HOSTMSG_RECEIVED;
      this.sendKeyWork.schedule();
      this.timeoutWork.schedule(HV_UTIL_TIMEOUT_MS);
      return;
    } else {
      this.emit({ type: 'drop', reason: `KVP: invalid message type ${type}` });
      return;
    }
    this.respond(this.recvBuffer.readUInt32LE(20), len);
    this.hostNegotiated = NEGO_FINISHED;
    this.pollChannel();
  }

  /** kvp_send_key: convert the host's request into a struct hv_kvp_msg and queue it. */
  private sendKey(): void {
    if (this.state !== HVUTIL_HOSTMSG_RECEIVED) return;
    const host = this.recvBuffer.subarray(ICMSG_HDR);
    const operation = host[F['kvp_hdr.operation'].offset] ?? 0;
    // hvutil_transport_send copies it, so one buffer serves every request.
    const msg = this.message.fill(0);
    msg[F['kvp_hdr.operation'].offset] = operation;
    msg[F['kvp_hdr.pool'].offset] = host[F['kvp_hdr.pool'].offset] ?? 0;
    const toUtf8 = (srcOffset: number, inlen: number, dstOffset: number, maxout: number): number => {
      const bytes = utf16sToUtf8s(host.subarray(srcOffset), inlen, maxout, this.utf16Overflow);
      bytes.copy(msg, dstOffset);
      return bytes.length;
    };
    switch (operation) {
      case KVP_OP_SET_IP_INFO:
      case KVP_OP_GET_IP_INFO:
        this.hostIpToDaemon(host, msg, operation, toUtf8);
        break;
      case KVP_OP_SET: {
        const valueType = host.readUInt32LE(F['body.kvp_set.data.value_type'].offset);
        const valueOffset = F['body.kvp_set.data.value'].offset;
        let valueSize = 0;
        if (valueType === REG_SZ) {
          const inlen = host.readUInt32LE(F['body.kvp_set.data.value_size'].offset);
          valueSize = toUtf8(valueOffset, inlen, valueOffset, HV_KVP_EXCHANGE_MAX_VALUE_SIZE - 1) + 1;
        } else if (valueType === REG_U32 || valueType === REG_U64) {
          const text =
            valueType === REG_U32
              ? String(host.readUInt32LE(valueOffset))
              : String(host.readBigUInt64LE(valueOffset));
          msg.write(text, valueOffset, 'latin1');
          valueSize = text.length + 1;
        }
        msg.writeUInt32LE(valueSize, F['body.kvp_set.data.value_size'].offset);
        const keyLen = host.readUInt32LE(F['body.kvp_set.data.key_size'].offset);
        const keyOffset = F['body.kvp_set.data.key'].offset;
        const n = toUtf8(keyOffset, keyLen, keyOffset, HV_KVP_EXCHANGE_MAX_KEY_SIZE - 1);
        msg.writeUInt32LE(n + 1, F['body.kvp_set.data.key_size'].offset);
        break;
      }
      case KVP_OP_GET: {
        const keyLen = host.readUInt32LE(F['body.kvp_get.data.key_size'].offset);
        const keyOffset = F['body.kvp_get.data.key'].offset;
        const n = toUtf8(keyOffset, keyLen, keyOffset, HV_KVP_EXCHANGE_MAX_KEY_SIZE - 1);
        msg.writeUInt32LE(n + 1, F['body.kvp_get.data.key_size'].offset);
        break;
      }
      case KVP_OP_DELETE: {
        const keyLen = host.readUInt32LE(F['body.kvp_delete.key_size'].offset);
        const keyOffset = F['body.kvp_delete.key'].offset;
        const n = toUtf8(keyOffset, keyLen, keyOffset, HV_KVP_EXCHANGE_MAX_KEY_SIZE - 1);
        msg.writeUInt32LE(n + 1, F['body.kvp_delete.key_size'].offset);
        break;
      }
      case KVP_OP_ENUMERATE: {
        const at = F['body.kvp_enum_data.index'].offset;
        msg.writeUInt32LE(host.readUInt32LE(at), at);
        break;
      }
    }
    this.state = HVUTIL_USERSPACE_REQ;
    const rc = this.transport.send(msg);
    this.emit({ type: 'queue', length: msg.length, rc });
    if (rc !== 0 && this.timeoutWork.cancel()) {
      this.respondToHost(undefined, HV_E_FAIL);
      this.state = HVUTIL_READY;
    }
  }

  /** process_ib_ipinfo: host struct hv_kvp_ip_msg (UTF-16LE) into the daemon's kvp_ip_val. */
  private hostIpToDaemon(
    host: Buffer,
    msg: Buffer,
    operation: number,
    toUtf8: (src: number, inlen: number, dst: number, maxout: number) => number,
  ): void {
    if (operation === KVP_OP_SET_IP_INFO) {
      toUtf8(
        IPF['kvp_ip_val.ip_addr'].offset,
        MAX_IP_ADDR_SIZE,
        F['body.kvp_ip_val.ip_addr'].offset,
        MAX_IP_ADDR_SIZE,
      );
      toUtf8(
        IPF['kvp_ip_val.sub_net'].offset,
        MAX_IP_ADDR_SIZE,
        F['body.kvp_ip_val.sub_net'].offset,
        MAX_IP_ADDR_SIZE,
      );
      toUtf8(
        IPF['kvp_ip_val.gate_way'].offset,
        MAX_GATEWAY_SIZE,
        F['body.kvp_ip_val.gate_way'].offset,
        MAX_GATEWAY_SIZE,
      );
      toUtf8(
        IPF['kvp_ip_val.dns_addr'].offset,
        MAX_IP_ADDR_SIZE,
        F['body.kvp_ip_val.dns_addr'].offset,
        MAX_IP_ADDR_SIZE,
      );
      msg[F['body.kvp_ip_val.dhcp_enabled'].offset] = host[IPF['kvp_ip_val.dhcp_enabled'].offset] ?? 0;
    }
    toUtf8(
      IPF['kvp_ip_val.adapter_id'].offset,
      MAX_ADAPTER_ID_SIZE,
      F['body.kvp_ip_val.adapter_id'].offset,
      MAX_ADAPTER_ID_SIZE,
    );
    msg[F['body.kvp_ip_val.addr_family'].offset] = host[IPF['kvp_ip_val.addr_family'].offset] ?? 0;
  }

  /** kvp_on_msg: a daemon write. */
  onMsg(msg: Buffer): number {
    if (msg.length < KVP_MSG_SIZE) return -EINVAL;
    if (this.state < HVUTIL_READY) return this.handleHandshake(msg);
    if (this.state < HVUTIL_USERSPACE_REQ) return -EINVAL; // spurious: nothing was asked
    this.state = HVUTIL_USERSPACE_RECV;
    let error: number;
    if (this.dmRegValue === KVP_OP_REGISTER1) error = msg.readUInt32LE(F.error.offset);
    else error = msg[F['body.kvp_enum_data.data.key'].offset] === 0 ? HV_S_CONT : HV_S_OK;
    if (this.timeoutWork.cancel()) {
      this.respondToHost(msg, error);
      this.pollChannel();
    }
    return 0;
  }

  private handleHandshake(msg: Buffer): number {
    const op = msg[F['kvp_hdr.operation'].offset];
    if (op !== KVP_OP_REGISTER && op !== KVP_OP_REGISTER1) {
      this.emit({ type: 'note', text: 'KVP: incompatible daemon' });
      return -EINVAL;
    }
    this.dmRegValue = op;
    const reply = Buffer.alloc(KVP_MSG_SIZE);
    reply[F['kvp_hdr.operation'].offset] = op;
    reply.write(HV_DRV_VERSION, F['body.kvp_register.version'].offset, 'latin1');
    const rc = this.transport.send(reply, () => this.registerDone());
    this.emit({ type: 'queue', length: reply.length, rc });
    return this.registrationReturnsQueueError ? rc : 0;
  }

  /** kvp_register_done: the daemon read the registration reply. */
  private registerDone(): void {
    this.handshakeWork.cancel();
    this.registrationDone();
  }

  onReset(): void {
    if (this.timeoutWork.cancel()) this.respondToHost(undefined, HV_E_FAIL);
    this.state = HVUTIL_DEVICE_INIT;
  }

  private onTimeout(): void {
    this.emit({ type: 'timeout' });
    this.respondToHost(undefined, HV_E_FAIL);
    this.pollChannel();
  }

  /**
   * kvp_respond_to_host: status into the host packet and, on success, the daemon's strings
   * converted into it (GET's value read at the daemon's *enumerate* offset).
   */
  private respondToHost(daemon: Buffer | undefined, error: number): void {
    if (!this.channel) {
      this.emit({ type: 'reply-skipped', reason: 'rescinded' });
      return;
    }
    let status = error >>> 0;
    if (error === 0 && daemon) {
      const host = this.recvBuffer.subarray(ICMSG_HDR);
      const operation = host[F['kvp_hdr.operation'].offset] ?? 0;
      if (operation === KVP_OP_GET_IP_INFO) {
        if (this.daemonIpToHost(daemon, host) < 0) status = HV_E_FAIL;
      } else if (
        operation !== KVP_OP_SET_IP_INFO &&
        operation !== KVP_OP_SET &&
        operation !== KVP_OP_DELETE
      ) {
        const get = operation === KVP_OP_GET;
        const at = get ? GET_DATA : ENUM_DATA;
        let keylen = 0;
        if (!get) {
          keylen = this.toUtf16(daemon, ENUM_DATA.key, host, at.key, HV_KVP_EXCHANGE_MAX_KEY_SIZE / 2 - 2);
          host.writeUInt32LE((2 * (keylen + 1)) >>> 0, at.key_size);
        }
        const valuelen = this.toUtf16(
          daemon,
          ENUM_DATA.value,
          host,
          at.value,
          HV_KVP_EXCHANGE_MAX_VALUE_SIZE / 2 - 2,
        );
        host.writeUInt32LE((2 * (valuelen + 1)) >>> 0, at.value_size);
        if (keylen < 0 || valuelen < 0) status = HV_E_FAIL;
        host.writeUInt32LE(REG_SZ, at.value_type);
      }
    }
    this.respond(status);
  }

  /** utf8s_to_utf16s of the C string at daemon[from] into host[to]; returns units or -EINVAL. */
  private toUtf16(
    daemon: Buffer,
    from: number,
    host: Buffer,
    to: number,
    maxout: number,
    inlen?: number,
  ): number {
    const len = inlen ?? strlen(daemon, from);
    return utf8sToUtf16sInto(daemon.subarray(from), len, maxout, host, to);
  }

  /** process_ob_ipinfo: the daemon's IP strings into the host's struct hv_kvp_ip_msg. */
  private daemonIpToHost(daemon: Buffer, host: Buffer): number {
    const pairs: [keyof typeof F, keyof typeof IPF, number][] = [
      ['body.kvp_ip_val.ip_addr', 'kvp_ip_val.ip_addr', MAX_IP_ADDR_SIZE],
      ['body.kvp_ip_val.sub_net', 'kvp_ip_val.sub_net', MAX_IP_ADDR_SIZE],
      ['body.kvp_ip_val.gate_way', 'kvp_ip_val.gate_way', MAX_GATEWAY_SIZE],
      ['body.kvp_ip_val.dns_addr', 'kvp_ip_val.dns_addr', MAX_IP_ADDR_SIZE],
      ['body.kvp_ip_val.adapter_id', 'kvp_ip_val.adapter_id', MAX_ADAPTER_ID_SIZE],
    ];
    for (const [from, to, max] of pairs) {
      const r = this.toUtf16(daemon, F[from].offset, host, IPF[to].offset, max, max);
      if (r < 0) return r;
    }
    host[IPF['kvp_ip_val.dhcp_enabled'].offset] = daemon[F['body.kvp_ip_val.dhcp_enabled'].offset] ?? 0;
    host[IPF['kvp_ip_val.addr_family'].offset] = daemon[F['body.kvp_ip_val.addr_family'].offset] ?? 0;
    return 0;
  }

  protected onPreSuspend(): void {
    // The pending transaction, if any, fails implicitly when the channel closes: no reply here.
    this.cancelAllWork();
  }

  protected cancelAllWork(): void {
    this.handshakeWork.cancel();
    this.timeoutWork.cancel();
    this.sendKeyWork.cancel();
  }
}
