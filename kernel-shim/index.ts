/** The kernel-shim: an in-process test double of the hv_utils drivers and the Hyper-V host. */
export * from './clock.js';
export * from './errno.js';
export * from './transport.js';
export * from './nls.js';
export * from './device.js';
export * from './shim.js';
export * from './drivers/util.js';
export { KvpDriver, HV_DRV_VERSION } from './drivers/kvp.js';
export { VssDriver } from './drivers/vss.js';
export { FcopyDriver } from './drivers/fcopy.js';
export * from './host/ic-client.js';
export * from './host/kvp.js';
export * from './host/vss.js';
export * from './host/fcopy.js';
