/**
 * Property tests: every message survives encode -> decode, and no decoder throws on random or
 * truncated bytes.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CANCEL_FCOPY,
  COMPLETE_FCOPY,
  DATA_FRAGMENT,
  KVP_OP_DELETE,
  KVP_OP_ENUMERATE,
  KVP_OP_GET,
  KVP_OP_GET_IP_INFO,
  KVP_OP_REGISTER1,
  KVP_OP_SET,
  KVP_OP_SET_IP_INFO,
  REG_SZ,
  REG_U32,
  REG_U64,
  START_FILE_COPY,
  WRITE_TO_FILE,
} from '../../uapi/constants.js';
import {
  decodeFcopyDeviceMessage,
  decodeFcopyInt,
  decodeFcopyMessage,
  encodeFcopyInt,
  encodeFcopyMessage,
} from '../../uapi/fcopy.js';
import {
  type KvpHostMessage,
  type KvpIpInfo,
  type KvpReply,
  type KvpRequest,
  decodeKvpHostMessage,
  decodeKvpReply,
  decodeKvpRequest,
  encodeKvpHostMessage,
  encodeKvpReply,
  encodeKvpRequest,
} from '../../uapi/kvp.js';
import { utf16Truncated, utf8Truncated } from '../../uapi/strings.js';
import { decodeVssMessage, decodeVssReply, encodeVssReply, encodeVssRequest } from '../../uapi/vss.js';

const RUNS = { numRuns: 300 };

/** Well-formed Unicode text without NUL (a NUL ends a C string). */
const text = (maxLength: number) =>
  fc.string({ unit: 'grapheme', maxLength }).map((s) => s.replace(/\0/g, ''));
/** Text that fits a UTF-8 field of `size` bytes once truncated the way the encoder does. */
const utf8Fit = (size: number) => text(size).map((s) => utf8Truncated(s, size - 1).toString('utf8'));
const utf16Fit = (size: number) =>
  text(size / 2).map((s) => utf16Truncated(s, size / 2 - 1).toString('utf16le'));
const pool = fc.integer({ min: 0, max: 255 });
const u32 = fc.integer({ min: 0, max: 0xffffffff });

const ipInfo = (fit: (n: number) => fc.Arbitrary<string>): fc.Arbitrary<KvpIpInfo> =>
  fc.record({
    adapterId: fit(256),
    addrFamily: fc.integer({ min: 0, max: 255 }),
    dhcpEnabled: fc.integer({ min: 0, max: 255 }),
    ipAddr: fit(2048),
    subNet: fit(2048),
    gateWay: fit(1024),
    dnsAddr: fit(2048),
  });

const kvpRequest: fc.Arbitrary<KvpRequest> = fc.oneof(
  fc.record({ operation: fc.constant(KVP_OP_GET), pool, key: utf8Fit(512) }),
  fc.record({
    operation: fc.constant(KVP_OP_SET),
    pool,
    key: utf8Fit(512),
    value: utf8Fit(2048),
    valueType: u32,
  }),
  fc.record({ operation: fc.constant(KVP_OP_DELETE), pool, key: utf8Fit(512) }),
  fc.record({ operation: fc.constant(KVP_OP_ENUMERATE), pool, index: u32 }),
  fc.record({ operation: fc.constant(KVP_OP_GET_IP_INFO), pool, ip: ipInfo(utf8Fit) }),
  fc.record({ operation: fc.constant(KVP_OP_SET_IP_INFO), pool, ip: ipInfo(utf8Fit) }),
  fc.record({ operation: fc.constant(KVP_OP_REGISTER1), pool, version: utf8Fit(512) }),
) as fc.Arbitrary<KvpRequest>;

const kvpReply: fc.Arbitrary<KvpReply> = fc.oneof(
  fc.record({
    operation: fc.constantFrom(KVP_OP_GET, KVP_OP_ENUMERATE),
    error: fc.constant(0),
    key: utf8Fit(512),
    value: utf8Fit(2048),
  }),
  fc.record({ operation: fc.constant(KVP_OP_GET_IP_INFO), error: fc.constant(0), ip: ipInfo(utf8Fit) }),
  fc.record({ operation: fc.constantFrom(KVP_OP_SET, KVP_OP_DELETE, KVP_OP_SET_IP_INFO), error: u32 }),
  fc.record({
    operation: fc.constantFrom(KVP_OP_GET, KVP_OP_ENUMERATE, KVP_OP_GET_IP_INFO),
    error: fc.integer({ min: 1, max: 0xffffffff }),
  }),
);

const hostValue = fc.oneof(
  fc.record({ valueType: fc.constant(REG_SZ), value: utf16Fit(2048) }),
  fc.record({ valueType: fc.constant(REG_U32), value: u32.map(String) }),
  fc.record({
    valueType: fc.constant(REG_U64),
    value: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map(String),
  }),
);

const kvpHost: fc.Arbitrary<KvpHostMessage> = fc.oneof(
  fc
    .tuple(fc.constantFrom(KVP_OP_GET, KVP_OP_SET), pool, utf16Fit(512), hostValue)
    .map(([operation, p, key, v]) => ({ operation, pool: p, key, ...v })),
  fc.record({ operation: fc.constant(KVP_OP_DELETE), pool, key: utf16Fit(512) }),
  fc
    .tuple(pool, u32, utf16Fit(512), hostValue)
    .map(([p, index, key, v]) => ({ operation: KVP_OP_ENUMERATE, pool: p, index, key, ...v })),
  fc.record({
    operation: fc.constantFrom(KVP_OP_GET_IP_INFO, KVP_OP_SET_IP_INFO),
    pool,
    ip: ipInfo(utf16Fit),
  }),
) as fc.Arbitrary<KvpHostMessage>;

const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const fcopyMessage = (fit: (n: number) => fc.Arbitrary<string>) =>
  fc.oneof(
    fc.record({
      operation: fc.constant(START_FILE_COPY),
      fileName: fit(520),
      pathName: fit(520),
      copyFlags: u32,
      fileSize: u64,
    }),
    fc.record({
      operation: fc.constant(WRITE_TO_FILE),
      offset: u64,
      data: fc.uint8Array({ maxLength: DATA_FRAGMENT }).map((a) => Buffer.from(a)),
    }),
    fc.record({ operation: fc.constantFrom(COMPLETE_FCOPY, CANCEL_FCOPY) }),
  );

const normalise = (v: unknown) =>
  JSON.parse(
    JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x instanceof Uint8Array ? [...x] : x)),
  );

describe('round trips', () => {
  it('KVP requests (device format)', () => {
    fc.assert(
      fc.property(kvpRequest, (req) => {
        expect(decodeKvpRequest(encodeKvpRequest(req))).toEqual({ ok: true, value: req });
      }),
      RUNS,
    );
  });

  it('KVP replies (device format)', () => {
    fc.assert(
      fc.property(kvpReply, (reply) => {
        expect(decodeKvpReply(encodeKvpReply(reply), reply.operation)).toEqual({ ok: true, value: reply });
      }),
      RUNS,
    );
  });

  it('KVP host-format messages', () => {
    fc.assert(
      fc.property(kvpHost, (msg) => {
        expect(decodeKvpHostMessage(encodeKvpHostMessage(msg))).toEqual({ ok: true, value: msg });
      }),
      RUNS,
    );
  });

  it('VSS requests and replies', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 7 }), u32, u32, (operation, flags, error) => {
        expect(decodeVssMessage(encodeVssRequest(operation, flags))).toEqual({
          ok: true,
          value: { kind: 'request', operation, flags },
        });
        expect(decodeVssReply(encodeVssReply({ error, flags }))).toEqual({
          ok: true,
          value: { error, flags },
        });
      }),
      RUNS,
    );
  });

  it('FCOPY messages in both encodings, and the 4-byte ints', () => {
    fc.assert(
      fc.property(fcopyMessage(utf8Fit), (msg) => {
        expect(normalise(decodeFcopyMessage(encodeFcopyMessage(msg, 'utf8'), 'utf8'))).toEqual(
          normalise({ ok: true, value: msg }),
        );
      }),
      { numRuns: 150 },
    );
    fc.assert(
      fc.property(fcopyMessage(utf16Fit), (msg) => {
        expect(normalise(decodeFcopyMessage(encodeFcopyMessage(msg, 'utf16le'), 'utf16le'))).toEqual(
          normalise({ ok: true, value: msg }),
        );
      }),
      { numRuns: 150 },
    );
    fc.assert(
      fc.property(u32, (v) => {
        expect(decodeFcopyInt(encodeFcopyInt(v))).toEqual({ ok: true, value: v });
      }),
      RUNS,
    );
  });

  it('encoding never exceeds a field and truncation keeps whole characters', () => {
    fc.assert(
      fc.property(text(700), (s) => {
        const req = { operation: KVP_OP_GET, pool: 0, key: s } as const;
        const r = decodeKvpRequest(encodeKvpRequest(req));
        expect(r.ok).toBe(true);
        if (r.ok && r.value.operation === KVP_OP_GET) {
          expect(Buffer.byteLength(r.value.key)).toBeLessThanOrEqual(511);
          expect(s.startsWith(r.value.key)).toBe(true);
        }
      }),
      RUNS,
    );
  });
});

describe('decoders never throw', () => {
  const decoders: [string, (b: Uint8Array) => unknown][] = [
    ['decodeKvpRequest', decodeKvpRequest],
    ['decodeKvpReply', (b) => decodeKvpReply(b, b[0] ?? 0)],
    ['decodeKvpHostMessage', decodeKvpHostMessage],
    ['decodeVssMessage', decodeVssMessage],
    ['decodeVssReply', decodeVssReply],
    ['decodeFcopyMessage', (b) => decodeFcopyMessage(b, 'utf8')],
    ['decodeFcopyMessage/utf16', (b) => decodeFcopyMessage(b, 'utf16le')],
    ['decodeFcopyDeviceMessage', decodeFcopyDeviceMessage],
    ['decodeFcopyInt', decodeFcopyInt],
  ];

  it.each(decoders)('%s on random bytes', (_name, decode) => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 8000 }), (bytes) => {
        const r = decode(bytes) as { ok: boolean };
        expect(typeof r.ok).toBe('boolean');
      }),
      { numRuns: 200 },
    );
  });

  it('on every truncation and on random corruption of valid messages', () => {
    const valid = fc.oneof(
      kvpRequest.map((m) => encodeKvpRequest(m)),
      kvpHost.map((m) => encodeKvpHostMessage(m)),
      fcopyMessage(utf8Fit).map((m) => encodeFcopyMessage(m, 'utf8')),
      fcopyMessage(utf16Fit).map((m) => encodeFcopyMessage(m, 'utf16le')),
    );
    fc.assert(
      fc.property(
        valid,
        fc.nat(),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 20 }),
        (buf, cut, flips) => {
          const bytes = Buffer.from(buf);
          for (const [at, v] of flips) bytes[at % bytes.length] = v;
          const truncated = bytes.subarray(0, cut % (bytes.length + 1));
          for (const [, decode] of decoders) {
            expect(() => decode(bytes)).not.toThrow();
            expect(() => decode(truncated)).not.toThrow();
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});
