/**
 * Path validation and the no-follow directory walk, on real directories: names that are not one
 * component, relative and '..' paths, the allow-list, symbolic links among the directories
 * (refused, or followed when configured but then held to the allow-list), CREATE_PATH with exact
 * modes whatever the umask, and the held descriptor staying on the directory that was opened.
 */
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  type Refusal,
  type TargetDir,
  allowedPrefix,
  checkFileName,
  isRefusal,
  isWithin,
  openDirectory,
  procFdUsable,
  splitDirectory,
} from '../../../daemons/fcopy/paths.js';

const root = mkdtempSync(join(tmpdir(), 'fcopy-paths-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const walk = (path: string, opts: Partial<Parameters<typeof openDirectory>[1]> = {}) => {
  const parts = splitDirectory(path);
  if (isRefusal(parts)) throw new Error(parts.reason);
  return openDirectory(parts, {
    start: 0,
    create: false,
    dirMode: 0o755,
    followSymlinks: false,
    allow: [],
    ...opts,
  });
};

async function held(p: Promise<TargetDir | Refusal>): Promise<TargetDir> {
  const d = await p;
  if (isRefusal(d)) throw new Error(`refused: ${JSON.stringify(d)}`);
  return d;
}

describe('validation', () => {
  it('a file name is exactly one component', () => {
    expect(checkFileName('report.pdf')).toBeUndefined();
    expect(checkFileName('.hidden')).toBeUndefined();
    expect(checkFileName('Ünïcødé ファイル 📄')).toBeUndefined();
    expect(checkFileName('..a')).toBeUndefined();
    for (const bad of ['', '.', '..', 'a/b', '/abs', 'x\0y', 'é'.repeat(128)]) {
      expect(checkFileName(bad)?.refused).toBe('invalid-name');
    }
    expect(checkFileName('a'.repeat(255))).toBeUndefined();
  });

  it('the directory is absolute, without ..', () => {
    expect(splitDirectory('/a//b/./c/')).toEqual(['a', 'b', 'c']);
    expect(splitDirectory('/')).toEqual([]);
    expect(splitDirectory('a/b')).toMatchObject({ refused: 'relative-path' });
    expect(splitDirectory('')).toMatchObject({ refused: 'relative-path' });
    expect(splitDirectory('/a/../b')).toMatchObject({ refused: 'dot-dot' });
    expect(splitDirectory('/a/..')).toMatchObject({ refused: 'dot-dot' });
  });

  it('the allow-list picks the deepest allowed directory, component-wise', () => {
    expect(allowedPrefix(['srv', 'x'], [])).toBe(0);
    expect(allowedPrefix(['srv', 'in', 'a'], ['/srv/in'])).toBe(2);
    expect(allowedPrefix(['srv', 'in'], ['/srv/in'])).toBe(2);
    expect(allowedPrefix(['srv', 'inbox'], ['/srv/in'])).toBeUndefined();
    expect(allowedPrefix(['srv'], ['/srv/in'])).toBeUndefined();
    expect(allowedPrefix(['srv', 'in', 'deep', 'x'], ['/srv', '/srv/in/deep'])).toBe(3);
    expect(allowedPrefix(['anything'], ['/'])).toBe(0);
    expect(isWithin('/srv/in/x', ['/srv/in'])).toBe(true);
    expect(isWithin('/srv/inbox', ['/srv/in'])).toBe(false);
    expect(isWithin('/etc', ['/'])).toBe(true);
  });

  it('/proc/self/fd works here', async () => {
    expect(await procFdUsable()).toBe(true);
  });
});

describe('the walk', () => {
  it('opens an existing directory and reports where it really is', async () => {
    mkdirSync(join(root, 'plain/a/b'), { recursive: true });
    const d = await held(walk(`${root}/plain/a/b/`));
    expect(d.path).toBe(`${root}/plain/a/b`);
    expect(await d.realPath()).toBe(`${root}/plain/a/b`);
    expect(d.created).toEqual([]);
    await d.close();
  });

  it('a missing directory: refused without CREATE_PATH, made (exact mode, umask aside) with it', async () => {
    expect(await walk(`${root}/made/x/y`)).toMatchObject({ refused: 'missing' });
    expect(readdirSync(root)).not.toContain('made');
    const old = process.umask(0o077);
    try {
      const d = await held(walk(`${root}/made/x/y`, { create: true, dirMode: 0o751 }));
      expect(d.created).toEqual([`${root}/made`, `${root}/made/x`, `${root}/made/x/y`]);
      await d.close();
    } finally {
      process.umask(old);
    }
    for (const p of ['made', 'made/x', 'made/x/y']) expect(statSync(join(root, p)).mode & 0o777).toBe(0o751);
  });

  it('a file among the directories is refused', async () => {
    mkdirSync(join(root, 'f'));
    writeFileSync(join(root, 'f/file'), 'x');
    expect(await walk(`${root}/f/file/sub`, { create: true })).toMatchObject({ refused: 'not-directory' });
  });

  it('a symbolic link among the directories is refused, and nothing is made behind it', async () => {
    mkdirSync(join(root, 'sl/real'), { recursive: true });
    symlinkSync('real', join(root, 'sl/link'));
    expect(await walk(`${root}/sl/link/deeper`, { create: true })).toMatchObject({ refused: 'symlink' });
    expect(readdirSync(join(root, 'sl/real'))).toEqual([]);
    // A link high up the path is refused as well.
    symlinkSync(join(root, 'sl'), join(root, 'sl-alias'));
    expect(await walk(`${root}/sl-alias/real`)).toMatchObject({ refused: 'symlink' });
  });

  it('with follow-symlinked-dirs a link is followed; with an allow-list it must stay inside', async () => {
    mkdirSync(join(root, 'fl/allowed/real'), { recursive: true });
    mkdirSync(join(root, 'fl/outside'), { recursive: true });
    symlinkSync('real', join(root, 'fl/allowed/alias'));
    symlinkSync(join(root, 'fl/outside'), join(root, 'fl/allowed/escape'));
    const allow = [`${root}/fl/allowed`];
    const parts = (p: string) => splitDirectory(p) as string[];
    const start = allowedPrefix(parts(`${root}/fl/allowed/alias`), allow) as number;
    const opts = { start, create: false, dirMode: 0o755, followSymlinks: true, allow };
    const d = await held(openDirectory(parts(`${root}/fl/allowed/alias`), opts));
    expect(await d.realPath()).toBe(`${root}/fl/allowed/real`);
    await d.close();
    expect(await openDirectory(parts(`${root}/fl/allowed/escape`), opts)).toMatchObject({
      refused: 'not-allowed',
    });
    // Without an allow-list, following goes anywhere.
    const any = await held(walk(`${root}/fl/allowed/escape`, { followSymlinks: true }));
    expect(await any.realPath()).toBe(`${root}/fl/outside`);
    await any.close();
  });

  it('the allowed directory itself may be reached through a link (the administrator named it)', async () => {
    mkdirSync(join(root, 'ad/real/in'), { recursive: true });
    symlinkSync('real', join(root, 'ad/link'));
    const allow = [`${root}/ad/link`];
    const parts = splitDirectory(`${root}/ad/link/in`) as string[];
    const d = await held(
      openDirectory(parts, {
        start: allowedPrefix(parts, allow) as number,
        create: false,
        dirMode: 0o755,
        followSymlinks: false,
        allow,
      }),
    );
    expect(await d.realPath()).toBe(`${root}/ad/real/in`);
    await d.close();
  });

  it('the held directory stays the one opened, even if its path is swapped for a link', async () => {
    mkdirSync(join(root, 'sw/target'), { recursive: true });
    mkdirSync(join(root, 'sw/elsewhere'), { recursive: true });
    const d = await held(walk(`${root}/sw/target`));
    renameSync(join(root, 'sw/target'), join(root, 'sw/moved'));
    symlinkSync(join(root, 'sw/elsewhere'), join(root, 'sw/target'));
    writeFileSync(`/proc/self/fd/${d.fd}/probe`, 'x');
    await d.close();
    expect(readdirSync(join(root, 'sw/moved'))).toEqual(['probe']);
    expect(readdirSync(join(root, 'sw/elsewhere'))).toEqual([]);
  });
});
