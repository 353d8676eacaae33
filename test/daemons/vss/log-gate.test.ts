/** Log lines held while frozen: order kept, times kept, bounded, written after release. */
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LogGate, createGatedLogger, gatedLogger } from '../../../daemons/vss/log-gate.js';

const dir = mkdtempSync(join(tmpdir(), 'hv-vss-log-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function sink() {
  const chunks: string[] = [];
  return { chunks, write: (c: string) => chunks.push(c) };
}

describe('LogGate', () => {
  it('passes lines through, holds them in order, and writes them out on release', () => {
    const s = sink();
    const g = new LogGate(s);
    g.write('a\n');
    g.hold();
    g.write('b\n');
    g.write('c\n');
    expect(s.chunks).toEqual(['a\n']);
    expect(g.held).toBe(true);
    g.release();
    expect(s.chunks).toEqual(['a\n', 'b\nc\n']);
    g.write('d\n');
    expect(s.chunks.at(-1)).toBe('d\n');
    g.release();
    expect(s.chunks).toHaveLength(3);
  });

  it('drops what does not fit and says how many lines were dropped', () => {
    const s = sink();
    const g = new LogGate(s, 10);
    g.hold();
    for (const l of ['1234\n', '567890\n', 'x\n', 'y\n']) g.write(l);
    g.release();
    // '567890' does not fit; the shorter lines after it are dropped too (no holes).
    expect(s.chunks[0]).toBe('1234\n');
    expect(JSON.parse(s.chunks[1] ?? '{}')).toMatchObject({ level: 'warn', dropped: 3 });
  });
});

describe('gated loggers', () => {
  it('pino lines keep the time they were logged, not the time they were written', async () => {
    const s = sink();
    const { logger, gate } = gatedLogger(s, { name: 'hv-vss-ts', held: true });
    logger.info({ x: 1 }, 'while frozen');
    const loggedAt = Date.now();
    await new Promise((r) => setTimeout(r, 30));
    expect(s.chunks).toEqual([]);
    gate.release();
    const line = JSON.parse(s.chunks[0] ?? '{}') as {
      time: string;
      msg: string;
      name: string;
      level: string;
    };
    expect(line).toMatchObject({ msg: 'while frozen', name: 'hv-vss-ts', level: 'info', x: 1 });
    expect(Math.abs(Date.parse(line.time) - loggedAt)).toBeLessThan(25);
  });

  it('createGatedLogger writes JSON lines to the given fd', () => {
    const path = join(dir, 'out.log');
    const fd = openSync(path, 'w');
    const { logger, gate } = createGatedLogger({ name: 'hv-vss-ts', fd });
    logger.warn('one');
    gate.hold();
    logger.error('two');
    expect(readFileSync(path, 'utf8').split('\n').filter(Boolean)).toHaveLength(1);
    gate.release();
    closeSync(fd);
    expect(
      readFileSync(path, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l).msg),
    ).toEqual(['one', 'two']);
  });
});
