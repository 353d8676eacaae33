/**
 * The inside of runInShim (shim-harness.ts): runs in a private mount namespace, builds the
 * sandbox, serves the shim's device files at /dev/vmbus, starts the daemon, waits until it has
 * registered, runs the test's host script, stops the daemon and tears everything down.
 */
import { spawn } from 'node:child_process';
import { writeSync } from 'node:fs';
import { resolve } from 'node:path';
import { mountDeviceFiles } from '../../kernel-shim/device-files.js';
import type { ServiceName } from '../../kernel-shim/device.js';
import { HVUTIL_READY } from '../../kernel-shim/drivers/util.js';
import { buildSandbox, VMBUS_DEV_DIR } from '../../kernel-shim/sandbox.js';
import { KernelShim } from '../../kernel-shim/shim.js';
import type { HostScriptContext } from './host-script.js';
import { until } from './until.js';

interface Spec {
  services: ServiceName[];
  command: string[];
  script: string;
  params?: unknown;
  stateDir?: string;
  scriptsDir?: string;
  parentNamespace: string;
}

const spec = JSON.parse(process.env.HV_HARNESS ?? '{}') as Spec;
const REPO = resolve(import.meta.dirname, '../..');

const sandbox = buildSandbox({
  parentNamespace: spec.parentNamespace,
  ...(spec.stateDir ? { stateDir: spec.stateDir } : {}),
  ...(spec.scriptsDir ? { scriptsDir: spec.scriptsDir } : {}),
});
const shim = new KernelShim({ services: spec.services });
const files = await mountDeviceFiles(shim, VMBUS_DEV_DIR);
let exitCode = 0;
const daemonLog: string[] = [];
const start = (): ReturnType<typeof spawn> => {
  const d = spawn(spec.command[0]!, spec.command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  d.stdout?.on('data', (b: Buffer) => daemonLog.push(b.toString()));
  d.stderr?.on('data', (b: Buffer) => daemonLog.push(b.toString()));
  return d;
};
let daemon = start();
try {
  const ready = (s: ServiceName) => shim.device(s).driver.state === HVUTIL_READY;
  for (const s of spec.services) await until(() => ready(s), 15_000, `the daemon to register on ${s}`);
  const ctx: HostScriptContext = {
    shim,
    files,
    params: spec.params,
    stateDir: sandbox.stateDir,
    daemon: () => daemon,
    restartDaemon: async () => {
      const before = spec.services.map((s) => shim.device(s).driver.registrations);
      daemon.kill('SIGKILL');
      await new Promise((r) => daemon.once('exit', r));
      daemon = start();
      // The driver is READY only between transactions: wait for a new registration instead.
      for (const [i, s] of spec.services.entries()) {
        const n = before[i] ?? 0;
        await until(
          () => shim.device(s).driver.registrations > n,
          15_000,
          `the daemon to register again on ${s}`,
        );
      }
    },
    waitReady: (s: ServiceName, ms = 15_000) => until(() => ready(s), ms, `${s} READY`),
  };
  const mod = (await import(resolve(REPO, spec.script))) as {
    default: (ctx: HostScriptContext) => Promise<unknown>;
  };
  const result = await mod.default(ctx);
  writeSync(1, `\nHV_HARNESS_RESULT ${JSON.stringify(result)}`);
} catch (e) {
  writeSync(2, `harness: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  exitCode = 1;
} finally {
  daemon.kill('SIGTERM');
  await new Promise((r) => {
    const t = setTimeout(() => {
      daemon.kill('SIGKILL');
      r(undefined);
    }, 3000);
    daemon.once('exit', () => {
      clearTimeout(t);
      r(undefined);
    });
    if (daemon.exitCode !== null || daemon.signalCode !== null) r(undefined);
  });
  writeSync(2, daemonLog.join(''));
  await files.unmount().catch(() => {});
  sandbox.cleanup();
}
process.exit(exitCode);
