/**
 * `npm start`: says what this machine has (a real Hyper-V /dev/vmbus or not) and what of the project
 * is built and can run here.
 */
import { existsSync } from 'node:fs';
import { HV_KVP_MSG, HV_VSS_MSG, UAPI_STRUCTS } from '../uapi/index.js';

const devices = ['hv_kvp', 'hv_vss', 'hv_fcopy'].map((d) => `/dev/vmbus/${d}`);
const present = devices.filter((d) => existsSync(d));

console.log('hyperv-daemons-ts');
console.log(
  present.length > 0
    ? `Hyper-V devices on this machine: ${present.join(', ')}`
    : 'No /dev/vmbus devices here (not a Hyper-V guest): the daemons will run against the embedded kernel-shim.',
);
console.log(
  `UAPI codecs: ${UAPI_STRUCTS.length} structs (struct hv_kvp_msg ${HV_KVP_MSG.size} bytes, struct hv_vss_msg ${HV_VSS_MSG.size} bytes), verified against <linux/hyperv.h> by npm test.`,
);
console.log('Not built yet: kernel-shim, hv-kvp-ts, hv-vss-ts, hv-fcopy-ts, hv-supervisor, packages.');
