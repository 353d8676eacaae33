import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { mkdirp } from '../../../daemons/common/mkdirp.js';

const dir = mkdtempSync(join(tmpdir(), 'hv-mkdirp-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('mkdirp', () => {
  it('creates every missing component with the mode, and accepts an existing directory', () => {
    mkdirp(join(dir, 'a/b/c'), 0o750);
    expect(statSync(join(dir, 'a/b/c')).mode & 0o777).toBe(0o750 & ~process.umask());
    expect(() => mkdirp(join(dir, 'a/b'))).not.toThrow();
  });

  it('fails with ENOTDIR under a file, and with ENOENT on procfs instead of looping (Node 20 does)', () => {
    writeFileSync(join(dir, 'file'), '');
    expect(() => mkdirp(join(dir, 'file/sub'))).toThrow(expect.objectContaining({ code: 'ENOTDIR' }));
    expect(() => mkdirp('/proc/hv-mkdirp-test/sub')).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });
});
