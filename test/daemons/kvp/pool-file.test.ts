/** The pool record codec and the journal codec/recovery decision: pure, byte by byte. */
import { spawnSync } from 'node:child_process';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  POOL_KEY_FIELD,
  POOL_RECORD_SIZE,
  POOL_VALUE_FIELD,
  decodeRecord,
  encodeRecord,
  storableProblem,
} from '../../../daemons/kvp/pool-file.js';
import {
  type JournalEntry,
  decodeJournal,
  encodeJournal,
  planRecovery,
} from '../../../daemons/kvp/pool-journal.js';

const R = POOL_RECORD_SIZE;

/** A record as the C daemon writes it: the strings, then heap garbage after each NUL. */
function cDaemonRecord(key: string, value: string, garbage = 0xa5): Buffer {
  const buf = Buffer.alloc(R, garbage);
  const k = Buffer.from(key);
  k.copy(buf, 0);
  buf[k.length] = 0;
  const v = Buffer.from(value);
  v.copy(buf, 512);
  buf[512 + v.length] = 0;
  return buf;
}

describe('pool record format', () => {
  it('is 2560 bytes: key[512] at 0, value[2048] at 512', () => {
    expect(R).toBe(2560);
    expect(POOL_KEY_FIELD).toEqual({ offset: 0, size: 512 });
    expect(POOL_VALUE_FIELD).toEqual({ offset: 512, size: 2048 });
  });

  it('encodes UTF-8, NUL-terminated and zero-padded, byte for byte', () => {
    const rec = encodeRecord('ab', 'c€');
    expect(rec.length).toBe(2560);
    expect([...rec.subarray(0, 4)]).toEqual([0x61, 0x62, 0, 0]);
    expect(rec.subarray(2, 512).every((b) => b === 0)).toBe(true);
    expect([...rec.subarray(512, 518)]).toEqual([0x63, 0xe2, 0x82, 0xac, 0, 0]);
    expect(rec.subarray(516).every((b) => b === 0)).toBe(true);
  });

  it("equals what cloud-init's struct.pack('512s2048s') writes", () => {
    const py = spawnSync('python3', [
      '-c',
      `import struct,sys\nsys.stdout.buffer.write(struct.pack('512s2048s', 'PROVISIONING_REPORT'.encode('utf-8'), 'result=success|é'.encode('utf-8')))`,
    ]);
    expect(py.status).toBe(0);
    expect(encodeRecord('PROVISIONING_REPORT', 'result=success|é').equals(py.stdout)).toBe(true);
  });

  it('reads a C-daemon record with garbage after the NULs', () => {
    expect(decodeRecord(cDaemonRecord('HostName', 'host-01.example'))).toEqual({
      ok: true,
      key: 'HostName',
      value: 'host-01.example',
    });
    // at an offset inside a larger buffer
    const two = Buffer.concat([cDaemonRecord('a', '1', 0xff), cDaemonRecord('b', '2', 0x00)]);
    expect(decodeRecord(two, R)).toEqual({ ok: true, key: 'b', value: '2' });
  });

  it('accepts a value that fills its whole field, and an empty value', () => {
    const rec = encodeRecord('k', '');
    expect(decodeRecord(rec)).toEqual({ ok: true, key: 'k', value: '' });
    rec.fill(0x41, 512);
    expect(decodeRecord(rec)).toEqual({ ok: true, key: 'k', value: 'A'.repeat(2048) });
  });

  it('classifies corrupt records', () => {
    const unterminated = Buffer.alloc(R, 0x41);
    expect(decodeRecord(unterminated)).toMatchObject({ ok: false, reason: 'unterminated-key' });
    expect(decodeRecord(Buffer.alloc(R))).toMatchObject({ ok: false, reason: 'empty-key' });
    const badKey = encodeRecord('key', 'v');
    badKey[1] = 0xff;
    expect(decodeRecord(badKey)).toMatchObject({ ok: false, reason: 'invalid-utf8-key' });
    const badValue = encodeRecord('key', 'v€');
    badValue[513] = 0xc0;
    expect(decodeRecord(badValue)).toMatchObject({ ok: false, reason: 'invalid-utf8-value' });
    // a full value field cut inside a multi-byte character
    const cut = encodeRecord('k', '');
    cut.fill(0x41, 512);
    cut[2559] = 0xe2;
    expect(decodeRecord(cut)).toMatchObject({ ok: false, reason: 'invalid-utf8-value' });
  });

  it('rejects what it cannot store as given, and never truncates', () => {
    expect(storableProblem('k'.repeat(511), 'key')).toBeUndefined();
    expect(storableProblem('k'.repeat(512), 'key')).toMatch(/512 bytes/);
    expect(storableProblem('k'.repeat(509) + '€', 'key')).toMatch(/512 bytes/); // 509 + 3
    expect(storableProblem('k'.repeat(508) + '€', 'key')).toBeUndefined(); // 508 + 3 = 511
    expect(storableProblem('v'.repeat(2047), 'value')).toBeUndefined();
    expect(storableProblem('v'.repeat(2046) + 'é', 'value')).toMatch(/2048 bytes/);
    expect(storableProblem('', 'key')).toMatch(/empty/);
    expect(storableProblem('', 'value')).toBeUndefined();
    expect(storableProblem('a\0b', 'key')).toMatch(/NUL/);
    expect(storableProblem('a\ud800', 'value')).toMatch(/surrogate/);
  });

  it('round-trips every storable key and value', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 120 }), fc.string({ maxLength: 400 }), (k, v) => {
        fc.pre(storableProblem(k, 'key') === undefined && storableProblem(v, 'value') === undefined);
        expect(decodeRecord(encodeRecord(k, v))).toEqual({ ok: true, key: k, value: v });
      }),
    );
  });
});

function rec(key: string, value: string): Buffer {
  return encodeRecord(key, value);
}

describe('pool journal codec', () => {
  const overwrite: JournalEntry = {
    kind: 'overwrite',
    offset: 2 * R,
    oldSize: 4 * R + 7,
    newSize: 4 * R + 7,
    before: rec('k', 'old'),
    after: rec('k', 'new'),
  };
  const tail = [rec('a', '1'), rec('b', '2'), rec('c', '3')];
  const shift: JournalEntry = {
    kind: 'shift-delete',
    offset: R,
    oldSize: 4 * R,
    newSize: 3 * R,
    before: Buffer.concat([tail[0]!, tail[1]!]),
    after: Buffer.concat([tail[1]!, tail[2]!]),
  };

  it('round-trips both kinds; a delete stores the deleted record and the shifted tail only', () => {
    for (const entry of [overwrite, shift]) {
      const d = decodeJournal(encodeJournal(entry));
      expect(d.ok).toBe(true);
      if (d.ok) {
        expect(d.value).toMatchObject({ kind: entry.kind, offset: entry.offset, oldSize: entry.oldSize });
        expect(d.value.before.equals(entry.before)).toBe(true);
        expect(d.value.after.equals(entry.after)).toBe(true);
      }
    }
    expect(encodeJournal(overwrite).length).toBe(40 + 2 * R + 32);
    expect(encodeJournal(shift).length).toBe(40 + 3 * R + 32);
    const head = encodeJournal(overwrite).subarray(0, 40);
    expect(head.subarray(0, 6).toString('latin1')).toBe('KVPJ\x01\x01');
    expect(head.readBigUInt64LE(8)).toBe(BigInt(2 * R));
  });

  it('refuses a shift-delete whose before is not the after shifted by one record', () => {
    expect(() => encodeJournal({ ...shift, before: Buffer.concat([tail[0]!, tail[0]!]) })).toThrow(
      RangeError,
    );
  });

  it('reports a torn or damaged journal instead of trusting it', () => {
    const bytes = encodeJournal(overwrite);
    for (const cut of [0, 10, 40, 1000, bytes.length - 1]) {
      expect(decodeJournal(bytes.subarray(0, cut)).ok).toBe(false);
    }
    const flipped = Buffer.from(bytes);
    flipped[100] = (flipped[100] ?? 0) ^ 1;
    const d = decodeJournal(flipped);
    expect(d.ok ? null : d.error.message).toMatch(/checksum/);
    const bad = Buffer.from(bytes);
    bad[0] = 0x58;
    expect(decodeJournal(bad).ok).toBe(false);
  });
});

describe('pool journal recovery decision', () => {
  const before = rec('k', 'a'.repeat(1500));
  const after = rec('k', 'b'.repeat(1800));
  const entry: JournalEntry = { kind: 'overwrite', offset: R, oldSize: 3 * R, newSize: 3 * R, before, after };

  it('does nothing when the change is complete or never began', () => {
    expect(planRecovery(entry, 3 * R, after, undefined)).toEqual({ action: 'none', why: 'applied' });
    expect(planRecovery(entry, 3 * R, before, undefined)).toEqual({ action: 'none', why: 'not-started' });
  });

  it('rolls a torn region back to before, wherever the tear is', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: R - 1 }), fc.integer({ min: 1, max: R - 1 }), (a, b) => {
        const lo = Math.min(a, b);
        const hi = Math.max(a, b);
        // after[lo..hi) landed, the rest is still before (a tear on both sides)
        const torn = Buffer.concat([before.subarray(0, lo), after.subarray(lo, hi), before.subarray(hi)]);
        fc.pre(!torn.equals(before) && !torn.equals(after));
        const plan = planRecovery(entry, 3 * R, torn, undefined);
        expect(plan.action).toBe('roll-back');
        if (plan.action === 'roll-back') {
          expect(plan.offset).toBe(R);
          expect(plan.bytes.equals(before)).toBe(true);
        }
      }),
    );
  });

  it('leaves alone a region another program rewrote, or a file that got shorter', () => {
    expect(planRecovery(entry, 3 * R, rec('other', 'x'), undefined).action).toBe('discard');
    expect(planRecovery(entry, R + 100, after.subarray(0, 100), undefined).action).toBe('discard');
  });

  it('finishes a delete whose shifted tail landed but whose truncation did not', () => {
    const a = rec('a', '1');
    const b = rec('b', '2');
    const c = rec('c', '3');
    const del: JournalEntry = {
      kind: 'shift-delete',
      offset: 0,
      oldSize: 3 * R + 100,
      newSize: 2 * R,
      before: Buffer.concat([a, b]),
      after: Buffer.concat([b, c]),
    };
    expect(planRecovery(del, 3 * R + 100, Buffer.concat([b, c]), c)).toEqual({
      action: 'truncate',
      size: 2 * R,
    });
    // truncated already: done
    expect(planRecovery(del, 2 * R, Buffer.concat([b, c]), Buffer.alloc(0))).toEqual({
      action: 'none',
      why: 'applied',
    });
    // truncated, then someone appended another record: not ours to cut
    expect(planRecovery(del, 3 * R + 100, Buffer.concat([b, c]), rec('z', '9')).action).toBe('none');
    // torn shift: roll back the region; the last record is still there
    const torn = Buffer.concat([b.subarray(0, 3000 - R), a.subarray(3000 - R), b]);
    expect(planRecovery(del, 3 * R + 100, torn, c).action).toBe('roll-back');
  });
});
