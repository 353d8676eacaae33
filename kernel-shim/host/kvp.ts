/**
 * What a Hyper-V administrator (or Azure's fabric) does with KVP, as calls: add, modify, remove and
 * read items of the external pool, list the guest's items (pool 1) and the intrinsic items (auto
 * pool), read and set a network adapter's IP configuration. Every call resolves with what the host
 * sees: the status and the values the guest returned.
 */
import {
  HV_S_OK,
  KVP_OP_DELETE,
  KVP_OP_ENUMERATE,
  KVP_OP_GET,
  KVP_OP_GET_IP_INFO,
  KVP_OP_SET,
  KVP_OP_SET_IP_INFO,
  KVP_POOL_AUTO,
  KVP_POOL_EXTERNAL,
  KVP_POOL_GUEST,
  REG_SZ,
  statusName,
} from '../../uapi/constants.js';
import {
  EMPTY_IP_INFO,
  type KvpHostMessage,
  type KvpIpInfo,
  decodeKvpHostMessage,
  encodeKvpHostMessage,
} from '../../uapi/kvp.js';
import { ICMSGTYPE_KVPEXCHANGE } from '../channel/icmsg.js';
import { KVP_FW_VERSIONS, KVP_SRV_VERSIONS } from '../channel/negotiate.js';
import type { Clock } from '../clock.js';
import type { ShimDevice } from '../device.js';
import { IcClient, type IcReply } from './ic-client.js';

export interface HostResult {
  readonly status: number;
  /** e.g. `HV_S_CONT (0x80070103)`. */
  readonly statusName: string;
}
export interface KvpItemResult extends HostResult {
  readonly key: string;
  readonly value: string;
}
export interface KvpIpResult extends HostResult {
  readonly ip: KvpIpInfo;
}

export class KvpHost {
  readonly ic: IcClient;

  constructor(device: ShimDevice, clock: Clock, timeoutMs?: number) {
    this.ic = new IcClient(device, {
      clock,
      msgType: ICMSGTYPE_KVPEXCHANGE,
      fwVersions: KVP_FW_VERSIONS,
      srvVersions: KVP_SRV_VERSIONS,
      ...(timeoutMs ? { timeoutMs } : {}),
    });
  }

  /** Add-VMKvpItem / Set: put `key` = `value` in a pool (default: the external pool, 0). */
  async addItem(
    key: string,
    value: string,
    opts: { pool?: number; valueType?: number } = {},
  ): Promise<HostResult> {
    const reply = await this.send({
      operation: KVP_OP_SET,
      pool: opts.pool ?? KVP_POOL_EXTERNAL,
      key,
      value,
      valueType: opts.valueType ?? REG_SZ,
    });
    return result(reply);
  }

  /** Modify an item: the same SET operation on an existing key. */
  modifyItem(
    key: string,
    value: string,
    opts: { pool?: number; valueType?: number } = {},
  ): Promise<HostResult> {
    return this.addItem(key, value, opts);
  }

  /** Remove an item (DELETE). */
  async removeItem(key: string, opts: { pool?: number } = {}): Promise<HostResult> {
    return result(await this.send({ operation: KVP_OP_DELETE, pool: opts.pool ?? KVP_POOL_EXTERNAL, key }));
  }

  /** GET one item's value. */
  async getItem(key: string, opts: { pool?: number } = {}): Promise<KvpItemResult> {
    const reply = await this.send({
      operation: KVP_OP_GET,
      pool: opts.pool ?? KVP_POOL_EXTERNAL,
      key,
      value: '',
      valueType: 0,
    });
    const msg = decodeBody(reply);
    return { ...result(reply), key, value: msg && 'value' in msg ? msg.value : '' };
  }

  /** ENUMERATE one index of a pool. */
  async enumerate(pool: number, index: number): Promise<KvpItemResult> {
    const reply = await this.send({
      operation: KVP_OP_ENUMERATE,
      pool,
      index,
      key: '',
      value: '',
      valueType: 0,
    });
    const msg = decodeBody(reply);
    const ok = reply.status === HV_S_OK && msg && 'key' in msg;
    return { ...result(reply), key: ok ? msg.key : '', value: ok && 'value' in msg ? msg.value : '' };
  }

  /** Every item of a pool, by enumerating from index 0 until the guest answers non-zero. */
  async listItems(
    pool: number,
    max = 100_000,
  ): Promise<{ items: { key: string; value: string }[]; endStatus: number }> {
    const items: { key: string; value: string }[] = [];
    for (let index = 0; index < max; index++) {
      const r = await this.enumerate(pool, index);
      if (r.status !== HV_S_OK) return { items, endStatus: r.status };
      items.push({ key: r.key, value: r.value });
    }
    return { items, endStatus: HV_S_OK };
  }

  /** The guest's own items (pool 1), as Hyper-V Manager reads them. */
  guestItems(): ReturnType<KvpHost['listItems']> {
    return this.listItems(KVP_POOL_GUEST);
  }

  /** The intrinsic items (auto pool): FQDN, OS name and version, IP addresses, … */
  intrinsicItems(): ReturnType<KvpHost['listItems']> {
    return this.listItems(KVP_POOL_AUTO);
  }

  /** GET_IP_INFO for the adapter with this MAC address (e.g. `00:15:5D:01:02:03`). */
  async getIpConfiguration(adapterId: string, addrFamily = 0): Promise<KvpIpResult> {
    const reply = await this.send({
      operation: KVP_OP_GET_IP_INFO,
      pool: 0,
      ip: { ...EMPTY_IP_INFO, adapterId, addrFamily },
    });
    const msg = decodeBody(reply);
    return { ...result(reply), ip: msg && 'ip' in msg ? msg.ip : EMPTY_IP_INFO };
  }

  /** SET_IP_INFO for the adapter with this VMBus device id (e.g. `{…}`). */
  async setIpConfiguration(ip: KvpIpInfo): Promise<HostResult> {
    return result(await this.send({ operation: KVP_OP_SET_IP_INFO, pool: 0, ip }));
  }

  private send(msg: KvpHostMessage): Promise<IcReply> {
    const names = ['GET', 'SET', 'DELETE', 'ENUMERATE', 'GET_IP_INFO', 'SET_IP_INFO'];
    return this.ic.request(encodeKvpHostMessage(msg), `KVP ${names[msg.operation] ?? msg.operation}`);
  }
}

function result(reply: IcReply): HostResult {
  return { status: reply.status, statusName: statusName(reply.status) };
}

function decodeBody(reply: IcReply): KvpHostMessage | undefined {
  const r = decodeKvpHostMessage(reply.body);
  return r.ok ? r.value : undefined;
}
