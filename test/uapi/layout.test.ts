/**
 * The layout tables against the real header. If any offset, size or constant in uapi/ differs from
 * what the C compiler reports for the system's <linux/hyperv.h>, this fails; it never skips.
 */
import { existsSync } from 'node:fs';
import { arch } from 'node:os';
import { beforeAll, describe, expect, it } from 'vitest';
import { UAPI_HEADER_CONSTANTS } from '../../uapi/constants.js';
import { type Struct, UAPI_STRUCTS } from '../../uapi/layout.js';
import { HEADER_PATH, type HeaderFacts, layoutMismatches, probeHeader } from '../support/header-probe.js';

let facts: HeaderFacts;

beforeAll(() => {
  if (!existsSync(HEADER_PATH)) {
    throw new Error(`${HEADER_PATH} is missing: install linux-libc-dev (bash .ci/deps does)`);
  }
  facts = probeHeader(UAPI_STRUCTS, Object.keys(UAPI_HEADER_CONSTANTS));
});

describe('UAPI layout tables against <linux/hyperv.h>', () => {
  it('the probe saw every struct, field and constant', () => {
    const fieldCount = UAPI_STRUCTS.reduce((n, s) => n + Object.keys(s.fields).length, 0);
    expect(facts.sizes.size).toBe(UAPI_STRUCTS.length);
    expect(facts.fields.size).toBe(fieldCount);
    expect(facts.constants.size).toBe(Object.keys(UAPI_HEADER_CONSTANTS).length);
  });

  it('every sizeof and every field offset and size match', () => {
    expect(layoutMismatches(UAPI_STRUCTS, facts)).toEqual([]);
  });

  it('every constant matches', () => {
    const wrong = Object.entries(UAPI_HEADER_CONSTANTS)
      .filter(([name, value]) => facts.constants.get(name) !== BigInt(value))
      .map(([name, value]) => `${name}: ours ${value}, header ${facts.constants.get(name)}`);
    expect(wrong).toEqual([]);
  });

  it.runIf(arch() === 'x64')('has the x86_64 sizes the kernel documents', () => {
    expect(facts.sizes.get('hv_kvp_msg')).toBe(7432);
    expect(facts.sizes.get('hv_vss_msg')).toBe(12);
  });

  it('would notice any single field moved by one byte', () => {
    // Shift each field of each struct in a copy of the tables; the comparison must flag it.
    for (const s of UAPI_STRUCTS) {
      for (const [name, f] of Object.entries(s.fields)) {
        const shifted: Struct = {
          ...s,
          fields: { ...s.fields, [name]: { offset: f.offset + 1, size: f.size } },
        };
        const bad = layoutMismatches([shifted], facts);
        expect(bad, `${s.name}.${name}`).toHaveLength(1);
      }
      const resized: Struct = { ...s, size: s.size + 1 };
      expect(layoutMismatches([resized], facts)).toHaveLength(1);
    }
  });
});
