/**
 * Run test/daemons/vss/harness.ts in a private mount namespace and return its RESULT. On a time
 * limit the harness (not unshare) gets SIGTERM, so it thaws the images before it exits.
 */
import { readFileSync } from 'node:fs';
import { runTsInNamespace } from '../../../support/namespace-run.js';
import { REPO } from './vss-sandbox.js';

const HARNESS = `${REPO}/test/daemons/vss/harness.ts`;

function childOf(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/);
    return kids[0] ? Number(kids[0]) : undefined;
  } catch {
    return undefined;
  }
}

export async function runHarness<T = Record<string, unknown>>(
  name: string,
  args: Record<string, unknown>,
  timeoutMs = 100_000,
): Promise<T> {
  const { code, stdout, stderr } = await runTsInNamespace(
    HARNESS,
    [name, JSON.stringify({ deadlineMs: timeoutMs - 10_000, ...args })],
    {
      timeoutMs,
      // The harness (not unshare) gets SIGTERM, so that it thaws the images before it exits.
      onTimeout: (child) => {
        const harness = childOf(child.pid);
        if (harness !== undefined) process.kill(harness, 'SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 15_000).unref();
      },
    },
  );
  const line = stdout.split('\n').find((l) => l.startsWith('RESULT '));
  if (code !== 0 || !line) throw new Error(`harness ${name} exited ${code}:\n${stderr.slice(-6000)}`);
  return JSON.parse(line.slice('RESULT '.length)) as T;
}
