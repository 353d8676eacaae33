/**
 * The freeze and thaw passes over a fake freezer (real freezes are in sandbox.test.ts: a unit
 * test never issues FIFREEZE or FITHAW on a filesystem of this machine).
 */
import { describe, expect, it } from 'vitest';
import { type Freezer, errorCode, freezePass, thawPass } from '../../../daemons/vss/freezer.js';
import type { FreezeTarget } from '../../../daemons/vss/mounts.js';

const t = (mountPoint: string): FreezeTarget => ({
  mountPoint,
  device: mountPoint,
  source: '/dev/x',
  fsType: 'ext4',
  alsoAt: [],
});

function freezer(errors: Record<string, string>, calls: string[]): Freezer {
  const act = (op: string) => (mp: string) => {
    calls.push(`${op} ${mp}`);
    const code = errors[`${op} ${mp}`];
    if (code) throw Object.assign(new Error(code), { code });
  };
  return { freeze: act('freeze'), thaw: act('thaw') };
}

describe('freezePass', () => {
  it('freezes in order; EBUSY is success (already frozen), EOPNOTSUPP is left alone', () => {
    const calls: string[] = [];
    const out = freezePass(
      [t('/a'), t('/b'), t('/c'), t('/')],
      freezer({ 'freeze /b': 'EBUSY', 'freeze /c': 'EOPNOTSUPP' }, calls),
    );
    expect(out.ok).toBe(true);
    expect(out.frozen.map((x) => x.mountPoint)).toEqual(['/a', '/b', '/']);
    expect(out.alreadyFrozen).toEqual(['/b']);
    expect(out.unsupported.map((x) => x.mountPoint)).toEqual(['/c']);
    expect(calls).toEqual(['freeze /a', 'freeze /b', 'freeze /c', 'freeze /']);
    expect(out.timings.map((x) => x.mountPoint)).toEqual(['/a', '/b', '/c', '/']);
  });

  it('stops at the first failure', () => {
    const calls: string[] = [];
    const out = freezePass([t('/a'), t('/b'), t('/')], freezer({ 'freeze /b': 'EIO' }, calls));
    expect(out.ok).toBe(false);
    expect(out.failure).toMatchObject({ target: { mountPoint: '/b' }, code: 'EIO' });
    expect(out.frozen.map((x) => x.mountPoint)).toEqual(['/a']);
    expect(calls).toEqual(['freeze /a', 'freeze /b']);
  });
});

describe('thawPass', () => {
  it('tries every target; EINVAL is success (not frozen); other errors are collected', () => {
    const calls: string[] = [];
    const out = thawPass(
      [t('/'), t('/b'), t('/a')],
      freezer({ 'thaw /b': 'EINVAL', 'thaw /': 'EIO' }, calls),
    );
    expect(out.ok).toBe(false);
    expect(out.thawed).toEqual(['/a']);
    expect(out.notFrozen).toEqual(['/b']);
    expect(out.failures.map((f) => [f.target.mountPoint, f.code])).toEqual([['/', 'EIO']]);
    expect(calls).toEqual(['thaw /', 'thaw /b', 'thaw /a']);
  });

  it('errorCode falls back to EIO for errors without a code', () => {
    expect(errorCode(new Error('x'))).toBe('EIO');
    expect(errorCode(Object.assign(new Error('x'), { code: 'EPERM' }))).toBe('EPERM');
  });
});
