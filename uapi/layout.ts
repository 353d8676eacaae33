/**
 * Byte layouts of the UAPI structs, as tables. The codecs read every offset and size from these
 * tables and nowhere else, and test/uapi/layout.test.ts compiles a C program against the system's
 * <linux/hyperv.h> that prints sizeof/offsetof for every entry, so a wrong number here cannot
 * survive the test suite.
 *
 * Field names are C member designators, exactly as `offsetof(struct <name>, <field>)` takes them.
 * All structs are packed (alignment 1); integers are little-endian on x86_64 and arm64.
 */

/** One member of a struct: where it starts and how many bytes it spans. */
export interface Field {
  readonly offset: number;
  readonly size: number;
}

/** A struct's C name, its sizeof, and the members the codecs use. */
export interface Struct<F extends string = string> {
  readonly name: string;
  readonly size: number;
  readonly fields: Readonly<Record<F, Field>>;
}

function struct<F extends string>(
  name: string,
  size: number,
  fields: Record<F, readonly [offset: number, size: number]>,
): Struct<F> {
  const out = {} as Record<F, Field>;
  for (const key of Object.keys(fields) as F[]) {
    const [offset, bytes] = fields[key];
    if (offset + bytes > size) throw new Error(`layout: ${name}.${key} runs past the struct`);
    out[key] = Object.freeze({ offset, size: bytes });
  }
  return Object.freeze({ name, size, fields: Object.freeze(out) });
}

/** struct hv_kvp_msg: 4-byte header (or the reply's `error`) and a 7428-byte body union. */
export const HV_KVP_MSG = struct('hv_kvp_msg', 7432, {
  'kvp_hdr.operation': [0, 1],
  'kvp_hdr.pool': [1, 1],
  'kvp_hdr.pad': [2, 2],
  error: [0, 4],
  body: [4, 7428],
  'body.kvp_set.data.value_type': [4, 4],
  'body.kvp_set.data.key_size': [8, 4],
  'body.kvp_set.data.value_size': [12, 4],
  'body.kvp_set.data.key': [16, 512],
  'body.kvp_set.data.value': [528, 2048],
  'body.kvp_set.data.value_u32': [528, 4],
  'body.kvp_set.data.value_u64': [528, 8],
  'body.kvp_get.data.value_type': [4, 4],
  'body.kvp_get.data.key_size': [8, 4],
  'body.kvp_get.data.value_size': [12, 4],
  'body.kvp_get.data.key': [16, 512],
  'body.kvp_get.data.value': [528, 2048],
  'body.kvp_delete.key_size': [4, 4],
  'body.kvp_delete.key': [8, 512],
  'body.kvp_enum_data.index': [4, 4],
  'body.kvp_enum_data.data.value_type': [8, 4],
  'body.kvp_enum_data.data.key_size': [12, 4],
  'body.kvp_enum_data.data.value_size': [16, 4],
  'body.kvp_enum_data.data.key': [20, 512],
  'body.kvp_enum_data.data.value': [532, 2048],
  'body.kvp_ip_val': [4, 7426],
  'body.kvp_ip_val.adapter_id': [4, 256],
  'body.kvp_ip_val.addr_family': [260, 1],
  'body.kvp_ip_val.dhcp_enabled': [261, 1],
  'body.kvp_ip_val.ip_addr': [262, 2048],
  'body.kvp_ip_val.sub_net': [2310, 2048],
  'body.kvp_ip_val.gate_way': [4358, 1024],
  'body.kvp_ip_val.dns_addr': [5382, 2048],
  'body.kvp_register.version': [4, 512],
});

/** struct hv_kvp_ip_msg: the host's IP-info message (2-byte header, then the IP record). */
export const HV_KVP_IP_MSG = struct('hv_kvp_ip_msg', 7428, {
  operation: [0, 1],
  pool: [1, 1],
  kvp_ip_val: [2, 7426],
  'kvp_ip_val.adapter_id': [2, 256],
  'kvp_ip_val.addr_family': [258, 1],
  'kvp_ip_val.dhcp_enabled': [259, 1],
  'kvp_ip_val.ip_addr': [260, 2048],
  'kvp_ip_val.sub_net': [2308, 2048],
  'kvp_ip_val.gate_way': [4356, 1024],
  'kvp_ip_val.dns_addr': [5380, 2048],
});

/** struct hv_vss_msg: operation byte (or the reply's `error`) and a flags word. */
export const HV_VSS_MSG = struct('hv_vss_msg', 12, {
  'vss_hdr.operation': [0, 1],
  'vss_hdr.reserved': [1, 7],
  error: [0, 4],
  'vss_cf.flags': [8, 4],
  'dm_info.flags': [8, 4],
});

/** struct hv_fcopy_hdr: the operation word that starts every fcopy message. */
export const HV_FCOPY_HDR = struct('hv_fcopy_hdr', 36, {
  operation: [0, 4],
  service_id0: [4, 16],
  service_id1: [20, 16],
});

/** struct hv_start_fcopy: START_FILE_COPY with the target name, directory, flags and size. */
export const HV_START_FCOPY = struct('hv_start_fcopy', 1088, {
  'hdr.operation': [0, 4],
  file_name: [36, 520],
  path_name: [556, 520],
  copy_flags: [1076, 4],
  file_size: [1080, 8],
});

/** struct hv_do_fcopy: WRITE_TO_FILE with one fragment of at most DATA_FRAGMENT bytes. */
export const HV_DO_FCOPY = struct('hv_do_fcopy', 6196, {
  'hdr.operation': [0, 4],
  pad: [36, 4],
  offset: [40, 8],
  size: [48, 4],
  data: [52, 6144],
});

/** Every table above, for the layout test. */
export const UAPI_STRUCTS: readonly Struct[] = [
  HV_KVP_MSG,
  HV_KVP_IP_MSG,
  HV_VSS_MSG,
  HV_FCOPY_HDR,
  HV_START_FCOPY,
  HV_DO_FCOPY,
];
