/**
 * The README's run command, `npm start`, off Hyper-V: the three supervised daemons against the
 * embedded kernel-shim, driven through the host console from piped input, and a clean stop.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const REPO = resolve(import.meta.dirname, '../..');

describe('npm start (simulated)', () => {
  it('serves KVP, VSS and FCOPY to the console host and stops cleanly on quit', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', `${REPO}/bin/hyperv-daemons-ts.ts`], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdin.write(
      [
        'wait-ready kvp 60s',
        'wait-ready vss 60s',
        'wait-ready fcopy 60s',
        'kvp set Greeting "hello from the test"   expect HV_S_OK',
        'kvp list external                       expect count=1 item.Greeting="hello from the test"',
        'kvp enumerate auto 1                    expect HV_S_OK key=IntegrationServicesVersion value=3.1',
        'vss freeze                              expect HV_S_OK',
        'vss thaw                                expect HV_S_OK',
        'fcopy put /tmp main-job.txt "copied"    expect HV_S_OK step=complete',
        '',
      ].join('\n'),
    );
    // let the steps run, then quit
    const deadline = Date.now() + 120_000;
    while (!/fcopy put[\s\S]*HV_S_OK/.test(out) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    child.stdin.end('quit\n');
    const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    expect(err).toMatch(/SIMULATED/);
    expect(out, `${out}\n${err}`).toMatch(/9 steps: 9 passed, 0 failed/);
    expect(code).toBe(0);
    // the three daemons stopped on their own terms (SIGTERM), not killed
    for (const name of ['hv-kvp-ts', 'hv-vss-ts', 'hv-fcopy-ts']) {
      expect(out + err).toMatch(new RegExp(`"name":"${name}".*"msg":"${name} stopped"`));
    }
    expect(readFileSync('/proc/self/mounts', 'utf8')).not.toMatch(/hvshim|hv-freeze-/);
  }, 180_000);
});
