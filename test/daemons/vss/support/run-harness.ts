/**
 * Run test/daemons/vss/harness.ts in a private mount namespace and return its RESULT. On a time
 * limit the harness (not unshare) gets SIGTERM, so it thaws the images before it exits.
 */
import { spawn } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
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
  const child = spawn(
    'unshare',
    [
      '--mount',
      '--propagation',
      'private',
      '--fork',
      '--',
      process.execPath,
      '--import',
      'tsx',
      HARNESS,
      name,
      JSON.stringify({ deadlineMs: timeoutMs - 10_000, ...args }),
    ],
    {
      cwd: REPO,
      env: { ...process.env, PARENT_NS: readlinkSync('/proc/self/ns/mnt') },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => {
    const harness = childOf(child.pid);
    if (harness !== undefined) process.kill(harness, 'SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 15_000).unref();
  }, timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  clearTimeout(timer);
  const line = stdout.split('\n').find((l) => l.startsWith('RESULT '));
  if (code !== 0 || !line) throw new Error(`harness ${name} exited ${code}:\n${stderr.slice(-6000)}`);
  return JSON.parse(line.slice('RESULT '.length)) as T;
}
