/**
 * Inside the shim: the daemon is hv-supervisor wrapping the upstream hv_kvp_daemon. Kill the
 * daemon (the supervisor's child) with SIGKILL and wait for it to register with the driver again.
 */
import type { HostScriptContext } from '../../support/host-script.js';
import { childrenOf } from '../../support/procs.js';

export default async function upstreamRestart(ctx: HostScriptContext) {
  const driver = ctx.shim.device('kvp').driver;
  const supervisor = ctx.daemon().pid!;
  const before = driver.registrations;
  const [daemon] = childrenOf(supervisor);
  if (!daemon) throw new Error('the supervisor has no child');
  process.kill(daemon, 'SIGKILL');
  const end = Date.now() + 15_000;
  while (driver.registrations <= before) {
    if (Date.now() > end) throw new Error('the daemon did not register again');
    await new Promise((r) => setTimeout(r, 20));
  }
  const [again] = childrenOf(supervisor);
  const add = await ctx.shim.host.kvp.addItem('after-restart', 'yes');
  return { before, after: driver.registrations, daemon, again, addStatus: add.status };
}
