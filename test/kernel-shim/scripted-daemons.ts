/**
 * Minimal daemons scripted inside the tests: they speak the char-device protocol through the
 * shim's in-process device handles, with an in-memory pool, a fake freezer and an in-memory file
 * system. They exist to drive the kernel-shim end to end, not as products.
 */
import {
  HV_E_FAIL,
  HV_S_CONT,
  HV_S_OK,
  KVP_OP_DELETE,
  KVP_OP_ENUMERATE,
  KVP_OP_GET,
  KVP_OP_REGISTER1,
  KVP_OP_SET,
  START_FILE_COPY,
  VSS_OP_FREEZE,
  VSS_OP_THAW,
  WRITE_TO_FILE,
  COMPLETE_FCOPY,
  CANCEL_FCOPY,
} from '../../uapi/constants.js';
import { decodeFcopyDeviceMessage, encodeFcopyInt, encodeFcopyRegister } from '../../uapi/fcopy.js';
import { decodeKvpRequest, encodeKvpRegister, encodeKvpReply } from '../../uapi/kvp.js';
import { decodeVssMessage, encodeVssRegister, encodeVssReply } from '../../uapi/vss.js';
import type { KernelShim } from '../../kernel-shim/shim.js';
import type { TransportFile } from '../../kernel-shim/transport.js';

export interface ScriptedDaemon {
  file: TransportFile;
  stop(): void;
  done: Promise<void>;
  log: string[];
}

function run(
  file: TransportFile,
  handle: (msg: Buffer) => Buffer | undefined,
  log: string[],
): ScriptedDaemon {
  const ac = new AbortController();
  const done = (async () => {
    for (;;) {
      let msg: Buffer;
      try {
        msg = await file.read(65536, { signal: ac.signal });
      } catch (e) {
        log.push(`read: ${(e as NodeJS.ErrnoException).code}`);
        return;
      }
      const reply = handle(msg);
      if (reply) {
        try {
          file.write(reply);
        } catch (e) {
          log.push(`write: ${(e as NodeJS.ErrnoException).code}`);
        }
      }
    }
  })();
  return {
    file,
    log,
    done,
    stop: () => {
      ac.abort();
      void done.then(() => file.close());
    },
  };
}

export function startKvpDaemon(
  shim: KernelShim,
  pools: Map<number, [string, string][]> = new Map(),
): ScriptedDaemon {
  const file = shim.open('kvp');
  const log: string[] = [];
  file.write(encodeKvpRegister());
  return run(
    file,
    (bytes) => {
      const r = decodeKvpRequest(bytes);
      if (!r.ok) return encodeKvpReply({ operation: r.error.operation ?? 0, error: HV_E_FAIL });
      const m = r.value;
      log.push(`op ${m.operation}`);
      const pool = pools.get(m.pool) ?? [];
      pools.set(m.pool, pool);
      switch (m.operation) {
        case KVP_OP_REGISTER1:
          log.push(`version ${m.version}`);
          return undefined;
        case KVP_OP_SET: {
          const at = pool.findIndex(([k]) => k === m.key);
          if (at >= 0) pool[at] = [m.key, m.value];
          else pool.push([m.key, m.value]);
          return encodeKvpReply({ operation: m.operation, error: HV_S_OK });
        }
        case KVP_OP_GET: {
          const hit = pool.find(([k]) => k === m.key);
          return hit
            ? encodeKvpReply({ operation: m.operation, error: HV_S_OK, key: m.key, value: hit[1] })
            : encodeKvpReply({ operation: m.operation, error: HV_S_CONT });
        }
        case KVP_OP_DELETE: {
          const at = pool.findIndex(([k]) => k === m.key);
          if (at < 0) return encodeKvpReply({ operation: m.operation, error: HV_S_CONT });
          pool.splice(at, 1);
          return encodeKvpReply({ operation: m.operation, error: HV_S_OK });
        }
        case KVP_OP_ENUMERATE: {
          const rec = pool[m.index];
          return rec
            ? encodeKvpReply({ operation: m.operation, error: HV_S_OK, key: rec[0], value: rec[1] })
            : encodeKvpReply({ operation: m.operation, error: HV_S_CONT });
        }
        default:
          return encodeKvpReply({ operation: m.operation, error: HV_E_FAIL });
      }
    },
    log,
  );
}

export function startVssDaemon(
  shim: KernelShim,
  frozen: { value: boolean } = { value: false },
): ScriptedDaemon {
  const file = shim.open('vss');
  const log: string[] = [];
  file.write(encodeVssRegister());
  return run(
    file,
    (bytes) => {
      const r = decodeVssMessage(bytes);
      if (!r.ok) return encodeVssReply({ error: HV_E_FAIL, flags: 0 });
      if (r.value.kind === 'registered') {
        log.push(`version ${r.value.version}`);
        return undefined;
      }
      log.push(`op ${r.value.operation}`);
      if (r.value.operation === VSS_OP_FREEZE) frozen.value = true;
      if (r.value.operation === VSS_OP_THAW) frozen.value = false;
      return encodeVssReply({ error: HV_S_OK, flags: 0 });
    },
    log,
  );
}

export function startFcopyDaemon(shim: KernelShim, files: Map<string, Buffer> = new Map()): ScriptedDaemon {
  const file = shim.open('fcopy');
  const log: string[] = [];
  file.write(encodeFcopyRegister());
  let current: { path: string; chunks: Buffer } | undefined;
  return run(
    file,
    (bytes) => {
      const r = decodeFcopyDeviceMessage(bytes);
      if (!r.ok) return encodeFcopyInt(HV_E_FAIL);
      if (r.value.kind === 'registered') {
        log.push(`version ${r.value.version}`);
        return undefined;
      }
      const m = r.value.message;
      log.push(`op ${m.operation}`);
      switch (m.operation) {
        case START_FILE_COPY:
          current = { path: `${m.pathName}/${m.fileName}`, chunks: Buffer.alloc(0) };
          return encodeFcopyInt(HV_S_OK);
        case WRITE_TO_FILE:
          if (!current) return encodeFcopyInt(HV_E_FAIL);
          current.chunks = Buffer.concat([current.chunks.subarray(0, Number(m.offset)), Buffer.from(m.data)]);
          return encodeFcopyInt(HV_S_OK);
        case COMPLETE_FCOPY:
          if (current) files.set(current.path, current.chunks);
          current = undefined;
          return encodeFcopyInt(HV_S_OK);
        case CANCEL_FCOPY:
          current = undefined;
          return encodeFcopyInt(HV_S_OK);
      }
    },
    log,
  );
}
