/** The frozen marker file: atomic write, read back, validation, removal. */
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FileMarker, type FrozenMarker, currentBootId, validateMarker } from '../../../daemons/vss/marker.js';

const dir = mkdtempSync(join(tmpdir(), 'hv-vss-marker-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const MARKER: FrozenMarker = {
  format: 'hv-vss-frozen',
  version: 1,
  pid: 123,
  bootId: 'b-1',
  writtenAt: '2026-01-01T00:00:00.000Z',
  filesystems: [{ mountPoint: '/', device: '8:2', source: '/dev/sda2', fsType: 'ext4' }],
  hooks: ['10-db'],
};

describe('FileMarker', () => {
  it('creates its directory, writes atomically, reads back, removes', async () => {
    const m = new FileMarker(join(dir, 'run', 'hyperv-daemons-ts', 'vss-frozen.json'));
    expect(await m.read()).toEqual({ kind: 'none' });
    await m.write(MARKER);
    expect(readdirSync(join(dir, 'run', 'hyperv-daemons-ts'))).toEqual(['vss-frozen.json']);
    expect(await m.read()).toEqual({ kind: 'found', marker: MARKER });
    await m.remove();
    expect(existsSync(m.path)).toBe(false);
    await m.remove();
  });

  it('reports a corrupt marker instead of throwing', async () => {
    const path = join(dir, 'corrupt.json');
    writeFileSync(path, '{"format":"hv-vss-frozen"');
    expect((await new FileMarker(path).read()).kind).toBe('corrupt');
    writeFileSync(path, JSON.stringify({ ...MARKER, filesystems: [{ mountPoint: 'relative' }] }));
    expect(await new FileMarker(path).read()).toEqual({
      kind: 'corrupt',
      error: 'a filesystem without an absolute mountPoint',
    });
  });
});

describe('validateMarker', () => {
  it('accepts a marker and fills what is missing, refuses what is not one', () => {
    expect(
      validateMarker({ format: 'hv-vss-frozen', version: 1, filesystems: [{ mountPoint: '/x' }], hooks: [] }),
    ).toEqual({
      format: 'hv-vss-frozen',
      version: 1,
      pid: 0,
      bootId: '',
      writtenAt: '',
      filesystems: [{ mountPoint: '/x', device: '', source: '', fsType: '' }],
      hooks: [],
    });
    expect(validateMarker(null)).toBe('not a JSON object');
    expect(validateMarker({ format: 'x' })).toBe('format is not hv-vss-frozen');
    expect(validateMarker({ format: 'hv-vss-frozen', version: 2 })).toBe('unknown version 2');
    expect(validateMarker({ format: 'hv-vss-frozen', version: 1, filesystems: [], hooks: [1] })).toBe(
      'hooks is not a list of names',
    );
  });

  it('currentBootId reads the kernel boot id', () => {
    expect(currentBootId()).toMatch(/^[0-9a-f-]{36}$/);
  });
});
