/**
 * The FCOPY service over /dev/vmbus/hv_fcopy: one kernel message in, one 4-byte status out.
 *
 *   START_FILE_COPY  validate the name and directory, walk to the directory (creating it with
 *                    CREATE_PATH), refuse an existing target without OVER_WRITE
 *                    (HV_ERROR_ALREADY_EXISTS), create the temporary file            → HV_S_OK
 *   WRITE_TO_FILE    positional write into the temporary; ENOSPC → HV_ERROR_DISK_FULL
 *   COMPLETE_FCOPY   flush and publish atomically (transfer.ts)
 *   CANCEL_FCOPY     drop the temporary (also the kernel's fake CANCEL before hibernation)
 *
 * Every other failure is HV_E_FAIL, as upstream. The device loop calls `closed()` when the device
 * is closed for a reopen (a refused reply, hibernation, rescind) or at stop: the copy in progress
 * is then abandoned and its temporary removed, like upstream's cancel at its reopen label.
 */
import {
  CANCEL_FCOPY,
  COMPLETE_FCOPY,
  CREATE_PATH,
  FCOPY_CURRENT_VERSION,
  HV_E_FAIL,
  HV_ERROR_ALREADY_EXISTS,
  HV_S_OK,
  OVER_WRITE,
  START_FILE_COPY,
  WRITE_TO_FILE,
  statusName,
} from '../../uapi/constants.js';
import {
  FCOPY_HDR_SIZE,
  type FcopyMessage,
  decodeFcopyDeviceMessage,
  encodeFcopyInt,
  encodeFcopyRegister,
} from '../../uapi/fcopy.js';
import type { DeviceProtocol } from '../common/device-loop.js';
import type { Logger } from '../common/log.js';
import type { FcopyConfig } from './config.js';
import { allowedPrefix, checkFileName, isRefusal, openDirectory, splitDirectory } from './paths.js';
import type { TempJournal } from './stale.js';
import { type Outcome, Transfer, type TransferStatus } from './transfer.js';

export const FCOPY_DEVICE = '/dev/vmbus/hv_fcopy';
/**
 * COMPLETE and CANCEL arrive with the host packet's whole length (up to the channel's 8 KiB
 * receive buffer); a read buffer smaller than a message fails with EINVAL.
 */
export const FCOPY_READ_SIZE = 8192;

const OP_NAMES: Record<number, string> = {
  [START_FILE_COPY]: 'START_FILE_COPY',
  [WRITE_TO_FILE]: 'WRITE_TO_FILE',
  [COMPLETE_FCOPY]: 'COMPLETE_FCOPY',
  [CANCEL_FCOPY]: 'CANCEL_FCOPY',
};

export interface FcopyServiceDeps {
  readonly config: FcopyConfig;
  readonly journal: TempJournal;
  readonly logger: Logger;
  readonly now?: () => number;
  /** link(2), for tests (a file system without hard links). */
  readonly link?: (from: string, to: string) => Promise<void>;
}

export interface FcopyStatus {
  /** The version the kernel confirmed at registration. */
  readonly kernelVersion: number | undefined;
  readonly copying: TransferStatus | undefined;
  readonly completed: number;
  readonly failed: number;
  readonly abandoned: number;
}

export class FcopyService implements DeviceProtocol {
  readonly devicePath: string;
  readonly readSize = FCOPY_READ_SIZE;
  private current: Transfer | undefined;
  private kernelVersion: number | undefined;
  private counts = { completed: 0, failed: 0, abandoned: 0 };

  constructor(
    private readonly deps: FcopyServiceDeps,
    devicePath = FCOPY_DEVICE,
  ) {
    this.devicePath = devicePath;
  }

  get status(): FcopyStatus {
    return { kernelVersion: this.kernelVersion, copying: this.current?.status, ...this.counts };
  }

  registration(): Uint8Array {
    return encodeFcopyRegister();
  }

  async serve(message: Buffer): Promise<Uint8Array | undefined> {
    const { logger } = this.deps;
    const decoded = decodeFcopyDeviceMessage(message);
    if (!decoded.ok) {
      const operation = decoded.error.operation;
      if (operation === START_FILE_COPY) await this.abandon('a malformed START_FILE_COPY arrived');
      logger.warn(
        { code: decoded.error.code, field: decoded.error.field, operation, length: message.length },
        decoded.error.code === 'unknown-operation'
          ? `Unknown operation: ${operation}`
          : `malformed FCOPY message: ${decoded.error.message}`,
      );
      return encodeFcopyInt(HV_E_FAIL);
    }
    if (decoded.value.kind === 'registered') {
      this.kernelVersion = decoded.value.version;
      if (decoded.value.version !== FCOPY_CURRENT_VERSION) {
        logger.warn(
          { version: decoded.value.version },
          `the kernel answered the registration with version ${decoded.value.version}, ${FCOPY_CURRENT_VERSION} expected`,
        );
      } else {
        logger.info(
          { version: decoded.value.version },
          `registered with the kernel (FCOPY version ${decoded.value.version})`,
        );
      }
      return undefined;
    }
    const msg = decoded.value.message;
    const outcome = await this.handle(msg, message.length);
    if (outcome.status !== HV_S_OK) {
      const op = OP_NAMES[msg.operation] ?? String(msg.operation);
      const fields = { operation: op, status: statusName(outcome.status), reason: outcome.reason };
      if (outcome.status === HV_ERROR_ALREADY_EXISTS) logger.info(fields, `${op}: ${outcome.reason}`);
      else logger.warn(fields, `${op} refused: ${outcome.reason}`);
    }
    return encodeFcopyInt(outcome.status);
  }

  private async handle(msg: FcopyMessage, length: number): Promise<Outcome> {
    switch (msg.operation) {
      case START_FILE_COPY:
        return this.start(msg);
      case WRITE_TO_FILE: {
        if (!this.current) return { status: HV_E_FAIL, reason: 'no copy in progress' };
        return this.current.write(msg.offset, msg.data);
      }
      case COMPLETE_FCOPY: {
        const t = this.current;
        // Upstream answers a COMPLETE without a copy with HV_S_OK too.
        if (!t) return { status: HV_S_OK };
        this.current = undefined;
        const done = await t.complete();
        if (done.status === HV_S_OK) this.counts.completed++;
        else this.counts.failed++;
        return done;
      }
      case CANCEL_FCOPY:
        await this.abandon(
          length === FCOPY_HDR_SIZE ? 'cancelled by the kernel (hibernation)' : 'cancelled by the host',
        );
        return { status: HV_S_OK };
    }
  }

  private async start(msg: Extract<FcopyMessage, { operation: 0 }>): Promise<Outcome> {
    const { config, logger } = this.deps;
    await this.abandon('a new START_FILE_COPY arrived before COMPLETE or CANCEL');
    const overwrite = (msg.copyFlags & OVER_WRITE) !== 0;
    const createPath = (msg.copyFlags & CREATE_PATH) !== 0;
    logger.info(
      {
        path: msg.pathName,
        name: msg.fileName,
        size: Number(msg.fileSize),
        overwrite,
        createPath,
      },
      `Target file name: ${msg.pathName}/${msg.fileName}`,
    );
    const badName = checkFileName(msg.fileName);
    if (badName) return { status: HV_E_FAIL, reason: badName.reason };
    const parts = splitDirectory(msg.pathName);
    if (isRefusal(parts)) return { status: HV_E_FAIL, reason: parts.reason };
    const start = allowedPrefix(parts, config.allow);
    if (start === undefined) {
      return {
        status: HV_E_FAIL,
        reason: `${msg.pathName} is outside the allowed directories (${config.allow.join(', ')})`,
      };
    }
    const dir = await openDirectory(parts, {
      start,
      create: createPath,
      dirMode: config.dirMode,
      followSymlinks: config.followSymlinkedDirs,
      allow: config.allow,
    });
    if (isRefusal(dir)) return { status: HV_E_FAIL, reason: dir.reason };
    if (dir.created.length > 0) {
      logger.info({ created: dir.created }, `created ${dir.created.join(', ')}`);
    }
    const t = await Transfer.start(
      { dir, name: msg.fileName, size: msg.fileSize, overwrite },
      {
        fileMode: config.fileMode,
        syncEveryBytes: config.syncEveryBytes,
        journal: this.deps.journal,
        logger,
        ...(this.deps.now ? { now: this.deps.now } : {}),
        ...(this.deps.link ? { link: this.deps.link } : {}),
      },
    );
    if (!(t instanceof Transfer)) return t;
    this.current = t;
    return { status: HV_S_OK };
  }

  private async abandon(why: string): Promise<void> {
    const t = this.current;
    if (!t) return;
    this.current = undefined;
    this.counts.abandoned++;
    await t.abort(why);
  }

  /** The device was closed (reopen after an error, hibernation, rescind, stop). */
  async closed(reason: string): Promise<void> {
    await this.abandon(`the device was closed: ${reason}`);
  }
}
