/** The koffi libc bindings against real kernel objects (no filesystem of this machine is frozen). */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  F_WRLCK,
  F_UNLCK,
  LOCK_EX,
  LOCK_NB,
  LOCK_UN,
  POLLIN,
  flock,
  ofdLock,
  ofdTestLock,
  pollAsync,
  pollNow,
} from '../../../daemons/common/libc.js';

const dir = mkdtempSync(join(tmpdir(), 'hv-libc-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A Python process holding a classic POSIX write lock (fcntl F_SETLKW), as the C daemon does. */
async function holdPosixLock(path: string): Promise<{ release(): Promise<void> }> {
  const py = spawn('python3', [
    '-c',
    `import fcntl,sys,os\nf=open(${JSON.stringify(path)},'r+')\nfcntl.lockf(f,fcntl.LOCK_EX)\nprint('locked',flush=True)\nsys.stdin.read()`,
  ]);
  await new Promise<void>((resolve, reject) => {
    py.stdout.on('data', (d: Buffer) => d.toString().includes('locked') && resolve());
    py.on('exit', (c) => reject(new Error(`python exited ${c}`)));
  });
  return {
    release: () =>
      new Promise((resolve) => {
        py.on('exit', () => resolve());
        py.stdin.end();
      }),
  };
}

describe('poll', () => {
  it('reports readability of a FIFO, now and asynchronously, without blocking the loop', async () => {
    const fifo = join(dir, 'fifo');
    spawnSync('mkfifo', [fifo]);
    const fd = openSync(fifo, 'r+');
    try {
      expect(pollNow(fd, POLLIN)).toBe(0);
      let ticks = 0;
      const timer = setInterval(() => ticks++, 5);
      expect(await pollAsync(fd, POLLIN, 100)).toBe(0);
      clearInterval(timer);
      expect(ticks).toBeGreaterThan(3);
      writeSync(fd, 'x');
      expect(pollNow(fd, POLLIN) & POLLIN).toBe(POLLIN);
      expect((await pollAsync(fd, POLLIN, 1000)) & POLLIN).toBe(POLLIN);
    } finally {
      closeSync(fd);
    }
  });
});

describe('open-file-description locks', () => {
  it('conflict with a POSIX lock held by another process, and exclude it in turn', async () => {
    const path = join(dir, 'pool');
    writeFileSync(path, '');
    const fd = openSync(path, 'r+');
    try {
      const holder = await holdPosixLock(path);
      expect(ofdLock(fd, F_WRLCK)).toBe(false);
      expect(ofdTestLock(fd)).toMatchObject({ type: F_WRLCK });
      await holder.release();
      expect(ofdLock(fd, F_WRLCK)).toBe(true);
      const probe = spawnSync('python3', [
        '-c',
        `import fcntl\nf=open(${JSON.stringify(path)},'r+')\ntry:\n  fcntl.lockf(f,fcntl.LOCK_EX|fcntl.LOCK_NB); print('got')\nexcept OSError: print('busy')`,
      ]);
      expect(probe.stdout.toString().trim()).toBe('busy');
      // closing another fd of the same file does not drop an OFD lock (it would drop a POSIX one)
      closeSync(openSync(path, 'r'));
      expect(
        spawnSync('python3', [
          '-c',
          `import fcntl\nf=open(${JSON.stringify(path)},'r+')\ntry:\n  fcntl.lockf(f,fcntl.LOCK_EX|fcntl.LOCK_NB); print('got')\nexcept OSError: print('busy')`,
        ])
          .stdout.toString()
          .trim(),
      ).toBe('busy');
      expect(ofdLock(fd, F_UNLCK)).toBe(true);
    } finally {
      closeSync(fd);
    }
  });
});

describe('flock', () => {
  it('excludes another open file description of the same file', () => {
    const path = join(dir, 'flocked');
    writeFileSync(path, '');
    const a = openSync(path, 'r');
    const b = openSync(path, 'r');
    try {
      expect(flock(a, LOCK_EX | LOCK_NB)).toBe(true);
      expect(flock(b, LOCK_EX | LOCK_NB)).toBe(false);
      flock(a, LOCK_UN);
      expect(flock(b, LOCK_EX | LOCK_NB)).toBe(true);
    } finally {
      closeSync(a);
      closeSync(b);
    }
  });
});

// FIFREEZE/FITHAW are exercised only inside a private mount namespace on a loop-mounted image (VSS
// tests): even a no-op FITHAW here would reach a filesystem of this machine.
