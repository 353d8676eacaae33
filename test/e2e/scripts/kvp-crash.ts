/**
 * Crash safety through the real daemon: rounds of host SETs and DELETEs while the daemon is killed
 * with SIGKILL at a random moment; after each restart every acknowledged record must be there with
 * its acknowledged value, and every acknowledged delete must hold.
 */
import { HV_S_OK } from '../../../uapi/constants.js';
import type { HostScriptContext } from '../../support/host-script.js';

export default async function kvpCrash(ctx: HostScriptContext) {
  const { rounds = 10 } = (ctx.params ?? {}) as { rounds?: number };
  const h = ctx.shim.host.kvp;
  const expected = new Map<string, string | undefined>();
  let acknowledged = 0;
  let failed = 0;
  for (let round = 0; round < rounds; round++) {
    let stop = false;
    const storm = (async () => {
      for (let i = 0; !stop; i++) {
        const key = `k${(round * 7 + i) % 40}`;
        const del = i % 5 === 4;
        const value = `r${round}-i${i}`;
        const r = del
          ? await h.removeItem(key, { pool: 1 }).catch(() => undefined)
          : await h.addItem(key, value, { pool: 1 }).catch(() => undefined);
        if (r?.status === HV_S_OK) {
          acknowledged++;
          expected.set(key, del ? undefined : value);
        } else if (!del) {
          failed++;
          // Not acknowledged: the record may or may not have been written; forget what we know.
          expected.delete(key);
        } else if (r === undefined) expected.delete(key);
      }
    })();
    await new Promise((r) => setTimeout(r, 50 + Math.random() * 250));
    await ctx.restartDaemon(); // SIGKILL, restart, wait until registered
    stop = true;
    await storm;
  }
  const items = (await h.listItems(1)).items;
  const present = new Map(items.map((i) => [i.key, i.value]));
  const lost: string[] = [];
  for (const [key, value] of expected) {
    if (value === undefined ? present.has(key) : present.get(key) !== value) {
      lost.push(`${key}: expected ${value ?? '(deleted)'}, found ${present.get(key) ?? '(absent)'}`);
    }
  }
  const duplicates = items.length - present.size;
  return { rounds, acknowledged, failed, checked: expected.size, lost, duplicates };
}
