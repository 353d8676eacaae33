/**
 * vmbus_prep_negotiate_resp (kernel-protocol.md §3.3). Expected payloads are written out byte by
 * byte where the reference gives them.
 */
import { describe, expect, it } from 'vitest';
import { ICMSGTYPE_KVPEXCHANGE, encodeIcMessage } from '../../../kernel-shim/channel/icmsg.js';
import {
  FCOPY_FW_VERSIONS,
  FCOPY_SRV_VERSIONS,
  IC_VERSION_NEGOTIATION_MAX_VER_COUNT,
  KVP_FW_VERSIONS,
  KVP_SRV_VERSIONS,
  VSS_FW_VERSIONS,
  VSS_SRV_VERSIONS,
  decodeNegotiateResponse,
  encodeNegotiateRequest,
  icVersion,
  prepNegotiateResponse,
} from '../../../kernel-shim/channel/negotiate.js';

const v = icVersion;

/** The §3.3 example request: F=2 {3.0, 1.0}, M=3 {4.0, 3.0, 1.0}, status 0x12345678. */
function exampleRequest(): Buffer {
  // prettier-ignore
  return Buffer.from([
    0, 0, 0, 0, 48, 0, 0, 0, // vmbuspipe_hdr: flags 0, msgsize 48
    3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 28, 0, // icverframe 3.0, icmsgtype 0, icvermsg 0.0, icmsgsize 28
    0x78, 0x56, 0x34, 0x12, 0, 3, 0, 0, // status, ictransaction_id, icflags 3, reserved
    2, 0, 3, 0, 0, 0, 0, 0, // icframe_vercnt 2, icmsg_vercnt 3, reserved
    3, 0, 0, 0, 1, 0, 0, 0, // framework 3.0, 1.0
    4, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, // service 4.0, 3.0, 1.0
  ]);
}

/** A negotiate payload with the given counts and entries ({major, minor} pairs), padded to `length`. */
function request(f: number, m: number, entries: [number, number][], length?: number): Buffer {
  const buf = Buffer.alloc(length ?? 36 + 4 * entries.length);
  buf.writeUInt16LE(0, 12); // icmsgtype NEGOTIATE
  buf.writeUInt16LE(f, 28);
  buf.writeUInt16LE(m, 30);
  entries.forEach(([major, minor], i) => {
    if (36 + 4 * i + 4 <= buf.length) {
      buf.writeUInt16LE(major, 36 + 4 * i);
      buf.writeUInt16LE(minor, 38 + 4 * i);
    }
  });
  return buf;
}

const entry = (buf: Buffer, i: number) => [buf.readUInt16LE(36 + 4 * i), buf.readUInt16LE(38 + 4 * i)];
const counts = (buf: Buffer) => [buf.readUInt16LE(28), buf.readUInt16LE(30)];

describe('guest offers', () => {
  it('are the util drivers lists in preference order', () => {
    expect(KVP_FW_VERSIONS).toEqual([0x30000, 0x10000]);
    expect(KVP_SRV_VERSIONS).toEqual([0x40000, 0x30000, 0x10000]);
    expect(VSS_FW_VERSIONS).toEqual([0x30000]);
    expect(VSS_SRV_VERSIONS).toEqual([0x50000]);
    expect(FCOPY_FW_VERSIONS).toEqual([0x30000]);
    expect(FCOPY_SRV_VERSIONS).toEqual([0x10001]);
    expect(IC_VERSION_NEGOTIATION_MAX_VER_COUNT).toBe(100);
  });
});

describe('prepNegotiateResponse', () => {
  it('answers the §3.3 KVP example byte for byte', () => {
    const payload = exampleRequest();
    expect(payload.length).toBe(56);
    expect(prepNegotiateResponse(payload, KVP_FW_VERSIONS, KVP_SRV_VERSIONS)).toEqual({
      ok: true,
      fwVersion: 0x30000,
      srvVersion: 0x40000,
    });
    // prettier-ignore
    expect([...payload]).toEqual([
      0, 0, 0, 0, 48, 0, 0, 0,
      3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, // icmsgsize = 16
      0x78, 0x56, 0x34, 0x12, 0, 3, 0, 0, // status and icflags untouched (the caller sets icflags)
      1, 0, 1, 0, 0, 0, 0, 0, // counts (1, 1)
      3, 0, 0, 0, // entries[0] = 3.0
      4, 0, 0, 0, // entries[1] = 4.0
      4, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, // entries[2..4] as sent
    ]);
  });

  it('picks in the guest preference order, not the host order', () => {
    const payload = request(2, 3, [
      [1, 0],
      [3, 0],
      [1, 0],
      [3, 0],
      [4, 0],
    ]);
    expect(prepNegotiateResponse(payload, KVP_FW_VERSIONS, KVP_SRV_VERSIONS)).toEqual({
      ok: true,
      fwVersion: v(3, 0),
      srvVersion: v(4, 0),
    });
    expect([entry(payload, 0), entry(payload, 1)]).toEqual([
      [3, 0],
      [4, 0],
    ]);
  });

  it('matches framework entries only among the first F and service entries only among the next M', () => {
    // 4.0 is offered, but as a framework version; 3.0 as a service version.
    const payload = request(2, 2, [
      [4, 0],
      [3, 0],
      [1, 0],
      [3, 0],
    ]);
    expect(prepNegotiateResponse(payload, KVP_FW_VERSIONS, KVP_SRV_VERSIONS)).toEqual({
      ok: true,
      fwVersion: v(3, 0),
      srvVersion: v(3, 0),
    });
    const none = request(1, 1, [
      [4, 0],
      [3, 0],
    ]);
    expect(prepNegotiateResponse(none, KVP_FW_VERSIONS, KVP_SRV_VERSIONS)).toEqual({ ok: false });
  });

  it('needs an exact (major, minor) match', () => {
    const payload = request(1, 1, [
      [3, 0],
      [1, 0],
    ]);
    expect(prepNegotiateResponse(payload, FCOPY_FW_VERSIONS, FCOPY_SRV_VERSIONS)).toEqual({
      ok: false,
      fwVersion: v(3, 0),
    });
    const ok = request(1, 1, [
      [3, 0],
      [1, 1],
    ]);
    expect(prepNegotiateResponse(ok, FCOPY_FW_VERSIONS, FCOPY_SRV_VERSIONS).ok).toBe(true);
  });

  it('no framework match: counts (0, 0), entries (F, 0) and (M, 0), the rest untouched', () => {
    const payload = request(2, 1, [
      [2, 0],
      [1, 1],
      [5, 0],
    ]);
    payload.writeUInt32LE(0xdeadbeef, 20);
    expect(prepNegotiateResponse(payload, VSS_FW_VERSIONS, VSS_SRV_VERSIONS)).toEqual({ ok: false });
    expect(counts(payload)).toEqual([0, 0]);
    expect([entry(payload, 0), entry(payload, 1), entry(payload, 2)]).toEqual([
      [2, 0],
      [1, 0],
      [5, 0],
    ]);
    expect(payload.readUInt16LE(18)).toBe(16);
    expect(payload.readUInt32LE(20)).toBe(0xdeadbeef);
  });

  it('framework found but no service match: counts (0, 0), entry[0] = framework, entry[1] = (M, 0)', () => {
    const payload = request(1, 2, [
      [3, 0],
      [4, 0],
      [6, 0],
    ]);
    expect(prepNegotiateResponse(payload, VSS_FW_VERSIONS, VSS_SRV_VERSIONS)).toEqual({
      ok: false,
      fwVersion: v(3, 0),
    });
    expect(counts(payload)).toEqual([0, 0]);
    expect([entry(payload, 0), entry(payload, 1), entry(payload, 2)]).toEqual([
      [3, 0],
      [2, 0],
      [6, 0],
    ]);
  });

  it('accepts 100 entries per list and refuses 101', () => {
    const fw: [number, number][] = Array.from({ length: 100 }, (_, i) => [10 + i, 0]);
    fw[99] = [3, 0];
    const srv: [number, number][] = Array.from({ length: 100 }, (_, i) => [20 + i, 0]);
    srv[99] = [5, 0];
    const ok = request(100, 100, [...fw, ...srv]);
    expect(prepNegotiateResponse(ok, VSS_FW_VERSIONS, VSS_SRV_VERSIONS)).toEqual({
      ok: true,
      fwVersion: v(3, 0),
      srvVersion: v(5, 0),
    });

    const tooMany = request(101, 1, [...fw, [3, 0], [5, 0]]);
    const before = Buffer.from(tooMany);
    expect(prepNegotiateResponse(tooMany, VSS_FW_VERSIONS, VSS_SRV_VERSIONS)).toEqual({ ok: false });
    expect(counts(tooMany)).toEqual([0, 0]);
    expect([entry(tooMany, 0), entry(tooMany, 1)]).toEqual([
      [101, 0],
      [1, 0],
    ]);
    expect(tooMany.subarray(44)).toEqual(before.subarray(44));

    const tooManyServices = request(1, 101, [[3, 0], ...srv, [5, 0]]);
    expect(prepNegotiateResponse(tooManyServices, VSS_FW_VERSIONS, VSS_SRV_VERSIONS)).toEqual({ ok: false });
    expect([entry(tooManyServices, 0), entry(tooManyServices, 1)]).toEqual([
      [1, 0],
      [101, 0],
    ]);
  });

  it('fails when the counts claim more entries than the payload holds', () => {
    const payload = exampleRequest().subarray(0, 52); // one service entry short
    expect(prepNegotiateResponse(payload, KVP_FW_VERSIONS, KVP_SRV_VERSIONS)).toEqual({ ok: false });
    expect(counts(payload)).toEqual([0, 0]);
    expect([entry(payload, 0), entry(payload, 1)]).toEqual([
      [2, 0],
      [3, 0],
    ]);
    expect(payload.readUInt16LE(18)).toBe(16);
  });

  it('modifies nothing when the payload is shorter than 32 bytes', () => {
    for (let n = 0; n < 32; n++) {
      const payload = exampleRequest().subarray(0, n);
      const before = Buffer.from(payload);
      expect(prepNegotiateResponse(payload, KVP_FW_VERSIONS, KVP_SRV_VERSIONS)).toEqual({ ok: false });
      expect(payload).toEqual(before);
    }
  });

  it('with 32 to 43 bytes writes icmsgsize, counts and only the entry halves that fit', () => {
    const p34 = request(0, 0, [], 34).fill(0xee, 32);
    expect(prepNegotiateResponse(p34, KVP_FW_VERSIONS, KVP_SRV_VERSIONS)).toEqual({ ok: false });
    expect([...p34.subarray(18, 20)]).toEqual([16, 0]);
    expect(counts(p34)).toEqual([0, 0]);
    expect([...p34.subarray(32)]).toEqual([0xee, 0xee]);

    const p38 = request(1, 0, [[3, 0]], 38); // 36 + 4 > 38: length check fails
    p38.fill(0xee, 38);
    expect(prepNegotiateResponse(p38, KVP_FW_VERSIONS, KVP_SRV_VERSIONS)).toEqual({ ok: false });
    expect([...p38.subarray(28, 38)]).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 1, 0]); // counts 0,0; entry[0].major = F = 1

    const p40 = request(1, 0, [[3, 0]]); // F=1, M=0: fits, but no service can match
    expect(prepNegotiateResponse(p40, KVP_FW_VERSIONS, KVP_SRV_VERSIONS)).toEqual({
      ok: false,
      fwVersion: v(3, 0),
    });
    expect(p40.length).toBe(40);
    expect(entry(p40, 0)).toEqual([3, 0]);
  });

  it('works on a view inside a larger buffer', () => {
    const outer = Buffer.alloc(70, 0xaa);
    exampleRequest().copy(outer, 7);
    const view = outer.subarray(7, 63);
    expect(prepNegotiateResponse(view, KVP_FW_VERSIONS, KVP_SRV_VERSIONS).ok).toBe(true);
    expect(counts(view)).toEqual([1, 1]);
    expect([...outer.subarray(0, 7), ...outer.subarray(63)]).toEqual(Array(14).fill(0xaa));
  });
});

describe('host-side helpers', () => {
  it('encodeNegotiateRequest builds the §3.3 example request', () => {
    const req = encodeNegotiateRequest([v(3, 0), v(1, 0)], [v(4, 0), v(3, 0), v(1, 0)], {
      status: 0x12345678,
      frameVersion: { major: 3, minor: 0 },
    });
    expect(req).toEqual(exampleRequest());
  });

  it('decodeNegotiateResponse reads what prepNegotiateResponse wrote', () => {
    const payload = exampleRequest();
    prepNegotiateResponse(payload, KVP_FW_VERSIONS, KVP_SRV_VERSIONS);
    const r = decodeNegotiateResponse(payload);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value).toMatchObject({
      frameworkCount: 1,
      serviceCount: 1,
      accepted: true,
      fwVersion: v(3, 0),
      srvVersion: v(4, 0),
    });
    expect(r.value.header.msgSize).toBe(16);

    const failed = encodeNegotiateRequest([v(2, 0)], [v(9, 9)]);
    prepNegotiateResponse(failed, KVP_FW_VERSIONS, KVP_SRV_VERSIONS);
    const f = decodeNegotiateResponse(failed);
    expect(f.ok && f.value).toMatchObject({
      accepted: false,
      frameworkCount: 0,
      fwVersion: v(1, 0),
      srvVersion: v(1, 0),
    });
  });

  it('decodeNegotiateResponse never throws on bad input', () => {
    for (let n = 0; n < 32; n++) {
      const r = decodeNegotiateResponse(exampleRequest().subarray(0, n));
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error.code).toBe('too-short');
    }
    const wrongType = decodeNegotiateResponse(
      encodeIcMessage({ msgType: ICMSGTYPE_KVPEXCHANGE }, new Uint8Array(16)),
    );
    expect(wrongType.ok).toBe(false);
    if (!wrongType.ok) expect(wrongType.error.code).toBe('invalid-field');
    const countsOnly = decodeNegotiateResponse(exampleRequest().subarray(0, 36));
    expect(countsOnly.ok && countsOnly.value).toMatchObject({ accepted: false, frameworkCount: 2 });
    expect(countsOnly.ok && 'fwVersion' in countsOnly.value).toBe(false);
  });
});
