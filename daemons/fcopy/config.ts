/**
 * The FCOPY daemon's configuration file (default /etc/hyperv-daemons-ts/fcopy.conf): one
 * `key = value` per line, `#` starts a comment, blank lines ignored, keys case-sensitive.
 *
 *   allow = /srv/incoming          # repeatable; target directories the host may copy into
 *   file-mode = 0644               # mode of new files (octal, at most 0777)
 *   dir-mode = 0755                # mode of directories made for CREATE_PATH
 *   follow-symlinked-dirs = no     # yes: directories of the target path may be symbolic links
 *   state-dir = /var/lib/hyperv-daemons-ts/fcopy   # the journal of temporary files
 *   sync-every-mib = 64            # flush the data every N MiB during a copy (0: only at the end)
 *
 * Parsing is pure (`parseConfig`); every problem is reported with its line number.
 */
import { readFile } from 'node:fs/promises';

export const DEFAULT_CONFIG_PATH = '/etc/hyperv-daemons-ts/fcopy.conf';
export const DEFAULT_STATE_DIR = '/var/lib/hyperv-daemons-ts/fcopy';

export interface FcopyConfig {
  /** Allowed target directories (normalised, absolute); empty: any directory. */
  readonly allow: readonly string[];
  /** Permission bits of new files. */
  readonly fileMode: number;
  /** Permission bits of directories created for CREATE_PATH. */
  readonly dirMode: number;
  /** Accept symbolic links among the directories of the target path. */
  readonly followSymlinkedDirs: boolean;
  /** Where the journal of temporary files lives. */
  readonly stateDir: string;
  /** Flush written data every this many bytes during a copy; 0: only at COMPLETE. */
  readonly syncEveryBytes: number;
}

export const DEFAULT_CONFIG: FcopyConfig = {
  allow: [],
  fileMode: 0o644,
  dirMode: 0o755,
  followSymlinkedDirs: false,
  stateDir: DEFAULT_STATE_DIR,
  syncEveryBytes: 64 * 1024 * 1024,
};

export class ConfigError extends Error {
  constructor(
    message: string,
    readonly problems: readonly string[] = [],
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

/**
 * `/a//b/./c/` → `/a/b/c`; undefined for a relative path or one with a `..` component (an
 * allow-list entry must say plainly which directory it means).
 */
export function normaliseAbsolute(path: string): string | undefined {
  if (!path.startsWith('/') || path.includes('\0')) return undefined;
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) return undefined;
  return `/${parts.join('/')}`;
}

function parseMode(value: string): number | undefined {
  if (!/^0?[0-7]{1,3}$/.test(value)) return undefined;
  return parseInt(value, 8);
}

function parseBool(value: string): boolean | undefined {
  const v = value.toLowerCase();
  if (['yes', 'true', 'on', '1'].includes(v)) return true;
  if (['no', 'false', 'off', '0'].includes(v)) return false;
  return undefined;
}

const KEYS = ['allow', 'file-mode', 'dir-mode', 'follow-symlinked-dirs', 'state-dir', 'sync-every-mib'];

/** Parse the text of a configuration file; throws ConfigError listing every problem. */
export function parseConfig(text: string, source = 'fcopy.conf'): FcopyConfig {
  const problems: string[] = [];
  const seen = new Set<string>();
  const allow: string[] = [];
  let cfg: { -readonly [K in keyof FcopyConfig]: FcopyConfig[K] } = { ...DEFAULT_CONFIG, allow };
  text.split('\n').forEach((raw, i) => {
    const at = `${source}:${i + 1}`;
    const line = raw.replace(/(^|\s)#.*$/, '').trim();
    if (line === '') return;
    const eq = line.indexOf('=');
    if (eq < 0) {
      problems.push(`${at}: expected 'key = value', got '${line}'`);
      return;
    }
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    if (!KEYS.includes(key)) {
      problems.push(`${at}: unknown key '${key}' (known: ${KEYS.join(', ')})`);
      return;
    }
    if (key !== 'allow') {
      if (seen.has(key)) problems.push(`${at}: '${key}' is set twice`);
      seen.add(key);
    }
    const bad = (what: string) => problems.push(`${at}: ${key}: ${what}, got '${value}'`);
    switch (key) {
      case 'allow': {
        const dir = normaliseAbsolute(value);
        if (dir === undefined) bad('an absolute directory without .. components expected');
        else if (!allow.includes(dir)) allow.push(dir);
        break;
      }
      case 'file-mode':
      case 'dir-mode': {
        const mode = parseMode(value);
        if (mode === undefined) bad('an octal mode of at most 0777 expected');
        else cfg = key === 'file-mode' ? { ...cfg, fileMode: mode } : { ...cfg, dirMode: mode };
        break;
      }
      case 'follow-symlinked-dirs': {
        const b = parseBool(value);
        if (b === undefined) bad('yes or no expected');
        else cfg = { ...cfg, followSymlinkedDirs: b };
        break;
      }
      case 'state-dir': {
        const dir = normaliseAbsolute(value);
        if (dir === undefined) bad('an absolute directory expected');
        else cfg = { ...cfg, stateDir: dir };
        break;
      }
      case 'sync-every-mib': {
        if (!/^\d{1,7}$/.test(value)) bad('a whole number of MiB expected');
        else cfg = { ...cfg, syncEveryBytes: Number(value) * 1024 * 1024 };
        break;
      }
    }
  });
  if (problems.length > 0) {
    throw new ConfigError(`${source}: ${problems.length} problem(s): ${problems.join('; ')}`, problems);
  }
  return { ...cfg, allow };
}

/**
 * Read the configuration file. A missing file gives the defaults when it is the default path
 * (`required` false), and an error when the administrator named it.
 */
export async function loadConfig(path: string, required: boolean): Promise<FcopyConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !required) return DEFAULT_CONFIG;
    throw new ConfigError(`cannot read ${path}: ${code ?? String(e)}`);
  }
  return parseConfig(text, path);
}
