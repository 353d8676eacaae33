/** The kernel's UAPI structs and constants as codecs, shared by the daemons and the kernel-shim. */
export * from './constants.js';
export * from './layout.js';
export * from './result.js';
export * from './strings.js';
export * from './kvp.js';
export * from './vss.js';
export * from './fcopy.js';
