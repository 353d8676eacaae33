/**
 * The kernel-shim's VMBus channel: packet descriptors, ring buffers, IC framing, version
 * negotiation and the two-ring channel. Pure and in-process; see each module's comment.
 */
export * from './vmpacket.js';
export * from './ring.js';
export * from './icmsg.js';
export * from './negotiate.js';
export * from './channel.js';
