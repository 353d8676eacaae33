/**
 * The KVP service: one kernel message in, one reply out. No I/O of its own: the pools, the auto
 * pool, and the IP information come in as dependencies. Differences from the upstream daemon are
 * deliberate and listed in daemons/kvp/README.md: GET returns the real value (placed where the
 * kernel reads it), an unknown or malformed request and an out-of-range pool get an error status
 * instead of HV_S_OK or a crash, and every request is answered before the kernel's 30 s timeout.
 */
import {
  HV_E_FAIL,
  HV_S_CONT,
  HV_S_OK,
  KVP_OP_DELETE,
  KVP_OP_ENUMERATE,
  KVP_OP_GET,
  KVP_OP_GET_IP_INFO,
  KVP_OP_REGISTER1,
  KVP_OP_SET,
  KVP_OP_SET_IP_INFO,
  KVP_POOL_AUTO,
  KVP_POOL_COUNT,
  statusName,
} from '../../uapi/constants.js';
import {
  type KvpIpInfo,
  type KvpReply,
  KVP_MSG_SIZE,
  decodeKvpRequest,
  encodeKvpRegister,
  encodeKvpReply,
} from '../../uapi/kvp.js';
import type { DeviceProtocol } from '../common/device-loop.js';
import type { Logger } from '../common/log.js';

export const KVP_DEVICE = '/dev/vmbus/hv_kvp';
export const UNKNOWN_VERSION = 'Unknown version';
/** Answer before the kernel's 30 s timeout, whatever a helper does. */
export const REPLY_DEADLINE_MS = 25_000;

export interface KvpPoolStore {
  get(pool: number, key: string): Promise<string | undefined>;
  /** get() when it can be answered at once, without waiting; undefined otherwise. */
  getNow?(pool: number, key: string): { value: string | undefined } | undefined;
  /** enumerate() when it can be answered at once; undefined otherwise. */
  enumerateNow?(
    pool: number,
    index: number,
  ): { value: { key: string; value: string } | undefined } | undefined;
  set(pool: number, key: string, value: string): Promise<void>;
  delete(pool: number, key: string): Promise<boolean>;
  enumerate(pool: number, index: number): Promise<{ key: string; value: string } | undefined>;
}

export interface KvpServiceDeps {
  pools: KvpPoolStore;
  /** The auto pool's entry at `index` (0..9), computed now; undefined past the end. */
  autoPool(index: number, version: string): Promise<{ key: string; value: string } | undefined>;
  getIpInfo(adapterId: string): Promise<{ status: number; ip: KvpIpInfo }>;
  setIpInfo(ip: KvpIpInfo): Promise<number>;
  logger: Logger;
  /** Per-request deadline in ms (default REPLY_DEADLINE_MS). */
  deadlineMs?: number;
  /**
   * Encode every reply into one buffer (the device loop writes it before the next request is
   * read): a reply is then valid only until the next serve().
   */
  reuseBuffers?: boolean;
}

const OP_NAMES: Record<number, string> = {
  [KVP_OP_GET]: 'GET',
  [KVP_OP_SET]: 'SET',
  [KVP_OP_DELETE]: 'DELETE',
  [KVP_OP_ENUMERATE]: 'ENUMERATE',
  [KVP_OP_GET_IP_INFO]: 'GET_IP_INFO',
  [KVP_OP_SET_IP_INFO]: 'SET_IP_INFO',
};

class DeadlineError extends Error {}

type KvpDecodedRequest = Exclude<ReturnType<typeof decodeKvpRequest>, { ok: false }>['value'];

/** The request being served: when it started, and how to answer it with an error at the deadline. */
interface Inflight {
  readonly started: number;
  expire(ms: number): void;
}

export class KvpService implements DeviceProtocol {
  readonly devicePath: string;
  readonly readSize = KVP_MSG_SIZE;
  /** The kernel's registration version (the IntegrationServicesVersion key). */
  version = UNKNOWN_VERSION;
  /** With reuseBuffers: where messages are read (see DeviceProtocol) and replies encoded. */
  readonly readBuffer: Buffer | undefined;
  private readonly replyBuffer: Buffer | undefined;
  private inflight: Inflight | undefined;
  private watchdog: NodeJS.Timeout | undefined;

  constructor(
    private readonly deps: KvpServiceDeps,
    devicePath = KVP_DEVICE,
  ) {
    this.devicePath = devicePath;
    this.readBuffer = deps.reuseBuffers ? Buffer.alloc(KVP_MSG_SIZE) : undefined;
    this.replyBuffer = deps.reuseBuffers ? Buffer.alloc(KVP_MSG_SIZE) : undefined;
  }

  registration(): Uint8Array {
    return encodeKvpRegister(KVP_OP_REGISTER1);
  }

  serve(message: Buffer): Promise<Uint8Array | undefined> | Uint8Array | undefined {
    const { logger } = this.deps;
    const decoded = decodeKvpRequest(message);
    if (!decoded.ok) {
      const operation = decoded.error.operation ?? message[0] ?? 0;
      logger.warn(
        { code: decoded.error.code, field: decoded.error.field, operation },
        `malformed KVP request: ${decoded.error.message}`,
      );
      return encodeKvpReply({ operation, error: HV_E_FAIL }, this.replyBuffer);
    }
    const req = decoded.value;
    if (req.operation === KVP_OP_REGISTER1) {
      this.version = req.version;
      logger.info({ version: req.version }, `registered with the kernel (KVP version ${req.version})`);
      return undefined;
    }
    const name = OP_NAMES[req.operation] ?? String(req.operation);
    // A read the pools can answer from memory at once (the common case) is answered here, with no
    // promise and no deadline to keep; everything else takes the asynchronous path.
    const now = this.answerNow(req);
    if (now) return this.reply(req, name, now);
    return this.withDeadline(req, name).then((reply) => this.reply(req, name, reply));
  }

  /** The reply to a GET or ENUMERATE of a regular pool when the pools can give it without waiting. */
  private answerNow(req: KvpDecodedRequest): KvpReply | undefined {
    const { pools } = this.deps;
    const { operation } = req;
    if (req.pool >= KVP_POOL_COUNT) return undefined;
    try {
      if (req.operation === KVP_OP_GET && pools.getNow) {
        const hit = pools.getNow(req.pool, req.key);
        return hit && getReply(operation, req.key, hit.value);
      }
      if (req.operation === KVP_OP_ENUMERATE && req.pool !== KVP_POOL_AUTO && pools.enumerateNow) {
        const hit = pools.enumerateNow(req.pool, req.index);
        return hit && recordReply(operation, hit.value);
      }
    } catch {
      // The asynchronous path tries again, and reports what fails.
    }
    return undefined;
  }

  /** Log the answer, and encode it for the kernel. */
  private reply(req: KvpDecodedRequest, name: string, reply: KvpReply): Uint8Array {
    const { logger } = this.deps;
    if (logger.isLevelEnabled?.('debug') ?? true) {
      logger.debug(
        {
          operation: name,
          pool: req.pool,
          status: statusName(reply.error),
          ...('key' in req ? { key: req.key } : {}),
        },
        `KVP ${name}`,
      );
    }
    return encodeKvpReply(reply, this.replyBuffer);
  }

  /**
   * handle(req), or an HV_E_FAIL reply once it failed or outlived the deadline. One watchdog timer
   * checks the request in flight (the device loop serves one at a time), rather than a timer per
   * request: a host request costs tens of microseconds, a timer and a race a noticeable part of it.
   */
  private withDeadline(req: KvpDecodedRequest, name: string): Promise<KvpReply> {
    const fail = (reason: unknown): KvpReply => {
      this.deps.logger.error(
        { operation: name, pool: req.pool, err: String(reason) },
        `KVP ${name} failed: ${reason instanceof Error ? reason.message : reason}`,
      );
      return { operation: req.operation, error: HV_E_FAIL };
    };
    return new Promise<KvpReply>((resolve) => {
      const inflight: Inflight = { started: performance.now(), expire: () => undefined };
      let settled = false;
      const settle = (reply: KvpReply) => {
        if (settled) return;
        settled = true;
        if (this.inflight === inflight) this.inflight = undefined;
        resolve(reply);
      };
      inflight.expire = (ms) =>
        settle(fail(new DeadlineError(`no answer within ${ms} ms (the kernel gives up at 30 s)`)));
      this.inflight = inflight;
      this.armWatchdog();
      this.handle(req).then(settle, (e: unknown) => settle(fail(e)));
    });
  }

  /** The watchdog: a timer that re-checks the request in flight, kept only while one is. */
  private armWatchdog(): void {
    if (this.watchdog) return;
    const ms = this.deps.deadlineMs ?? REPLY_DEADLINE_MS;
    this.watchdog = setInterval(
      () => {
        const inflight = this.inflight;
        if (!inflight) {
          clearInterval(this.watchdog);
          this.watchdog = undefined;
        } else if (performance.now() - inflight.started >= ms) inflight.expire(ms);
      },
      Math.max(1, Math.min(1000, Math.floor(ms / 5))),
    );
    this.watchdog.unref?.();
  }

  private async handle(req: KvpDecodedRequest): Promise<KvpReply> {
    const { pools } = this.deps;
    const operation = req.operation;
    if (req.operation === KVP_OP_GET_IP_INFO) {
      const r = await this.deps.getIpInfo(req.ip.adapterId);
      return r.status === HV_S_OK ? { operation, error: HV_S_OK, ip: r.ip } : { operation, error: r.status };
    }
    if (req.operation === KVP_OP_SET_IP_INFO) return { operation, error: await this.deps.setIpInfo(req.ip) };
    if (req.pool >= KVP_POOL_COUNT) {
      this.deps.logger.warn(
        { pool: req.pool },
        `KVP request for pool ${req.pool}: there are pools 0 to ${KVP_POOL_COUNT - 1} only`,
      );
      return { operation, error: HV_E_FAIL };
    }
    switch (req.operation) {
      case KVP_OP_SET:
        await pools.set(req.pool, req.key, req.value);
        return { operation, error: HV_S_OK };
      case KVP_OP_GET:
        return getReply(operation, req.key, await pools.get(req.pool, req.key));
      case KVP_OP_DELETE:
        return { operation, error: (await pools.delete(req.pool, req.key)) ? HV_S_OK : HV_S_CONT };
      case KVP_OP_ENUMERATE:
        return recordReply(
          operation,
          req.pool === KVP_POOL_AUTO
            ? await this.deps.autoPool(req.index, this.version)
            : await pools.enumerate(req.pool, req.index),
        );
    }
    return { operation, error: HV_E_FAIL };
  }
}

/** A GET's reply: the value (placed where the kernel reads it), or HV_S_CONT for no such key. */
function getReply(operation: number, key: string, value: string | undefined): KvpReply {
  return value === undefined ? { operation, error: HV_S_CONT } : { operation, error: HV_S_OK, key, value };
}

/** An ENUMERATE's reply: the record, or HV_S_CONT past the end of the pool. */
function recordReply(operation: number, rec: { key: string; value: string } | undefined): KvpReply {
  return rec
    ? { operation, error: HV_S_OK, key: rec.key, value: rec.value }
    : { operation, error: HV_S_CONT };
}

export { OP_NAMES as KVP_OP_NAMES };
