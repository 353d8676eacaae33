/**
 * The host end of one util channel: it negotiates versions, sends IC requests one at a time (the
 * util protocols are strictly request/response), matches the guest's replies by request id, and
 * gives up after a host-side timeout. Used by the service-shaped host APIs (kvp.ts, vss.ts,
 * fcopy.ts).
 */
import type { VmbusChannel } from '../channel/channel.js';
import {
  ICMSG_HDR,
  ICMSGHDRFLAG_HOST_REQUEST,
  decodeIcHeader,
  encodeIcMessage,
  type IcHeader,
} from '../channel/icmsg.js';
import {
  type NegotiateResponse,
  decodeNegotiateResponse,
  encodeNegotiateRequest,
} from '../channel/negotiate.js';
import type { Clock } from '../clock.js';
import type { ChannelObserver, ShimDevice } from '../device.js';

/** The guest's answer to one request, as the host sees it. */
export interface IcReply {
  readonly header: IcHeader;
  /** icmsg_hdr.status. */
  readonly status: number;
  /** The whole reply payload (IC headers included). */
  readonly payload: Buffer;
  /** The service message after the 28 IC header bytes. */
  readonly body: Buffer;
}

/** The host stopped waiting: no reply within the host-side timeout. */
export class HostTimeoutError extends Error {
  readonly code = 'HOST_TIMEOUT';
  constructor(what: string, ms: number) {
    super(`${what}: no reply from the guest within ${ms} ms`);
    this.name = 'HostTimeoutError';
  }
}

/** The request can get no reply: the channel was closed (suspend) or rescinded meanwhile. */
export class ChannelGoneError extends Error {
  readonly code = 'CHANNEL_GONE';
  constructor(what: string, reason: string) {
    super(`${what}: the channel was ${reason === 'suspend' ? 'closed for hibernation' : 'rescinded'}`);
    this.name = 'ChannelGoneError';
  }
}

export interface IcClientOptions {
  clock: Clock;
  msgType: number;
  fwVersions: readonly number[];
  srvVersions: readonly number[];
  /** Host-side timeout per request (default 120 s: longer than the kernel's own 30 s). */
  timeoutMs?: number;
}

interface Pending {
  transId: bigint;
  what: string;
  resolve(reply: IcReply): void;
  reject(err: Error): void;
  timer: { cancel(): void };
}

export class IcClient implements ChannelObserver {
  private channel: VmbusChannel | undefined;
  private nextTransId = 1n;
  private pending = new Map<bigint, Pending>();
  private queue: Promise<unknown> = Promise.resolve();
  /** The versions the guest accepted, once negotiated on the current channel. */
  negotiated: NegotiateResponse | undefined;
  readonly timeoutMs: number;

  constructor(
    device: ShimDevice,
    private readonly opts: IcClientOptions,
  ) {
    this.timeoutMs = opts.timeoutMs ?? 120_000;
    device.observe(this);
  }

  channelOpened(channel: VmbusChannel): void {
    this.channel = channel;
    this.negotiated = undefined;
    channel.onHostInterrupt = () => this.drain();
  }

  channelClosed(reason: 'suspend' | 'rescind'): void {
    if (this.channel) this.channel.onHostInterrupt = undefined;
    this.channel = undefined;
    this.negotiated = undefined;
    for (const p of this.pending.values()) {
      p.timer.cancel();
      p.reject(new ChannelGoneError(p.what, reason));
    }
    this.pending.clear();
  }

  get connected(): boolean {
    return this.channel !== undefined;
  }

  /** Offer versions (by default this service's) and record the guest's choice. */
  negotiate(fw = this.opts.fwVersions, srv = this.opts.srvVersions): Promise<NegotiateResponse> {
    return this.serialise(async () => {
      const reply = await this.exchange(encodeNegotiateRequest(fw, srv), 'NEGOTIATE');
      const r = decodeNegotiateResponse(reply.payload);
      if (!r.ok) throw new Error(`NEGOTIATE: undecodable reply: ${r.error.message}`);
      this.negotiated = r.value;
      return r.value;
    });
  }

  /** Send one service request (negotiating first if this channel has not been) and await the reply. */
  request(body: Uint8Array, what: string, opts: { timeoutMs?: number } = {}): Promise<IcReply> {
    return this.serialise(async () => {
      if (!this.negotiated) {
        const reply = await this.exchange(
          encodeNegotiateRequest(this.opts.fwVersions, this.opts.srvVersions),
          'NEGOTIATE',
        );
        const r = decodeNegotiateResponse(reply.payload);
        if (r.ok) this.negotiated = r.value;
      }
      const payload = encodeIcMessage({ msgType: this.opts.msgType, flags: ICMSGHDRFLAG_HOST_REQUEST }, body);
      return this.exchange(payload, what, opts.timeoutMs);
    });
  }

  /** Put a raw payload (possibly malformed) into the ring and await whatever comes back. */
  sendRaw(payload: Uint8Array, what: string, opts: { timeoutMs?: number } = {}): Promise<IcReply> {
    return this.serialise(() => this.exchange(payload, what, opts.timeoutMs));
  }

  private serialise<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private exchange(payload: Uint8Array, what: string, timeoutMs = this.timeoutMs): Promise<IcReply> {
    const channel = this.channel;
    if (!channel) return Promise.reject(new ChannelGoneError(what, 'rescind'));
    const transId = this.nextTransId++;
    return new Promise<IcReply>((resolve, reject) => {
      const timer = this.opts.clock.setTimer(timeoutMs, () => {
        this.pending.delete(transId);
        reject(new HostTimeoutError(what, timeoutMs));
      });
      this.pending.set(transId, { transId, what, resolve, reject, timer });
      if (!channel.hostSend(payload, transId)) {
        this.pending.delete(transId);
        timer.cancel();
        reject(new Error(`${what}: the guest's inbound ring is full`));
      }
    });
  }

  /** Read every reply the guest has put in the outbound ring. */
  private drain(): void {
    const channel = this.channel;
    if (!channel) return;
    for (let p = channel.hostRecv(); p; p = channel.hostRecv()) {
      const pending = this.pending.get(p.transId);
      if (!pending) continue; // a reply nobody waits for (late, or after a host timeout)
      this.pending.delete(p.transId);
      pending.timer.cancel();
      // hostRecv copied the packet out of the ring: a view of that copy, not another one.
      const payload = Buffer.from(p.payload.buffer, p.payload.byteOffset, p.payload.length);
      const header = decodeIcHeader(payload);
      if (!header.ok) {
        pending.reject(new Error(`${pending.what}: malformed reply: ${header.error.message}`));
        continue;
      }
      pending.resolve({
        header: header.value,
        status: header.value.status,
        payload,
        body: payload.subarray(ICMSG_HDR),
      });
    }
  }
}
