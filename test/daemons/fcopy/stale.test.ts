/**
 * Temporary names and the journal that lets a restarted daemon remove what a killed one left:
 * names always fit NAME_MAX; the sweep removes exactly the recorded temporaries that are still
 * regular files with a temporary's name, never follows a link to reach them, drops entries that
 * have nothing left to do, and a second instance can neither sweep nor journal.
 */
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { memoryLogger } from '../../../daemons/common/log.js';
import { FileJournal, type JournalEntry, isTempName, newId, tempName } from '../../../daemons/fcopy/stale.js';

const root = mkdtempSync(join(tmpdir(), 'fcopy-stale-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('temporary names', () => {
  it('are recognisable and fit NAME_MAX whatever the target name', () => {
    const id = newId();
    expect(id).toMatch(/^[0-9a-f]{12}$/);
    const t = tempName('report.pdf', 1234, id);
    expect(t).toBe(`.report.pdf.hv-fcopy-1234-${id}.tmp`);
    expect(isTempName(t)).toBe(true);
    for (const long of ['a'.repeat(255), 'é'.repeat(127), '📄'.repeat(63)]) {
      const n = tempName(long, 4194304, id);
      expect(Buffer.byteLength(n)).toBeLessThanOrEqual(255);
      expect(n).not.toContain('\uFFFD');
      expect(Buffer.from(n).toString()).toBe(n);
      expect(isTempName(n)).toBe(true);
    }
    for (const other of [
      'report.pdf',
      '.report.tmp',
      'x.hv-fcopy-1-0123456789ab.tmp',
      '.a.hv-fcopy-1-xyz.tmp',
    ]) {
      expect(isTempName(other)).toBe(false);
    }
  });
});

function entry(dir: string, tmp: string, extra: Partial<JournalEntry> = {}): JournalEntry {
  return { id: newId(), dir, tmp, target: 'f', pid: 99, started: '2026-01-01T00:00:00.000Z', ...extra };
}

describe('the journal', () => {
  it('is a 0700 directory locked by one instance at a time', async () => {
    const state = join(root, 'state-lock');
    const logger = memoryLogger();
    const first = await FileJournal.open(state, logger);
    expect(first).toBeDefined();
    expect(statSync(state).mode & 0o777).toBe(0o700);
    const second = await FileJournal.open(state, logger);
    expect(second).toBeUndefined();
    expect(logger.lines.some((l) => l.level === 'warn' && l.msg.includes('another hv-fcopy-ts holds'))).toBe(
      true,
    );
    await first?.close();
    const third = await FileJournal.open(state, logger);
    expect(third).toBeDefined();
    await third?.close();
  });

  it('an unusable state directory gives no journal and a warning', async () => {
    writeFileSync(join(root, 'not-a-dir'), 'x');
    const logger = memoryLogger();
    expect(await FileJournal.open(join(root, 'not-a-dir', 'state'), logger)).toBeUndefined();
    expect(logger.lines[0]?.msg).toMatch(/cannot use the state directory/);
  });

  it('record and forget', async () => {
    const state = join(root, 'state-rf');
    const j = (await FileJournal.open(state, memoryLogger()))!;
    const e = entry('/x', tempName('f', 1, newId()));
    await j.record(e);
    expect(readdirSync(state).sort()).toEqual([`${e.id}.json`, 'lock']);
    await j.forget(e.id);
    await j.forget(e.id); // twice is fine
    expect(readdirSync(state)).toEqual(['lock']);
    await j.close();
  });

  it('the sweep removes exactly what it should', async () => {
    const state = join(root, 'state-sweep');
    const work = join(root, 'work');
    mkdirSync(join(work, 'real'), { recursive: true });
    symlinkSync('real', join(work, 'link'));
    const logger = memoryLogger();
    const j = (await FileJournal.open(state, logger))!;
    const tmp = (n: string) => tempName(n, 42, newId());

    const present = entry(work, tmp('present'));
    writeFileSync(join(work, present.tmp), 'partial');
    const missing = entry(work, tmp('missing'));
    const isDir = entry(work, tmp('dir'));
    mkdirSync(join(work, isDir.tmp));
    const dirGone = entry(join(work, 'no-such-dir'), tmp('gone'));
    const notOurs = entry(work, 'precious.txt');
    writeFileSync(join(work, 'precious.txt'), 'keep me');
    const viaLink = entry(join(work, 'link'), tmp('vialink'));
    writeFileSync(join(work, 'real', viaLink.tmp), 'behind a link');
    const isLink = entry(work, tmp('islink'));
    writeFileSync(join(work, 'target-of-link'), 'keep me too');
    symlinkSync('target-of-link', join(work, isLink.tmp));
    for (const e of [present, missing, isDir, dirGone, notOurs, viaLink, isLink]) await j.record(e);
    writeFileSync(join(state, 'garbage.json'), '{"half": ');

    const r = await j.sweep();
    expect(r).toEqual({ removed: [`${work}/${present.tmp}`], kept: [] });
    expect(existsSync(join(work, present.tmp))).toBe(false);
    expect(existsSync(join(work, isDir.tmp))).toBe(true);
    expect(existsSync(join(work, 'precious.txt'))).toBe(true);
    expect(existsSync(join(work, 'real', viaLink.tmp))).toBe(true);
    expect(existsSync(join(work, 'target-of-link'))).toBe(true);
    // Every entry is dealt with.
    expect(readdirSync(state)).toEqual(['lock']);
    expect(
      logger.lines.some((l) => l.msg.startsWith(`removed the temporary file ${work}/${present.tmp}`)),
    ).toBe(true);
    await j.close();
  });
});
