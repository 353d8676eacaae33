/**
 * The FCOPY configuration file: defaults, every key, and a clear error (with its line) for
 * anything wrong; a missing default file is fine, a missing named one is not.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  ConfigError,
  DEFAULT_CONFIG,
  loadConfig,
  normaliseAbsolute,
  parseConfig,
} from '../../../daemons/fcopy/config.js';

const dir = mkdtempSync(join(tmpdir(), 'fcopy-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('parseConfig', () => {
  it('gives the defaults for an empty file or one with comments only', () => {
    expect(parseConfig('')).toEqual(DEFAULT_CONFIG);
    expect(parseConfig('# nothing\n\n   # still nothing\n')).toEqual(DEFAULT_CONFIG);
    expect(DEFAULT_CONFIG).toMatchObject({
      allow: [],
      fileMode: 0o644,
      dirMode: 0o755,
      followSymlinkedDirs: false,
      stateDir: '/var/lib/hyperv-daemons-ts/fcopy',
      syncEveryBytes: 64 * 1024 * 1024,
    });
  });

  it('reads every key; allow repeats and is normalised', () => {
    const cfg = parseConfig(
      [
        'allow = /srv/incoming/   # trailing slash',
        'allow=/home//shared/./drop',
        'allow = /srv/incoming',
        'file-mode = 0600',
        'dir-mode = 750',
        'follow-symlinked-dirs = yes',
        'state-dir = /run/fcopy-state',
        'sync-every-mib = 0',
      ].join('\n'),
    );
    expect(cfg).toEqual({
      allow: ['/srv/incoming', '/home/shared/drop'],
      fileMode: 0o600,
      dirMode: 0o750,
      followSymlinkedDirs: true,
      stateDir: '/run/fcopy-state',
      syncEveryBytes: 0,
    });
    expect(parseConfig('follow-symlinked-dirs = off').followSymlinkedDirs).toBe(false);
  });

  it('reports every problem with its line', () => {
    const text = [
      'allow = relative/dir',
      'allow = /a/../b',
      'file-mode = 0o644',
      'dir-mode = 4755',
      'follow-symlinked-dirs = maybe',
      'colour = blue',
      'no equals sign here',
      'sync-every-mib = -1',
      'state-dir = /x',
      'state-dir = /y',
    ].join('\n');
    let err: ConfigError | undefined;
    try {
      parseConfig(text, '/etc/fcopy.conf');
    } catch (e) {
      err = e as ConfigError;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect(err?.problems).toEqual([
      "/etc/fcopy.conf:1: allow: an absolute directory without .. components expected, got 'relative/dir'",
      "/etc/fcopy.conf:2: allow: an absolute directory without .. components expected, got '/a/../b'",
      "/etc/fcopy.conf:3: file-mode: an octal mode of at most 0777 expected, got '0o644'",
      "/etc/fcopy.conf:4: dir-mode: an octal mode of at most 0777 expected, got '4755'",
      "/etc/fcopy.conf:5: follow-symlinked-dirs: yes or no expected, got 'maybe'",
      "/etc/fcopy.conf:6: unknown key 'colour' (known: allow, file-mode, dir-mode, follow-symlinked-dirs, state-dir, sync-every-mib)",
      "/etc/fcopy.conf:7: expected 'key = value', got 'no equals sign here'",
      "/etc/fcopy.conf:8: sync-every-mib: a whole number of MiB expected, got '-1'",
      "/etc/fcopy.conf:10: 'state-dir' is set twice",
    ]);
  });

  it('normaliseAbsolute', () => {
    expect(normaliseAbsolute('/')).toBe('/');
    expect(normaliseAbsolute('//a/./b//')).toBe('/a/b');
    expect(normaliseAbsolute('a/b')).toBeUndefined();
    expect(normaliseAbsolute('/a/../b')).toBeUndefined();
  });
});

describe('loadConfig', () => {
  it('a missing default file gives the defaults; a missing named file is an error', async () => {
    const missing = join(dir, 'missing.conf');
    await expect(loadConfig(missing, false)).resolves.toEqual(DEFAULT_CONFIG);
    await expect(loadConfig(missing, true)).rejects.toThrow(/cannot read .*missing\.conf: ENOENT/);
  });

  it('reads a file', async () => {
    const file = join(dir, 'fcopy.conf');
    writeFileSync(file, 'allow = /srv/x\nfile-mode = 0640\n');
    await expect(loadConfig(file, true)).resolves.toMatchObject({ allow: ['/srv/x'], fileMode: 0o640 });
  });
});
