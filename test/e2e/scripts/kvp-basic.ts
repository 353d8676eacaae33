/**
 * A KVP host script: what Hyper-V Manager and Azure do, step by step. Returns what the host saw,
 * with the values that depend on the machine (FQDN, addresses, kernel) reduced to their shape.
 */
import { KVP_POOL_AUTO } from '../../../uapi/constants.js';
import type { HostScriptContext } from '../../support/host-script.js';

export default async function kvpBasic({ shim }: HostScriptContext) {
  const h = shim.host.kvp;
  const steps: Record<string, unknown>[] = [];
  const note = (step: string, r: object) => steps.push({ step, ...r });
  for (const pool of [0, 1, 3, 4]) {
    note(`set p${pool}`, await h.addItem(`Key${pool}`, `välue ${pool}`, { pool }));
    note(`set2 p${pool}`, await h.addItem(`Other${pool}`, 'x', { pool }));
    note(`modify p${pool}`, await h.modifyItem(`Key${pool}`, `changed ${pool}`, { pool }));
    note(`list p${pool}`, await h.listItems(pool));
    note(`delete p${pool}`, await h.removeItem(`Other${pool}`, { pool }));
    note(`delete-missing p${pool}`, await h.removeItem(`Other${pool}`, { pool }));
    note(`list-after p${pool}`, await h.listItems(pool));
  }
  note('get', await h.getItem('Key0'));
  note('get-missing', await h.getItem('Nope'));
  const auto = await h.listItems(KVP_POOL_AUTO);
  note('auto', {
    endStatus: auto.endStatus,
    keys: auto.items.map((i) => i.key),
    integrationServicesVersion: auto.items[1]?.value,
    osName: auto.items[5]?.value,
  });
  // a few hundred records in one pool
  for (let i = 0; i < 300; i++) await h.addItem(`bulk-${i}`, `value-${i}`, { pool: 1 });
  const bulk = await h.listItems(1);
  note('bulk', { count: bulk.items.length, last: bulk.items.at(-1), endStatus: bulk.endStatus });
  return steps;
}
