/**
 * Property tests of the ring against a simple model: a FIFO of packets and a byte count.
 * Small rings (256 / 512 data bytes) make wrap-around frequent.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  FEAT_PENDING_SEND_SZ,
  HV_RING_BUFFER_HEADER_SIZE,
  RingBuffer,
} from '../../../kernel-shim/channel/ring.js';

type Op =
  | { kind: 'write'; payload: Uint8Array; transId: bigint; type: number; flags: number }
  | { kind: 'writeNear'; slack: number; sub: number; fillByte: number }
  | { kind: 'read' }
  | { kind: 'mask'; value: number }
  | { kind: 'pending'; value: number; feature: boolean };

const opArb = (dataSize: number): fc.Arbitrary<Op> =>
  fc.oneof(
    {
      weight: 5,
      arbitrary: fc.record({
        kind: fc.constant('write' as const),
        payload: fc
          .oneof(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: dataSize }))
          .chain((n) => fc.uint8Array({ minLength: n, maxLength: n })),
        transId: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
        type: fc.integer({ min: 0, max: 0xffff }),
        flags: fc.integer({ min: 0, max: 0xffff }),
      }),
    },
    {
      // A payload sized so that total = free + slack: exercises the exact "free <= total" boundary.
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('writeNear' as const),
        slack: fc.constantFrom(-16, -8, 0, 8),
        sub: fc.integer({ min: 0, max: 7 }),
        fillByte: fc.integer({ min: 1, max: 255 }),
      }),
    },
    { weight: 4, arbitrary: fc.constant({ kind: 'read' as const }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('mask' as const), value: fc.constantFrom(0, 1) }) },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('pending' as const),
        value: fc.oneof(
          fc.constant(0),
          fc.integer({ min: 1, max: dataSize / 8 + 1 }).map((k) => k * 8),
          fc.integer({ min: 1, max: dataSize + 8 }),
        ),
        feature: fc.boolean(),
      }),
    },
  );

const scenario = fc.constantFrom(256, 512).chain((dataSize) =>
  fc.record({
    dataSize: fc.constant(dataSize),
    ops: fc.array(opArb(dataSize), { minLength: 20, maxLength: 150 }),
  }),
);

const align8 = (n: number) => (n + 7) & ~7;

function trailerAt(ring: RingBuffer, at: number): bigint {
  let v = 0n;
  for (let i = 7; i >= 0; i--) {
    v = (v << 8n) | BigInt(ring.memory[HV_RING_BUFFER_HEADER_SIZE + ((at + i) % ring.dataSize)]!);
  }
  return v;
}

describe('ring buffer model properties', () => {
  it('delivers every accepted packet in order, refuses exactly when free <= total, and signals per §6.5', () => {
    fc.assert(
      fc.property(scenario, ({ dataSize, ops }) => {
        const ring = RingBuffer.create(dataSize);
        const queue: { payload: Uint8Array; transId: bigint; type: number; flags: number; total: number }[] =
          [];
        let used = 0;

        for (const original of ops) {
          let op = original;
          if (op.kind === 'writeNear') {
            const length = dataSize - used - 24 + op.slack - op.sub;
            if (length < 0) continue;
            op = {
              kind: 'write',
              payload: new Uint8Array(length).fill(op.fillByte),
              transId: 1n,
              type: 6,
              flags: 0,
            };
          }
          if (op.kind === 'mask') {
            ring.interruptMask = op.value;
          } else if (op.kind === 'pending') {
            ring.pendingSendSz = op.value;
            ring.featureBits = op.feature ? FEAT_PENDING_SEND_SZ : 0;
          } else if (op.kind === 'write') {
            const packetLen = 16 + align8(op.payload.length);
            const total = packetLen + 8;
            const free = dataSize - used;
            const wasEmpty = used === 0;
            const oldWrite = ring.writeIndex;
            const before = ring.memory.slice();
            const r = ring.writePacket(op, op.payload);
            if (free <= total) {
              expect(r).toEqual({ ok: false, errno: 'EAGAIN' });
              expect(Buffer.compare(ring.memory, before)).toBe(0);
            } else {
              expect(r).toEqual({ ok: true, signal: wasEmpty && ring.interruptMask === 0 });
              expect(trailerAt(ring, oldWrite + packetLen)).toBe(BigInt(oldWrite) << 32n);
              queue.push({ ...op, total });
              used += total;
            }
          } else if (op.kind === 'read') {
            const freeBefore = dataSize - used;
            const r = ring.readPacket(dataSize);
            const expected = queue.shift();
            if (expected === undefined) {
              expect(r).toBeUndefined();
            } else {
              expect(r?.ok).toBe(true);
              if (r === undefined || !r.ok) return;
              used -= expected.total;
              const freeAfter = dataSize - used;
              const padded = align8(expected.payload.length);
              expect(r.payload.length).toBe(padded);
              expect(Buffer.compare(r.payload.subarray(0, expected.payload.length), expected.payload)).toBe(
                0,
              );
              expect(r.payload.subarray(expected.payload.length).every((b) => b === 0)).toBe(true);
              expect(r.descriptor).toEqual({
                type: expected.type,
                offset8: 2,
                len8: (16 + padded) / 8,
                flags: expected.flags,
                transId: expected.transId,
              });
              expect(r.consumed).toBe(expected.total);
              const pending = ring.pendingSendSz;
              const feature = (ring.featureBits & FEAT_PENDING_SEND_SZ) !== 0;
              expect(r.signal).toBe(feature && pending !== 0 && freeBefore <= pending && freeAfter > pending);
            }
          }
          expect(ring.writeIndex % 8).toBe(0);
          expect(ring.readIndex % 8).toBe(0);
          expect(ring.writeIndex).toBeLessThan(dataSize);
          expect(ring.readIndex).toBeLessThan(dataSize);
          expect(ring.readable() + ring.writable()).toBe(dataSize);
          expect(ring.readable()).toBe(used);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('never throws and always returns sane bounds on arbitrary bytes from a misbehaving producer', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(256, 512),
        fc.array(
          fc
            .integer({ min: 1, max: 30 })
            .chain((n8) => fc.uint8Array({ minLength: n8 * 8, maxLength: n8 * 8 })),
          { maxLength: 20 },
        ),
        fc.integer({ min: 2, max: 64 }).map((n) => n * 8),
        (dataSize, chunks, maxPacketSize) => {
          const ring = RingBuffer.create(dataSize);
          for (const chunk of chunks) {
            ring.writeBytes(chunk);
            for (;;) {
              const readable = ring.readable();
              const r = ring.readPacket(maxPacketSize);
              if (r === undefined) {
                expect(readable).toBeLessThan(16);
                break;
              }
              expect(r.ok).toBe(true);
              if (!r.ok) break;
              const len = r.descriptor.len8 * 8;
              const off = r.descriptor.offset8 * 8;
              expect(len).toBeGreaterThanOrEqual(16);
              expect(len).toBeLessThanOrEqual(Math.min(maxPacketSize, readable));
              expect(off).toBeGreaterThanOrEqual(16);
              expect(off).toBeLessThanOrEqual(len);
              expect(r.payload.length).toBe(len - off);
              expect(r.consumed).toBe(len + 8);
              expect(ring.readIndex).toBeLessThan(dataSize);
              // A garbage length can push read_index past write_index; the kernel then sees a
              // nearly full ring. Stop draining once that happened.
              if (r.consumed > readable) break;
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
