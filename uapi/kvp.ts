/**
 * struct hv_kvp_msg and struct hv_kvp_ip_msg codecs (include/uapi/linux/hyperv.h).
 *
 * Two formats share these structs:
 *  - the device format, between the kernel and the daemon on /dev/vmbus/hv_kvp: always 7432 bytes,
 *    strings in UTF-8, the reply's status in the 4-byte `error` that overlays the header, and
 *    GET replies read by the kernel at the *enumerate* offsets (key at 20, value at 532);
 *  - the host format, the KVP message inside the host's IC packet: strings in UTF-16LE, REG_U32 and
 *    REG_U64 values as integers, IP operations in struct hv_kvp_ip_msg (2-byte header), and the
 *    host's status outside the message (in icmsg_hdr).
 */
import {
  KVP_OP_DELETE,
  KVP_OP_ENUMERATE,
  KVP_OP_GET,
  KVP_OP_GET_IP_INFO,
  KVP_OP_REGISTER1,
  KVP_OP_SET,
  KVP_OP_SET_IP_INFO,
  REG_SZ,
  REG_U32,
  REG_U64,
} from './constants.js';
import { type Field, HV_KVP_IP_MSG, HV_KVP_MSG } from './layout.js';
import { type DecodeResult, asBuffer, fail, ok } from './result.js';
import { type StringEncoding, readStringField, writeStringField } from './strings.js';

const F = HV_KVP_MSG.fields;
const IPF = HV_KVP_IP_MSG.fields;

/** sizeof(struct hv_kvp_msg): every device message, in both directions, has this length. */
export const KVP_MSG_SIZE = HV_KVP_MSG.size;

/** The IP configuration record (struct hv_kvp_ipaddr_value). Lists are `;`-separated text. */
export interface KvpIpInfo {
  readonly adapterId: string;
  readonly addrFamily: number;
  readonly dhcpEnabled: number;
  readonly ipAddr: string;
  readonly subNet: string;
  readonly gateWay: string;
  readonly dnsAddr: string;
}

export const EMPTY_IP_INFO: KvpIpInfo = Object.freeze({
  adapterId: '',
  addrFamily: 0,
  dhcpEnabled: 0,
  ipAddr: '',
  subNet: '',
  gateWay: '',
  dnsAddr: '',
});

/** A kernel-to-daemon message on /dev/vmbus/hv_kvp. */
export type KvpRequest =
  | { readonly operation: typeof KVP_OP_GET; readonly pool: number; readonly key: string }
  | {
      readonly operation: typeof KVP_OP_SET;
      readonly pool: number;
      readonly key: string;
      readonly value: string;
      /** The kernel does not pass the host's type on: 0 in practice, values arrive as text. */
      readonly valueType: number;
    }
  | { readonly operation: typeof KVP_OP_DELETE; readonly pool: number; readonly key: string }
  | { readonly operation: typeof KVP_OP_ENUMERATE; readonly pool: number; readonly index: number }
  | { readonly operation: typeof KVP_OP_GET_IP_INFO; readonly pool: number; readonly ip: KvpIpInfo }
  | { readonly operation: typeof KVP_OP_SET_IP_INFO; readonly pool: number; readonly ip: KvpIpInfo }
  /** The kernel's answer to KVP_OP_REGISTER1: its protocol version string ("3.1"). */
  | { readonly operation: typeof KVP_OP_REGISTER1; readonly pool: number; readonly version: string };

/**
 * A daemon-to-kernel reply. `error` is the status the host receives. The kernel reads the body
 * only when `error` is 0: key/value for GET and ENUMERATE, `ip` for GET_IP_INFO.
 */
export interface KvpReply {
  readonly operation: number;
  readonly error: number;
  readonly key?: string;
  readonly value?: string;
  readonly ip?: KvpIpInfo;
}

/** A KVP message in the host's format (request as sent, or as the kernel filled it in). */
export type KvpHostMessage =
  | {
      readonly operation: typeof KVP_OP_GET | typeof KVP_OP_SET;
      readonly pool: number;
      readonly key: string;
      readonly value: string;
      readonly valueType: number;
    }
  | { readonly operation: typeof KVP_OP_DELETE; readonly pool: number; readonly key: string }
  | {
      readonly operation: typeof KVP_OP_ENUMERATE;
      readonly pool: number;
      readonly index: number;
      readonly key: string;
      readonly value: string;
      readonly valueType: number;
    }
  | {
      readonly operation: typeof KVP_OP_GET_IP_INFO | typeof KVP_OP_SET_IP_INFO;
      readonly pool: number;
      readonly ip: KvpIpInfo;
    };

// ---------------------------------------------------------------------------------------------
// shared body pieces

interface ValueFields {
  valueType: Field;
  keySize: Field;
  valueSize: Field;
  key: Field;
  value: Field;
}

const SET_FIELDS: ValueFields = {
  valueType: F['body.kvp_set.data.value_type'],
  keySize: F['body.kvp_set.data.key_size'],
  valueSize: F['body.kvp_set.data.value_size'],
  key: F['body.kvp_set.data.key'],
  value: F['body.kvp_set.data.value'],
};
const GET_FIELDS: ValueFields = {
  valueType: F['body.kvp_get.data.value_type'],
  keySize: F['body.kvp_get.data.key_size'],
  valueSize: F['body.kvp_get.data.value_size'],
  key: F['body.kvp_get.data.key'],
  value: F['body.kvp_get.data.value'],
};
const ENUM_FIELDS: ValueFields = {
  valueType: F['body.kvp_enum_data.data.value_type'],
  keySize: F['body.kvp_enum_data.data.key_size'],
  valueSize: F['body.kvp_enum_data.data.value_size'],
  key: F['body.kvp_enum_data.data.key'],
  value: F['body.kvp_enum_data.data.value'],
};

interface IpFields {
  adapterId: Field;
  addrFamily: Field;
  dhcpEnabled: Field;
  ipAddr: Field;
  subNet: Field;
  gateWay: Field;
  dnsAddr: Field;
}

const DEVICE_IP: IpFields = {
  adapterId: F['body.kvp_ip_val.adapter_id'],
  addrFamily: F['body.kvp_ip_val.addr_family'],
  dhcpEnabled: F['body.kvp_ip_val.dhcp_enabled'],
  ipAddr: F['body.kvp_ip_val.ip_addr'],
  subNet: F['body.kvp_ip_val.sub_net'],
  gateWay: F['body.kvp_ip_val.gate_way'],
  dnsAddr: F['body.kvp_ip_val.dns_addr'],
};
const HOST_IP: IpFields = {
  adapterId: IPF['kvp_ip_val.adapter_id'],
  addrFamily: IPF['kvp_ip_val.addr_family'],
  dhcpEnabled: IPF['kvp_ip_val.dhcp_enabled'],
  ipAddr: IPF['kvp_ip_val.ip_addr'],
  subNet: IPF['kvp_ip_val.sub_net'],
  gateWay: IPF['kvp_ip_val.gate_way'],
  dnsAddr: IPF['kvp_ip_val.dns_addr'],
};

const IP_STRINGS = ['adapterId', 'ipAddr', 'subNet', 'gateWay', 'dnsAddr'] as const;

function byte(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xff) throw new RangeError(`${what} must be 0..255`);
  return value;
}

function u32(value: number, what: string): number {
  if (!Number.isInteger(value) || value < -0x80000000 || value > 0xffffffff) {
    throw new RangeError(`${what} must fit in 32 bits`);
  }
  return value >>> 0;
}

function writeIp(buf: Buffer, f: IpFields, ip: KvpIpInfo, enc: StringEncoding): void {
  for (const name of IP_STRINGS) writeStringField(buf, f[name], ip[name], enc);
  buf[f.addrFamily.offset] = byte(ip.addrFamily, 'addrFamily');
  buf[f.dhcpEnabled.offset] = byte(ip.dhcpEnabled, 'dhcpEnabled');
}

function readIp(buf: Buffer, f: IpFields, enc: StringEncoding, prefix: string): DecodeResult<KvpIpInfo> {
  const out: Record<string, string | number> = {
    addrFamily: buf[f.addrFamily.offset] ?? 0,
    dhcpEnabled: buf[f.dhcpEnabled.offset] ?? 0,
  };
  for (const name of IP_STRINGS) {
    const cName = {
      adapterId: 'adapter_id',
      ipAddr: 'ip_addr',
      subNet: 'sub_net',
      gateWay: 'gate_way',
      dnsAddr: 'dns_addr',
    }[name];
    const r = readStringField(buf, f[name], enc, `${prefix}.${cName}`);
    if (!r.ok) return r;
    out[name] = r.value;
  }
  return ok(out as unknown as KvpIpInfo);
}

/** key_size/value_size as the kernel computes them: encoded bytes including the terminator. */
function writeKeyValue(
  buf: Buffer,
  f: ValueFields,
  key: string,
  value: string,
  valueType: number,
  enc: StringEncoding,
): void {
  const unit = enc === 'utf8' ? 1 : 2;
  buf.writeUInt32LE(u32(valueType, 'valueType'), f.valueType.offset);
  buf.writeUInt32LE(writeStringField(buf, f.key, key, enc) + unit, f.keySize.offset);
  if (enc === 'utf16le' && (valueType === REG_U32 || valueType === REG_U64)) {
    // Host format: integer values sit at the start of the value union.
    buf.fill(0, f.value.offset, f.value.offset + f.value.size);
    if (!/^\d+$/.test(value)) throw new RangeError(`a REG_U${valueType * 8} value must be decimal text`);
    if (valueType === REG_U32) buf.writeUInt32LE(u32(Number(value), 'value'), f.value.offset);
    else buf.writeBigUInt64LE(BigInt.asUintN(64, BigInt(value)), f.value.offset);
    buf.writeUInt32LE(valueType === REG_U32 ? 4 : 8, f.valueSize.offset);
    return;
  }
  buf.writeUInt32LE(writeStringField(buf, f.value, value, enc) + unit, f.valueSize.offset);
}

function readKeyValue(
  buf: Buffer,
  f: ValueFields,
  enc: StringEncoding,
  prefix: string,
): DecodeResult<{ key: string; value: string; valueType: number }> {
  const valueType = buf.readUInt32LE(f.valueType.offset);
  const key = readStringField(buf, f.key, enc, `${prefix}.key`);
  if (!key.ok) return key;
  let value: string;
  if (enc === 'utf16le' && valueType === REG_U32) value = String(buf.readUInt32LE(f.value.offset));
  else if (enc === 'utf16le' && valueType === REG_U64) value = String(buf.readBigUInt64LE(f.value.offset));
  else {
    const v = readStringField(buf, f.value, enc, `${prefix}.value`);
    if (!v.ok) return v;
    value = v.value;
  }
  return ok({ key: key.value, value, valueType });
}

function tooShort<T>(buf: Buffer, need: number, what: string): DecodeResult<T> | undefined {
  return buf.length < need
    ? fail('too-short', `${what}: ${buf.length} bytes, at least ${need} expected`)
    : undefined;
}

// ---------------------------------------------------------------------------------------------
// device format: kernel <-> daemon

/** Encode a kernel-to-daemon message (the kernel-shim's side), 7432 bytes. */
export function encodeKvpRequest(req: KvpRequest): Buffer {
  const buf = Buffer.alloc(KVP_MSG_SIZE);
  buf[F['kvp_hdr.operation'].offset] = byte(req.operation, 'operation');
  buf[F['kvp_hdr.pool'].offset] = byte(req.pool, 'pool');
  switch (req.operation) {
    case KVP_OP_GET:
      buf.writeUInt32LE(
        writeStringField(buf, GET_FIELDS.key, req.key, 'utf8') + 1,
        GET_FIELDS.keySize.offset,
      );
      break;
    case KVP_OP_SET:
      writeKeyValue(buf, SET_FIELDS, req.key, req.value, req.valueType, 'utf8');
      break;
    case KVP_OP_DELETE: {
      const n = writeStringField(buf, F['body.kvp_delete.key'], req.key, 'utf8');
      buf.writeUInt32LE(n + 1, F['body.kvp_delete.key_size'].offset);
      break;
    }
    case KVP_OP_ENUMERATE:
      buf.writeUInt32LE(u32(req.index, 'index'), F['body.kvp_enum_data.index'].offset);
      break;
    case KVP_OP_GET_IP_INFO:
    case KVP_OP_SET_IP_INFO:
      writeIp(buf, DEVICE_IP, req.ip, 'utf8');
      break;
    case KVP_OP_REGISTER1:
      writeStringField(buf, F['body.kvp_register.version'], req.version, 'utf8');
      break;
  }
  return buf;
}

/** Decode a kernel-to-daemon message read from /dev/vmbus/hv_kvp. Never throws. */
export function decodeKvpRequest(bytes: Uint8Array): DecodeResult<KvpRequest> {
  const buf = asBuffer(bytes);
  const short = tooShort<KvpRequest>(buf, KVP_MSG_SIZE, 'struct hv_kvp_msg');
  if (short) return short;
  const operation = buf[F['kvp_hdr.operation'].offset] ?? 0;
  const pool = buf[F['kvp_hdr.pool'].offset] ?? 0;
  const withOp = <T>(r: DecodeResult<T>): DecodeResult<T> =>
    r.ok ? r : { ok: false, error: { ...r.error, operation } };
  switch (operation) {
    case KVP_OP_GET: {
      const key = withOp(readStringField(buf, GET_FIELDS.key, 'utf8', 'body.kvp_get.data.key'));
      return key.ok ? ok({ operation, pool, key: key.value }) : key;
    }
    case KVP_OP_SET: {
      const kv = withOp(readKeyValue(buf, SET_FIELDS, 'utf8', 'body.kvp_set.data'));
      return kv.ok ? ok({ operation, pool, ...kv.value }) : kv;
    }
    case KVP_OP_DELETE: {
      const key = withOp(readStringField(buf, F['body.kvp_delete.key'], 'utf8', 'body.kvp_delete.key'));
      return key.ok ? ok({ operation, pool, key: key.value }) : key;
    }
    case KVP_OP_ENUMERATE:
      return ok({ operation, pool, index: buf.readUInt32LE(F['body.kvp_enum_data.index'].offset) });
    case KVP_OP_GET_IP_INFO:
    case KVP_OP_SET_IP_INFO: {
      const ip = withOp(readIp(buf, DEVICE_IP, 'utf8', 'body.kvp_ip_val'));
      return ip.ok ? ok({ operation, pool, ip: ip.value }) : ip;
    }
    case KVP_OP_REGISTER1: {
      const v = withOp(
        readStringField(buf, F['body.kvp_register.version'], 'utf8', 'body.kvp_register.version'),
      );
      return v.ok ? ok({ operation, pool, version: v.value }) : v;
    }
    default:
      return fail('unknown-operation', `struct hv_kvp_msg: unknown operation ${operation}`, {
        field: 'kvp_hdr.operation',
        operation,
      });
  }
}

/**
 * The daemon's registration message: 7432 bytes whose first byte is KVP_OP_REGISTER1 (or the
 * legacy KVP_OP_REGISTER), all others zero.
 */
export function encodeKvpRegister(operation: number = KVP_OP_REGISTER1): Buffer {
  const buf = Buffer.alloc(KVP_MSG_SIZE);
  buf[F['kvp_hdr.operation'].offset] = byte(operation, 'operation');
  return buf;
}

/**
 * Encode a daemon-to-kernel reply, 7432 bytes, `error` in bytes 0..3. With `into` (at least 7432
 * bytes), the reply is written there, zero-filled first, and a view of it is returned.
 */
export function encodeKvpReply(reply: KvpReply, into?: Buffer): Buffer {
  const buf = !into
    ? Buffer.alloc(KVP_MSG_SIZE)
    : (into.length === KVP_MSG_SIZE ? into : into.subarray(0, KVP_MSG_SIZE)).fill(0);
  if (buf.length < KVP_MSG_SIZE) throw new RangeError(`a KVP reply needs ${KVP_MSG_SIZE} bytes`);
  buf.writeUInt32LE(u32(reply.error, 'error'), F.error.offset);
  switch (reply.operation) {
    case KVP_OP_GET:
    case KVP_OP_ENUMERATE:
      // The kernel reads both replies at the enumerate offsets (see the module comment).
      if (reply.key !== undefined || reply.value !== undefined) {
        writeKeyValue(buf, ENUM_FIELDS, reply.key ?? '', reply.value ?? '', REG_SZ, 'utf8');
      }
      break;
    case KVP_OP_GET_IP_INFO:
      if (reply.ip) writeIp(buf, DEVICE_IP, reply.ip, 'utf8');
      break;
  }
  return buf;
}

/**
 * Decode a daemon's reply to `operation` (the kernel-shim's side: there is no operation in a
 * reply, the kernel knows what it asked). The body is decoded only when `error` is 0.
 */
export function decodeKvpReply(bytes: Uint8Array, operation: number): DecodeResult<KvpReply> {
  const buf = asBuffer(bytes);
  const short = tooShort<KvpReply>(buf, KVP_MSG_SIZE, 'struct hv_kvp_msg');
  if (short) return short;
  const error = buf.readUInt32LE(F.error.offset);
  if (error !== 0) return ok({ operation, error });
  switch (operation) {
    case KVP_OP_GET:
    case KVP_OP_ENUMERATE: {
      const kv = readKeyValue(buf, ENUM_FIELDS, 'utf8', 'body.kvp_enum_data.data');
      return kv.ok ? ok({ operation, error, key: kv.value.key, value: kv.value.value }) : kv;
    }
    case KVP_OP_GET_IP_INFO: {
      const ip = readIp(buf, DEVICE_IP, 'utf8', 'body.kvp_ip_val');
      return ip.ok ? ok({ operation, error, ip: ip.value }) : ip;
    }
    case KVP_OP_SET:
    case KVP_OP_DELETE:
    case KVP_OP_SET_IP_INFO:
      return ok({ operation, error });
    default:
      return fail('unknown-operation', `reply to unknown KVP operation ${operation}`, { operation });
  }
}

// ---------------------------------------------------------------------------------------------
// host format: the KVP message inside the host's IC packet

/** Bytes a host message of this operation needs (the end of its last field). */
export function kvpHostMessageLength(operation: number): number {
  switch (operation) {
    case KVP_OP_GET:
    case KVP_OP_SET:
      return F['body.kvp_set.data.value'].offset + F['body.kvp_set.data.value'].size;
    case KVP_OP_DELETE:
      return F['body.kvp_delete.key'].offset + F['body.kvp_delete.key'].size;
    case KVP_OP_ENUMERATE:
      return F['body.kvp_enum_data.data.value'].offset + F['body.kvp_enum_data.data.value'].size;
    case KVP_OP_GET_IP_INFO:
    case KVP_OP_SET_IP_INFO:
      return HV_KVP_IP_MSG.size;
    default:
      return F['kvp_hdr.pad'].offset + F['kvp_hdr.pad'].size;
  }
}

/** Encode a host-format KVP message (UTF-16LE strings; IP operations as struct hv_kvp_ip_msg). */
export function encodeKvpHostMessage(msg: KvpHostMessage): Buffer {
  const buf = Buffer.alloc(kvpHostMessageLength(msg.operation));
  switch (msg.operation) {
    case KVP_OP_GET:
    case KVP_OP_SET:
      writeKeyValue(buf, SET_FIELDS, msg.key, msg.value, msg.valueType, 'utf16le');
      break;
    case KVP_OP_DELETE: {
      const n = writeStringField(buf, F['body.kvp_delete.key'], msg.key, 'utf16le');
      buf.writeUInt32LE(n + 2, F['body.kvp_delete.key_size'].offset);
      break;
    }
    case KVP_OP_ENUMERATE:
      buf.writeUInt32LE(u32(msg.index, 'index'), F['body.kvp_enum_data.index'].offset);
      writeKeyValue(buf, ENUM_FIELDS, msg.key, msg.value, msg.valueType, 'utf16le');
      break;
    case KVP_OP_GET_IP_INFO:
    case KVP_OP_SET_IP_INFO:
      buf[IPF.operation.offset] = byte(msg.operation, 'operation');
      buf[IPF.pool.offset] = byte(msg.pool, 'pool');
      writeIp(buf, HOST_IP, msg.ip, 'utf16le');
      return buf;
  }
  buf[F['kvp_hdr.operation'].offset] = byte(msg.operation, 'operation');
  buf[F['kvp_hdr.pool'].offset] = byte(msg.pool, 'pool');
  return buf;
}

/** Decode a host-format KVP message. Never throws. */
export function decodeKvpHostMessage(bytes: Uint8Array): DecodeResult<KvpHostMessage> {
  const buf = asBuffer(bytes);
  const head = tooShort<KvpHostMessage>(buf, 2, 'host KVP message');
  if (head) return head;
  const operation = buf[F['kvp_hdr.operation'].offset] ?? 0;
  const pool = buf[F['kvp_hdr.pool'].offset] ?? 0;
  if (operation > KVP_OP_SET_IP_INFO) {
    return fail('unknown-operation', `host KVP message: unknown operation ${operation}`, {
      field: 'kvp_hdr.operation',
      operation,
    });
  }
  const need = kvpHostMessageLength(operation);
  if (buf.length < need) {
    return fail(
      'too-short',
      `host KVP operation ${operation}: ${buf.length} bytes, at least ${need} expected`,
      {
        operation,
      },
    );
  }
  switch (operation) {
    case KVP_OP_GET:
    case KVP_OP_SET: {
      const kv = readKeyValue(buf, SET_FIELDS, 'utf16le', 'body.kvp_set.data');
      return kv.ok ? ok({ operation, pool, ...kv.value }) : kv;
    }
    case KVP_OP_DELETE: {
      const key = readStringField(buf, F['body.kvp_delete.key'], 'utf16le', 'body.kvp_delete.key');
      return key.ok ? ok({ operation, pool, key: key.value }) : key;
    }
    case KVP_OP_ENUMERATE: {
      const kv = readKeyValue(buf, ENUM_FIELDS, 'utf16le', 'body.kvp_enum_data.data');
      const index = buf.readUInt32LE(F['body.kvp_enum_data.index'].offset);
      return kv.ok ? ok({ operation, pool, index, ...kv.value }) : kv;
    }
    default: {
      const ip = readIp(buf, HOST_IP, 'utf16le', 'kvp_ip_val');
      return ip.ok ? ok({ operation: operation as 4 | 5, pool, ip: ip.value }) : ip;
    }
  }
}
