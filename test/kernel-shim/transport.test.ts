/** The hvutil char-device semantics: every row of the reference's errno table (§1.10) and more. */
import { describe, expect, it } from 'vitest';
import {
  EPOLLERR,
  EPOLLHUP,
  EPOLLIN,
  EPOLLRDNORM,
  HVUTIL_TRANSPORT_CHARDEV,
  HVUTIL_TRANSPORT_DESTROY,
  HVUTIL_TRANSPORT_INIT,
  HvutilTransport,
  type TransportDriver,
} from '../../kernel-shim/transport.js';
import { EFAULT, EINVAL } from '../../kernel-shim/errno.js';
import { flush, watch } from './support.js';

function fakeDriver(onMsg: (m: Buffer) => number = () => 0) {
  const calls: string[] = [];
  const driver: TransportDriver = {
    onMsg: (m) => {
      calls.push(`msg ${m.length}`);
      return onMsg(m);
    },
    onReset: () => calls.push('reset'),
  };
  return { driver, calls };
}

describe('open', () => {
  it('moves INIT to CHARDEV; a second open is EBUSY', () => {
    const t = new HvutilTransport('vmbus/hv_test', fakeDriver().driver);
    expect(t.mode).toBe(HVUTIL_TRANSPORT_INIT);
    t.open();
    expect(t.mode).toBe(HVUTIL_TRANSPORT_CHARDEV);
    expect(() => t.open()).toThrow(expect.objectContaining({ code: 'EBUSY', errno: 16 }));
  });

  it('is EBADF once destroyed', async () => {
    const t = new HvutilTransport('vmbus/hv_test', fakeDriver().driver);
    await t.destroy();
    expect(() => t.open()).toThrow(expect.objectContaining({ code: 'EBADF', errno: 9 }));
  });

  it('works again after the last close', () => {
    const t = new HvutilTransport('vmbus/hv_test', fakeDriver().driver);
    t.open().close();
    expect(t.mode).toBe(HVUTIL_TRANSPORT_INIT);
    expect(() => t.open()).not.toThrow();
  });
});

describe('read', () => {
  it('blocks until a message is queued, then returns exactly that message', async () => {
    const t = new HvutilTransport('vmbus/hv_test', fakeDriver().driver);
    const f = t.open();
    const r = watch(f.read(100));
    await flush();
    expect(r.settled).toBe(false);
    expect(t.send(Buffer.from('hello'))).toBe(0);
    await flush();
    expect(r.value).toEqual(Buffer.from('hello'));
  });

  it('is EINVAL with a buffer smaller than the message, and the message stays', async () => {
    const t = new HvutilTransport('vmbus/hv_test', fakeDriver().driver);
    const f = t.open();
    t.send(Buffer.alloc(12, 1));
    await expect(f.read(11)).rejects.toMatchObject({ code: 'EINVAL', errno: 22 });
    expect(t.messagePending).toBe(true);
    expect((await f.read(12)).length).toBe(12);
  });

  it('is EINTR when the reader is interrupted, and the message is not lost', async () => {
    const t = new HvutilTransport('vmbus/hv_test', fakeDriver().driver);
    const f = t.open();
    const ac = new AbortController();
    const r = f.read(100, { signal: ac.signal });
    ac.abort();
    await expect(r).rejects.toMatchObject({ code: 'EINTR', errno: 4 });
    t.send(Buffer.from('x'));
    expect((await f.read(100)).toString()).toBe('x');
  });

  it('is EBADF for a blocked reader when the transport is destroyed, and afterwards', async () => {
    const t = new HvutilTransport('vmbus/hv_test', fakeDriver().driver);
    const f = t.open();
    const r = f.read(100);
    void t.destroy();
    await expect(r).rejects.toMatchObject({ code: 'EBADF' });
    await expect(f.read(100)).rejects.toMatchObject({ code: 'EBADF' });
  });

  it('gives EAGAIN to a second concurrent reader woken for the same message', async () => {
    const t = new HvutilTransport('vmbus/hv_test', fakeDriver().driver);
    const f = t.open();
    const a = f.read(100);
    const b = f.read(100);
    t.send(Buffer.from('one'));
    await expect(a).resolves.toEqual(Buffer.from('one'));
    await expect(b).rejects.toMatchObject({ code: 'EAGAIN', errno: 11 });
  });

  it("runs the message's on_read callback once, after the copy", async () => {
    const t = new HvutilTransport('vmbus/hv_test', fakeDriver().driver);
    const f = t.open();
    let called = 0;
    t.send(Buffer.from('reg'), () => called++);
    await expect(f.read(2)).rejects.toMatchObject({ code: 'EINVAL' });
    expect(called).toBe(0);
    await f.read(3);
    expect(called).toBe(1);
  });
});

describe('write', () => {
  it("hands the buffer to the driver synchronously and returns its length, or the driver's error", () => {
    let rc = 0;
    const { driver, calls } = fakeDriver(() => rc);
    const t = new HvutilTransport('vmbus/hv_test', driver);
    const f = t.open();
    expect(f.write(Buffer.alloc(7))).toBe(7);
    expect(calls).toEqual(['msg 7']);
    rc = -EINVAL;
    expect(() => f.write(Buffer.alloc(3))).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    rc = -EFAULT;
    expect(() => f.write(Buffer.alloc(3))).toThrow(expect.objectContaining({ code: 'EFAULT' }));
  });

  it('is EBADF once destroyed, without calling the driver', () => {
    const { driver, calls } = fakeDriver();
    const t = new HvutilTransport('vmbus/hv_test', driver);
    const f = t.open();
    void t.destroy();
    expect(() => f.write(Buffer.alloc(1))).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(calls).toEqual([]);
  });
});

describe('poll', () => {
  it('reports IN|RDNORM with a message, 0 without, ERR|HUP once destroyed, never OUT', async () => {
    const t = new HvutilTransport('vmbus/hv_test', fakeDriver().driver);
    const f = t.open();
    expect(f.poll()).toBe(0);
    let woken = 0;
    f.watch(() => woken++);
    t.send(Buffer.from('m'));
    expect(f.poll()).toBe(EPOLLIN | EPOLLRDNORM);
    expect(woken).toBe(1);
    await f.read(10);
    expect(f.poll()).toBe(0);
    void t.destroy();
    expect(f.poll()).toBe(EPOLLERR | EPOLLHUP);
    expect(woken).toBe(2);
  });
});

describe('send (kernel side)', () => {
  it('is -EINVAL with no daemon and after destroy', async () => {
    const t = new HvutilTransport('vmbus/hv_test', fakeDriver().driver);
    expect(t.send(Buffer.from('x'))).toBe(-EINVAL);
    const f = t.open();
    const destroyed = t.destroy();
    expect(t.send(Buffer.from('x'))).toBe(-EINVAL);
    f.close();
    await destroyed;
  });

  it('is -EFAULT while the previous message is unread, and drops the new one', async () => {
    const t = new HvutilTransport('vmbus/hv_test', fakeDriver().driver);
    const f = t.open();
    expect(t.send(Buffer.from('first'))).toBe(0);
    expect(t.send(Buffer.from('second'))).toBe(-EFAULT);
    expect((await f.read(100)).toString()).toBe('first');
    expect(t.send(Buffer.from('third'))).toBe(0);
  });
});

describe('release', () => {
  it('drops the queued message and resets the driver', () => {
    const { driver, calls } = fakeDriver();
    const t = new HvutilTransport('vmbus/hv_test', driver);
    const f = t.open();
    t.send(Buffer.from('stale'));
    f.close();
    expect(calls).toEqual(['reset']);
    expect(t.messagePending).toBe(false);
    expect(t.mode).toBe(HVUTIL_TRANSPORT_INIT);
  });

  it('waits for a blocked read to return: close() alone keeps the device open (EBUSY)', async () => {
    const { driver, calls } = fakeDriver();
    const t = new HvutilTransport('vmbus/hv_test', driver);
    const f = t.open();
    const ac = new AbortController();
    const r = f.read(100, { signal: ac.signal });
    f.close();
    expect(calls).toEqual([]);
    expect(() => t.open()).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    ac.abort();
    await expect(r).rejects.toMatchObject({ code: 'EINTR' });
    expect(calls).toEqual(['reset']);
    expect(() => t.open()).not.toThrow();
  });

  it('dup: the device is released on the last close only', () => {
    const { driver, calls } = fakeDriver();
    const t = new HvutilTransport('vmbus/hv_test', driver);
    const f = t.open();
    f.dup();
    f.close();
    expect(calls).toEqual([]);
    f.close();
    expect(calls).toEqual(['reset']);
  });

  it('destroy resolves only when the daemon releases the device', async () => {
    const t = new HvutilTransport('vmbus/hv_test', fakeDriver().driver);
    const f = t.open();
    const d = watch(t.destroy());
    await flush();
    expect(d.settled).toBe(false);
    expect(t.mode).toBe(HVUTIL_TRANSPORT_DESTROY);
    f.close();
    await flush();
    expect(d.settled).toBe(true);
    expect(t.mode).toBe(HVUTIL_TRANSPORT_DESTROY);
  });
});
