/**
 * Constants of include/uapi/linux/hyperv.h, plus the few kernel-side and errno values the daemons
 * need. Every constant listed in {@link UAPI_HEADER_CONSTANTS} is compared with the system's own
 * <linux/hyperv.h> by test/uapi/layout.test.ts; the others are documented at their definition.
 */

// --- framework versions (UTIL_FW_VERSION is (major << 16) | minor)
export const UTIL_FW_VERSION = 0x00030000;
export const UTIL_WS2K8_FW_VERSION = 0x00010000;

// --- status codes written into icmsg_hdr.status (and the daemons' `error` word)
export const HV_S_OK = 0x00000000;
export const HV_E_FAIL = 0x80004005;
export const HV_S_CONT = 0x80070103;
export const HV_ERROR_NOT_SUPPORTED = 0x80070032;
export const HV_ERROR_MACHINE_LOCKED = 0x800704f7;
export const HV_ERROR_DEVICE_NOT_CONNECTED = 0x8007048f;
export const HV_INVALIDARG = 0x80070057;
export const HV_GUID_NOTFOUND = 0x80041002;
export const HV_ERROR_ALREADY_EXISTS = 0x80070050;
export const HV_ERROR_DISK_FULL = 0x80070070;

// --- KVP
export const KVP_OP_GET = 0;
export const KVP_OP_SET = 1;
export const KVP_OP_DELETE = 2;
export const KVP_OP_ENUMERATE = 3;
export const KVP_OP_GET_IP_INFO = 4;
export const KVP_OP_SET_IP_INFO = 5;
export const KVP_OP_COUNT = 6;
/** Legacy registration; numerically equal to KVP_OP_GET_IP_INFO (an accident the header admits). */
export const KVP_OP_REGISTER = 4;
export const KVP_OP_REGISTER1 = 100;

export const KVP_POOL_EXTERNAL = 0;
export const KVP_POOL_GUEST = 1;
export const KVP_POOL_AUTO = 2;
export const KVP_POOL_AUTO_EXTERNAL = 3;
export const KVP_POOL_AUTO_INTERNAL = 4;
export const KVP_POOL_COUNT = 5;

export const HV_KVP_EXCHANGE_MAX_KEY_SIZE = 512;
export const HV_KVP_EXCHANGE_MAX_VALUE_SIZE = 2048;

export const REG_SZ = 1;
export const REG_U32 = 4;
export const REG_U64 = 8;

export const ADDR_FAMILY_NONE = 0x00;
export const ADDR_FAMILY_IPV4 = 0x01;
export const ADDR_FAMILY_IPV6 = 0x02;

/** Sizes of the IP fields in UTF-16 units (the fields are __u16 arrays). */
export const MAX_ADAPTER_ID_SIZE = 128;
export const MAX_IP_ADDR_SIZE = 1024;
export const MAX_GATEWAY_SIZE = 512;

// --- VSS
export const VSS_OP_CREATE = 0;
export const VSS_OP_DELETE = 1;
export const VSS_OP_HOT_BACKUP = 2;
export const VSS_OP_GET_DM_INFO = 3;
export const VSS_OP_BU_COMPLETE = 4;
export const VSS_OP_FREEZE = 5;
export const VSS_OP_THAW = 6;
export const VSS_OP_AUTO_RECOVER = 7;
export const VSS_OP_COUNT = 8;
export const VSS_OP_REGISTER = 128;
export const VSS_OP_REGISTER1 = 129;
export const VSS_HBU_NO_AUTO_RECOVERY = 0x00000005;

// --- FCOPY
export const START_FILE_COPY = 0;
export const WRITE_TO_FILE = 1;
export const COMPLETE_FCOPY = 2;
export const CANCEL_FCOPY = 3;
export const FCOPY_VERSION_0 = 0;
export const FCOPY_VERSION_1 = 1;
export const FCOPY_CURRENT_VERSION = FCOPY_VERSION_1;
export const W_MAX_PATH = 260;
export const DATA_FRAGMENT = 6 * 1024;
export const OVER_WRITE = 0x1;
export const CREATE_PATH = 0x2;

/**
 * Every constant above that the UAPI header defines, by its C name. The layout test prints each
 * of these from the real header and compares.
 */
export const UAPI_HEADER_CONSTANTS: Readonly<Record<string, number>> = {
  UTIL_FW_VERSION,
  UTIL_WS2K8_FW_VERSION,
  HV_S_OK,
  HV_E_FAIL,
  HV_S_CONT,
  HV_ERROR_NOT_SUPPORTED,
  HV_ERROR_MACHINE_LOCKED,
  HV_ERROR_DEVICE_NOT_CONNECTED,
  HV_INVALIDARG,
  HV_GUID_NOTFOUND,
  HV_ERROR_ALREADY_EXISTS,
  HV_ERROR_DISK_FULL,
  KVP_OP_GET,
  KVP_OP_SET,
  KVP_OP_DELETE,
  KVP_OP_ENUMERATE,
  KVP_OP_GET_IP_INFO,
  KVP_OP_SET_IP_INFO,
  KVP_OP_COUNT,
  KVP_OP_REGISTER,
  KVP_OP_REGISTER1,
  KVP_POOL_EXTERNAL,
  KVP_POOL_GUEST,
  KVP_POOL_AUTO,
  KVP_POOL_AUTO_EXTERNAL,
  KVP_POOL_AUTO_INTERNAL,
  KVP_POOL_COUNT,
  HV_KVP_EXCHANGE_MAX_KEY_SIZE,
  HV_KVP_EXCHANGE_MAX_VALUE_SIZE,
  REG_SZ,
  REG_U32,
  REG_U64,
  ADDR_FAMILY_NONE,
  ADDR_FAMILY_IPV4,
  ADDR_FAMILY_IPV6,
  MAX_ADAPTER_ID_SIZE,
  MAX_IP_ADDR_SIZE,
  MAX_GATEWAY_SIZE,
  VSS_OP_CREATE,
  VSS_OP_DELETE,
  VSS_OP_HOT_BACKUP,
  VSS_OP_GET_DM_INFO,
  VSS_OP_BU_COMPLETE,
  VSS_OP_FREEZE,
  VSS_OP_THAW,
  VSS_OP_AUTO_RECOVER,
  VSS_OP_COUNT,
  VSS_OP_REGISTER,
  VSS_OP_REGISTER1,
  VSS_HBU_NO_AUTO_RECOVERY,
  START_FILE_COPY,
  WRITE_TO_FILE,
  COMPLETE_FCOPY,
  CANCEL_FCOPY,
  FCOPY_VERSION_0,
  FCOPY_VERSION_1,
  FCOPY_CURRENT_VERSION,
  W_MAX_PATH,
  DATA_FRAGMENT,
  OVER_WRITE,
  CREATE_PATH,
};

/** Human names of the status codes, for log lines. */
export const HV_STATUS_NAMES: Readonly<Record<number, string>> = {
  [HV_S_OK]: 'HV_S_OK',
  [HV_E_FAIL]: 'HV_E_FAIL',
  [HV_S_CONT]: 'HV_S_CONT',
  [HV_ERROR_NOT_SUPPORTED]: 'HV_ERROR_NOT_SUPPORTED',
  [HV_ERROR_MACHINE_LOCKED]: 'HV_ERROR_MACHINE_LOCKED',
  [HV_ERROR_DEVICE_NOT_CONNECTED]: 'HV_ERROR_DEVICE_NOT_CONNECTED',
  [HV_INVALIDARG]: 'HV_INVALIDARG',
  [HV_GUID_NOTFOUND]: 'HV_GUID_NOTFOUND',
  [HV_ERROR_ALREADY_EXISTS]: 'HV_ERROR_ALREADY_EXISTS',
  [HV_ERROR_DISK_FULL]: 'HV_ERROR_DISK_FULL',
};

/** `HV_E_FAIL (0x80004005)` for a known code, `0x…` otherwise. */
export function statusName(status: number): string {
  const hex = `0x${(status >>> 0).toString(16).padStart(8, '0')}`;
  const name = HV_STATUS_NAMES[status >>> 0];
  return name === undefined ? hex : `${name} (${hex})`;
}
