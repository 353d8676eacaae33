/**
 * What a copy left on disk, as plain data a test can compare: every entry below a directory with
 * its type, permission bits, size, SHA-256 (files) or link target (symbolic links).
 */
import { createHash } from 'node:crypto';
import { createReadStream, lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

export interface Entry {
  readonly type: 'file' | 'dir' | 'symlink' | 'other';
  /** Permission bits, octal, e.g. '644'. */
  readonly mode: string;
  readonly size?: number;
  readonly sha256?: string;
  readonly link?: string;
}

export type Listing = Record<string, Entry>;

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (d) => h.update(d))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}

/** Every entry below `root` (relative paths, sorted), `root` itself excluded. */
export async function observe(root: string): Promise<Listing> {
  const out: [string, Entry][] = [];
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      const r = rel === '' ? name : `${rel}/${name}`;
      const st = lstatSync(path);
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isSymbolicLink()) out.push([r, { type: 'symlink', mode, link: readlinkSync(path) }]);
      else if (st.isDirectory()) {
        out.push([r, { type: 'dir', mode }]);
        await walk(path, r);
      } else if (st.isFile()) {
        out.push([r, { type: 'file', mode, size: st.size, sha256: await sha256File(path) }]);
      } else out.push([r, { type: 'other', mode }]);
    }
  };
  await walk(root, '');
  return Object.fromEntries(out);
}

/** A deterministic pseudo-random buffer (xorshift32), so that content checks mean something. */
export function pattern(length: number, seed = 1): Buffer {
  const buf = Buffer.alloc(length);
  let x = seed >>> 0 || 1;
  let i = 0;
  for (; i + 4 <= length; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    buf.writeUInt32LE(x, i);
  }
  for (; i < length; i++) buf[i] = (i * 31 + seed) & 0xff;
  return buf;
}
