/**
 * mkdir -p without Node's recursive mkdirSync, which loops forever when mkdir(2) answers ENOENT for
 * a directory whose parent exists (procfs does; seen on Node 20.20). Creates each missing
 * component with `mode` (the umask applies), leaves existing directories as they are, and throws
 * the first real error.
 */
import { mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

export function mkdirp(path: string, mode = 0o755): void {
  const missing: string[] = [];
  for (let p = resolve(path); ; p = dirname(p)) {
    try {
      if (!statSync(p).isDirectory())
        throw Object.assign(new Error(`${p}: not a directory`), { code: 'ENOTDIR' });
      break;
    } catch (e) {
      if ((e as { code?: string }).code !== 'ENOENT') throw e;
      missing.push(p);
      if (dirname(p) === p) break;
    }
  }
  for (const p of missing.reverse()) {
    try {
      mkdirSync(p, { mode });
    } catch (e) {
      if ((e as { code?: string }).code !== 'EEXIST') throw e;
    }
  }
}
