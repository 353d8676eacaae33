/**
 * Foreign writers: a process appending records under flock (as cloud-init and azure-init do) and
 * one appending under a POSIX record lock (as the C daemon and Microsoft's tools do) write to
 * .kvp_pool_1 while the host sets and enumerates through the daemon. Nothing may be lost.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { HV_S_OK } from '../../../uapi/constants.js';
import type { HostScriptContext } from '../../support/host-script.js';

const WRITER = `
import fcntl, os, sys, time
path, mode, prefix, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
for i in range(n):
    key = ("%s-%d" % (prefix, i)).encode()
    rec = key + bytes(512 - len(key)) + b"from " + prefix.encode() + bytes(2048 - 5 - len(prefix))
    with open(path, "ab") as f:
        if mode == "flock":
            fcntl.flock(f, fcntl.LOCK_EX)
        else:
            fcntl.lockf(f, fcntl.LOCK_EX)
        f.write(rec)
        f.flush()
        os.fsync(f.fileno())
        if mode == "flock":
            fcntl.flock(f, fcntl.LOCK_UN)
        else:
            fcntl.lockf(f, fcntl.LOCK_UN)
    time.sleep(0.002)
`;

function writer(path: string, mode: 'flock' | 'posix', prefix: string, n: number): Promise<number | null> {
  const p = spawn('python3', ['-c', WRITER, path, mode, prefix, String(n)], { stdio: 'inherit' });
  return new Promise((r) => p.on('exit', r));
}

export default async function kvpForeign(ctx: HostScriptContext) {
  const n = 150;
  const pool = join(ctx.stateDir, '.kvp_pool_1');
  const h = ctx.shim.host.kvp;
  const writers = Promise.all([writer(pool, 'flock', 'cloud-init', n), writer(pool, 'posix', 'ms-tools', n)]);
  let hostAcks = 0;
  let done = false;
  void writers.then(() => (done = true));
  for (let i = 0; !done; i++) {
    if ((await h.addItem(`host-${i}`, `v${i}`, { pool: 1 })).status === HV_S_OK) hostAcks++;
    await h.listItems(1);
  }
  const codes = await writers;
  const items = (await h.listItems(1)).items;
  const keys = new Set(items.map((i) => i.key));
  const missing: string[] = [];
  for (const prefix of ['cloud-init', 'ms-tools']) {
    for (let i = 0; i < n; i++) if (!keys.has(`${prefix}-${i}`)) missing.push(`${prefix}-${i}`);
  }
  for (let i = 0; i < hostAcks; i++) if (!keys.has(`host-${i}`)) missing.push(`host-${i}`);
  return { writerExitCodes: codes, hostAcks, total: items.length, missing };
}
