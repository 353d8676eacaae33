/** Helpers for the pool-store tests: temp directories, raw pool files, foreign (Python) lockers and writers. */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { POOL_RECORD_SIZE, decodeRecord, encodeRecord } from '../../../daemons/kvp/pool-file.js';

export const R = POOL_RECORD_SIZE;

export function tempDir(prefix = 'hv-kvp-pool-'): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export const poolPath = (dir: string, n: number): string => join(dir, `.kvp_pool_${n}`);

export function records(...pairs: [string, string][]): Buffer {
  return Buffer.concat(pairs.map(([k, v]) => encodeRecord(k, v)));
}

/** The valid records of a pool file as [key, value] pairs, decoded independently of the store. */
export function fileRecords(path: string): [string, string][] {
  const raw = readFileSync(path);
  const out: [string, string][] = [];
  for (let at = 0; at + R <= raw.length; at += R) {
    const d = decodeRecord(raw, at);
    if (d.ok) out.push([d.key, d.value]);
  }
  return out;
}

export type LockKind = 'posix' | 'flock';

/**
 * A Python process holding a lock on `path` like a foreign tool: 'posix' is fcntl.lockf (F_SETLKW
 * on the whole file, as the C daemon), 'flock' is fcntl.flock (as cloud-init and azure-init).
 */
export async function holdLock(
  path: string,
  kind: LockKind,
): Promise<{ pid: number; release(): Promise<void> }> {
  const call = kind === 'posix' ? 'fcntl.lockf(f, fcntl.LOCK_EX)' : 'fcntl.flock(f, fcntl.LOCK_EX)';
  const py = spawn('python3', [
    '-c',
    `import fcntl,sys\nf=open(${JSON.stringify(path)},'r+b')\n${call}\nprint('locked',flush=True)\nsys.stdin.read()`,
  ]);
  await new Promise<void>((resolve, reject) => {
    py.stdout.on('data', (d: Buffer) => d.toString().includes('locked') && resolve());
    py.on('exit', (c) => reject(new Error(`python exited ${c}`)));
  });
  return {
    pid: py.pid ?? -1,
    release: () =>
      new Promise((resolve) => {
        py.on('exit', () => resolve());
        py.stdin.end();
      }),
  };
}

/** Probe from another process: is each lock family free right now? */
export const PROBE_LOCKS = (path: string): string => `import fcntl
f=open(${JSON.stringify(path)},'r+b')
out=[]
for name,call in (('posix',lambda: fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB)),('flock',lambda: fcntl.flock(f, fcntl.LOCK_EX|fcntl.LOCK_NB))):
  try:
    call(); out.append(name+'=free')
  except OSError:
    out.append(name+'=busy')
print(' '.join(out))`;

/**
 * A Python writer adding `count` records `${prefix}${i}` to `path`:
 *  - 'flock': cloud-init's way: open 'ab', flock(LOCK_EX), write one packed record, unlock;
 *  - 'posix': the same with lockf(LOCK_EX) (F_SETLKW), as Microsoft's tools lock;
 *  - 'posix-rewrite': a careful C-daemon-like tool: lockf(LOCK_EX), read the whole file, rewrite
 *    it whole with the new record appended, unlock (the lock held across the read-modify-write).
 *    It must not run alongside an flock writer: the two families do not exclude each other.
 * Resolves with its exit code.
 */
export function foreignWriter(
  path: string,
  kind: LockKind | 'posix-rewrite',
  prefix: string,
  count: number,
): Promise<number> {
  const script = `import fcntl,struct,sys,time
path=${JSON.stringify(path)}
for i in range(${count}):
  rec=struct.pack('512s2048s', ('${prefix}%d' % i).encode(), ('value-%d-' % i).encode() + b'x' * (i % 300))
  if '${kind}' == 'flock':
    with open(path,'ab') as f:
      fcntl.flock(f, fcntl.LOCK_EX)
      f.write(rec)
      f.flush()
      fcntl.flock(f, fcntl.LOCK_UN)
  elif '${kind}' == 'posix':
    with open(path,'ab') as f:
      fcntl.lockf(f, fcntl.LOCK_EX)
      f.write(rec)
      f.flush()
      fcntl.lockf(f, fcntl.LOCK_UN)
  else:
    with open(path,'r+b') as f:
      fcntl.lockf(f, fcntl.LOCK_EX)
      data=f.read()
      data=data[:len(data)-len(data)%2560]
      f.seek(0)
      f.write(data+rec)
      f.truncate()
      f.flush()
      fcntl.lockf(f, fcntl.LOCK_UN)
  time.sleep(0.0005)
`;
  const py = spawn('python3', ['-c', script], { stdio: ['ignore', 'ignore', 'inherit'] });
  return new Promise((resolve) => py.on('exit', (code) => resolve(code ?? -1)));
}
