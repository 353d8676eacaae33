/**
 * The AUTO pool (pool 2): ENUMERATE indices 0..9 are synthesized, not read from a file
 * (daemons.md §2.7, §2.8). Upstream computes the OS data and the FQDN once at startup; we compute
 * every value when the host asks (the FQDN through the cache of effects.ts), so a rename, a new
 * address or an OS upgrade shows without a restart.
 */
import type { KvpHostDeps, NetInterface } from './effects.js';
import { join } from 'node:path';

/** Key names by ENUMERATE index, exactly as upstream. */
export const AUTO_POOL_KEYS = [
  'FullyQualifiedDomainName',
  'IntegrationServicesVersion',
  'NetworkAddressIPv4',
  'NetworkAddressIPv6',
  'OSBuildNumber',
  'OSName',
  'OSMajorVersion',
  'OSMinorVersion',
  'OSVersion',
  'ProcessorArchitecture',
] as const;

export type AutoPoolKey = (typeof AUTO_POOL_KEYS)[number];

/** The IntegrationServicesVersion value before the kernel's handshake reply. */
export const UNKNOWN_VERSION = 'Unknown version';

/** The kernel passes at most 1022 UTF-16 units of an ENUMERATE value to the host. */
export const HOST_ENUM_VALUE_MAX = 1022;

export type AutoPoolDeps = Pick<KvpHostDeps, 'sysRoot' | 'interfaces' | 'uname' | 'fqdn' | 'fs' | 'logger'> &
  Partial<Pick<KvpHostDeps, 'integrationServicesVersion'>>;

// ---------------------------------------------------------------------------------------------
// OS information

export interface OsRelease {
  name?: string;
  versionId?: string;
}

/** Upstream's value processing: `\` makes the next character literal; `'`, `"` and newline are dropped. */
function unquote(value: string): string {
  let out = '';
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c === '\\') {
      i++;
      if (i >= value.length) break;
      out += value[i];
    } else if (c !== "'" && c !== '"' && c !== '\n') {
      out += c;
    }
  }
  return out;
}

/**
 * /etc/os-release as the C daemon reads it: lines starting with `#` are skipped, lines without `=`
 * are skipped, the name is the text before the first `=` (not trimmed, case-sensitive), the value is
 * unquoted by {@link unquote} (so `NAME=foo\` followed by the line end keeps the newline), later
 * duplicates win, only NAME and VERSION_ID are used. Each line is cut at a NUL as C strings are.
 * Difference: upstream reads with a 512-byte buffer and mis-parses longer lines; we read whole lines.
 */
export function parseOsRelease(text: string): OsRelease {
  const result: OsRelease = {};
  const lines = text.match(/[^\n]*\n|[^\n]+$/g) ?? [];
  for (const raw of lines) {
    const nul = raw.indexOf('\0');
    const line = nul === -1 ? raw : raw.slice(0, nul);
    if (line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq === -1) continue;
    const name = line.slice(0, eq);
    const value = unquote(line.slice(eq + 1));
    if (name === 'NAME') result.name = value;
    else if (name === 'VERSION_ID') result.versionId = value;
  }
  return result;
}

export interface OsInfo {
  /** OSName */
  readonly name: string;
  /** OSMajorVersion */
  readonly major: string;
  /** OSMinorVersion */
  readonly minor: string;
  /** OSVersion: the kernel release cut at the first `-`. */
  readonly version: string;
  /** OSBuildNumber: the full kernel release. */
  readonly build: string;
  /** ProcessorArchitecture */
  readonly arch: string;
}

async function readOptional(deps: Pick<KvpHostDeps, 'fs'>, path: string): Promise<string | undefined> {
  try {
    return await deps.fs.readFile(path);
  } catch {
    return undefined;
  }
}

/** The first three lines of a SuSE-release/redhat-release file, trailing newline removed. */
function releaseFileLines(text: string): string[] {
  const lines = text.match(/[^\n]*\n|[^\n]+$/g) ?? [];
  return lines.slice(0, 3).map((l) => {
    const nul = l.indexOf('\0');
    const s = nul === -1 ? l : l.slice(0, nul);
    return s.endsWith('\n') ? s.slice(0, -1) : s;
  });
}

/**
 * uname plus /etc/os-release; only if that file cannot be read, /etc/SuSE-release then
 * /etc/redhat-release (line 1 → name, 2 → major, 3 → minor). Defaults: name = uname sysname,
 * major and minor empty. /usr/lib/os-release is not consulted (as upstream).
 */
export async function readOsInfo(deps: Pick<KvpHostDeps, 'sysRoot' | 'fs' | 'uname'>): Promise<OsInfo> {
  const u = deps.uname();
  const dash = u.release.indexOf('-');
  let name = u.sysname;
  let major = '';
  let minor = '';
  const osRelease = await readOptional(deps, join(deps.sysRoot, 'etc/os-release'));
  if (osRelease !== undefined) {
    const parsed = parseOsRelease(osRelease);
    if (parsed.name !== undefined) name = parsed.name;
    if (parsed.versionId !== undefined) major = parsed.versionId;
  } else {
    const fallback =
      (await readOptional(deps, join(deps.sysRoot, 'etc/SuSE-release'))) ??
      (await readOptional(deps, join(deps.sysRoot, 'etc/redhat-release')));
    if (fallback !== undefined) {
      const [l1, l2, l3] = releaseFileLines(fallback);
      if (l1 !== undefined) name = l1;
      if (l2 !== undefined) major = l2;
      if (l3 !== undefined) minor = l3;
    }
  }
  return {
    name,
    major,
    minor,
    version: dash === -1 ? u.release : u.release.slice(0, dash),
    build: u.release,
    arch: u.machine,
  };
}

// ---------------------------------------------------------------------------------------------
// Addresses

/**
 * NetworkAddressIPv4 / NetworkAddressIPv6: every address of the family on every non-loopback
 * interface, in interface order, `;`-joined without a trailing `;`. Upstream's capacity rule: before
 * each address, `2048 - used >= element_max + 2` (16 for IPv4, 46 for IPv6) must hold, where `used`
 * counts every address plus one separator; otherwise the list stops there. Ours then also drops
 * whole addresses beyond the 1022 characters the kernel passes on, so the host never sees a cut address.
 */
export function addressList(interfaces: readonly NetInterface[], family: 4 | 6): string {
  const elementMax = family === 4 ? 16 : 46;
  const capacity = 2048;
  const parts: string[] = [];
  let used = 0;
  outer: for (const iface of interfaces) {
    for (const a of iface.addresses) {
      if (a.internal || a.family !== family) continue;
      if (capacity - used < elementMax + 2) break outer;
      parts.push(a.address);
      used += a.address.length + 1;
    }
  }
  let len = 0;
  let keep = 0;
  for (const p of parts) {
    const next = len + (keep === 0 ? 0 : 1) + p.length;
    if (next > HOST_ENUM_VALUE_MAX) break;
    len = next;
    keep++;
  }
  return parts.slice(0, keep).join(';');
}

// ---------------------------------------------------------------------------------------------
// ENUMERATE

export interface AutoPoolEntry {
  readonly key: AutoPoolKey;
  readonly value: string;
}

/**
 * The key and value of AUTO pool index `index`; undefined for index >= 10 (the caller answers
 * HV_S_CONT, which ends the host's enumeration). `version` is the kernel's registration version
 * when the caller holds it (the KVP service does); otherwise `deps.integrationServicesVersion()`
 * is asked; neither known → "Unknown version".
 */
export async function autoPoolEntry(
  index: number,
  deps: AutoPoolDeps,
  version?: string,
): Promise<AutoPoolEntry | undefined> {
  if (!Number.isInteger(index) || index < 0 || index >= AUTO_POOL_KEYS.length) return undefined;
  const key = AUTO_POOL_KEYS[index] as AutoPoolKey;
  const value = await autoPoolValue(key, deps, version);
  return { key, value };
}

/**
 * Upstream sends the text `getifaddrs failed` plus a newline as the address list when getifaddrs()
 * fails; we send an empty list and log the error instead.
 */
async function interfacesOrNone(deps: AutoPoolDeps): Promise<NetInterface[]> {
  try {
    return await deps.interfaces();
  } catch (err) {
    deps.logger.error({ err: String(err) }, 'listing the network interfaces failed');
    return [];
  }
}

async function autoPoolValue(
  key: AutoPoolKey,
  deps: AutoPoolDeps,
  version: string | undefined,
): Promise<string> {
  switch (key) {
    case 'FullyQualifiedDomainName':
      return deps.fqdn();
    case 'IntegrationServicesVersion':
      return version ?? deps.integrationServicesVersion?.() ?? UNKNOWN_VERSION;
    case 'NetworkAddressIPv4':
      return addressList(await interfacesOrNone(deps), 4);
    case 'NetworkAddressIPv6':
      return addressList(await interfacesOrNone(deps), 6);
    case 'OSBuildNumber':
      return deps.uname().release;
    case 'OSName':
      return (await readOsInfo(deps)).name;
    case 'OSMajorVersion':
      return (await readOsInfo(deps)).major;
    case 'OSMinorVersion':
      return (await readOsInfo(deps)).minor;
    case 'OSVersion': {
      const r = deps.uname().release;
      const dash = r.indexOf('-');
      return dash === -1 ? r : r.slice(0, dash);
    }
    case 'ProcessorArchitecture':
      return deps.uname().machine;
  }
}
