/**
 * Host script for the installed hv-kvp-ts (run in a Debian 12 chroot by debian-install.test.ts):
 * the host sets a value, reads it back, and enumerates the guest's pool and the auto pool.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { KVP_POOL_AUTO } from '../../../uapi/constants.js';
import type { HostScriptContext } from '../../support/host-script.js';

export default async function kvpChroot({ shim, stateDir }: HostScriptContext) {
  const h = shim.host.kvp;
  const set = await h.addItem('PackagedKey', 'set by the host', { pool: 0 });
  const list = await h.listItems(0);
  const auto = await h.listItems(KVP_POOL_AUTO);
  return {
    set,
    list: { endStatus: list.endStatus, items: list.items.map((i) => ({ key: i.key, value: i.value })) },
    auto: { endStatus: auto.endStatus, keys: auto.items.map((i) => i.key) },
    osName: auto.items.find((i) => i.key === 'OSName')?.value,
    poolFile: existsSync(join(stateDir, '.kvp_pool_0')),
  };
}
