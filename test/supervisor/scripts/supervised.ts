/**
 * Inside the shim: the "daemon" is hv-supervisor wrapping a KVP or FCOPY daemon. `kill`: SIGKILL the
 * supervisor's child and time its re-registration with the driver. `rescind`: withdraw the device,
 * watch what the supervisor does while the node is absent, offer it again and time the
 * re-registration. Either way the host is then served again.
 */
import { HV_S_OK } from '../../../uapi/constants.js';
import type { HostScriptContext } from '../../support/host-script.js';
import { childrenOf, commOf as comm } from '../../support/procs.js';
import { until } from '../../support/until.js';

interface Params {
  service: 'kvp' | 'fcopy';
  action: 'kill' | 'rescind';
  /** FCOPY: where the host copies its files (a directory of the sandbox). */
  target?: string;
}

export default async function supervised(ctx: HostScriptContext) {
  const { service, action, target } = ctx.params as Params;
  const driver = ctx.shim.device(service).driver;
  /** A registration since `before`: on this driver, or on the new one a re-offer brings. */
  const registeredAgain = (before: number) => () => {
    const now = ctx.shim.device(service).driver;
    return now === driver ? now.registrations > before : now.registrations > 0;
  };
  const supervisor = ctx.daemon().pid!;
  await ctx.waitReady(service, 20_000);
  let copies = 0;
  const serve = async (): Promise<number> => {
    if (service === 'kvp') return (await ctx.shim.host.kvp.addItem(`k${copies++}`, 'v')).status;
    const r = await ctx.shim.host.fcopy.copyBuffer(Buffer.from('hello'), target!, `f${copies++}.txt`, {
      overwrite: true,
      createPath: true,
    });
    return r.status;
  };
  const statusBefore = await serve();
  const before = driver.registrations;
  // The daemon by its process name (the supervisor run through tsx has an esbuild child too).
  const daemonName = `hv_${service}_daemon`;
  const daemonOf = (): number | undefined => childrenOf(supervisor).find((p) => comm(p) === daemonName);
  const daemon = daemonOf();
  if (!daemon) throw new Error(`the supervisor has no ${daemonName} child`);
  const others = new Set(childrenOf(supervisor).filter((p) => p !== daemon));

  const seen = new Set<number>();
  let reregisteredMs: number;
  if (action === 'kill') {
    const t0 = performance.now();
    process.kill(daemon, 'SIGKILL');
    await until(registeredAgain(before), 15_000, 'a new registration');
    reregisteredMs = Math.round(performance.now() - t0);
  } else {
    await ctx.files.rescind(service);
    // 1.5 s with the node absent: which children does the supervisor have meanwhile?
    const end = Date.now() + 1500;
    while (Date.now() < end) {
      for (const pid of childrenOf(supervisor)) if (!others.has(pid)) seen.add(pid);
      await new Promise((r) => setTimeout(r, 10));
    }
    const t0 = performance.now();
    ctx.files.reoffer(service);
    await until(registeredAgain(before), 15_000, 'a new registration');
    reregisteredMs = Math.round(performance.now() - t0);
  }
  const after = daemonOf();
  return {
    daemonComm: daemon ? daemonName : '',
    statusBefore,
    daemon,
    after,
    childrenWhileAbsent: [...seen],
    reregisteredMs,
    registrations: registeredAgain(before)() ? 1 : 0,
    statusAfter: await serve(),
    ok: HV_S_OK,
  };
}
