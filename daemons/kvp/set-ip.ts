/**
 * KVP_OP_SET_IP_INFO (daemons.md §2.10): the host names an adapter by its VMBus device GUID and
 * sends a configuration; we write /var/lib/hyperv/ifcfg-<if> and /var/lib/hyperv/<if>.nmconnection
 * exactly as the newest upstream daemon does, then run `hv_set_ifconfig <ifcfg> <nmconnection>`.
 *
 * Differences from upstream (deliberate, see daemons/kvp/README.md):
 * - every token is validated before anything is written; an invalid one gives HV_INVALIDARG and
 *   leaves the previous files untouched (upstream leaves half-written files);
 * - tokens are trimmed of blanks at both ends (upstream: leading spaces only), and empty tokens are
 *   skipped (upstream stops the list at the first empty token, so `a;;b` lost `b`);
 * - tokens longer than 45 bytes are rejected (upstream overflows a 46-byte stack buffer);
 * - netmasks must be contiguous; an IPv4 address must pair with a dotted mask and an IPv6 address
 *   with a prefix length (`64` or `/64`) or an IPv6 mask (upstream writes `/0` for `/64` and
 *   garbage prefixes for mismatched pairs, or returns a raw negative status);
 * - both files are written atomically (temp file, fsync, rename), mode 0644;
 * - the GUID comparison ignores case;
 * - statuses are HV_S_OK, HV_GUID_NOTFOUND, HV_INVALIDARG or HV_E_FAIL, never raw negative numbers;
 * - hv_set_ifconfig runs from an argv array (no shell) with a time limit (default 20 s, under the
 *   service's 25 s deadline and the kernel's 30 s); a timeout kills it and gives HV_E_FAIL.
 */
import { join } from 'node:path';
import { HV_E_FAIL, HV_GUID_NOTFOUND, HV_INVALIDARG, HV_S_OK } from '../../uapi/constants.js';
import type { KvpIpInfo } from '../../uapi/kvp.js';
import type { KvpHostDeps } from './effects.js';
import { contiguousPrefix, expandIPv6, parseIPv4, parseIPv6 } from './inet.js';
import { firstLine } from './ip-info.js';

export type SetIpDeps = Pick<
  KvpHostDeps,
  'sysRoot' | 'scriptsDir' | 'configDir' | 'fs' | 'run' | 'logger' | 'scriptTimeoutMs'
>;

/** INET6_ADDRSTRLEN - 1: no valid address text is longer. */
export const MAX_TOKEN_LENGTH = 45;

/** Mode of the files in /var/lib/hyperv (upstream: 0666 & ~umask, i.e. 0644 as usual). */
export const CONFIG_FILE_MODE = 0o644;

// ---------------------------------------------------------------------------------------------
// Tokens

export type ListKind = 'address' | 'netmask' | 'gateway' | 'dns';

/** One validated token: its family, the host's text, and the text ifcfg gets. */
export interface Token {
  readonly family: 4 | 6;
  /** As the host sent it (trimmed): what the keyfile gets. */
  readonly text: string;
  /** IPv4 as sent; IPv6 addresses fully expanded; prefix lengths as sent. */
  readonly ifcfgText: string;
  /** Netmasks only: the prefix length. */
  readonly prefix?: number;
}

export class InvalidTokenError extends Error {
  constructor(
    readonly kind: ListKind,
    readonly token: string,
    reason: string,
  ) {
    super(
      `invalid ${kind} token ${JSON.stringify(token.length > 60 ? `${token.slice(0, 60)}…` : token)}: ${reason}`,
    );
    this.name = 'InvalidTokenError';
  }
}

/** Split a host list on `;`, trim spaces and tabs, skip empty tokens. */
export function splitTokens(list: string): string[] {
  return list
    .split(';')
    .map((t) => t.replace(/^[ \t]+|[ \t]+$/g, ''))
    .filter((t) => t !== '');
}

const PREFIX_RE = /^\/?([0-9]{1,3})$/;

/** Validate one token of list `kind`; throws InvalidTokenError. */
export function parseToken(kind: ListKind, text: string): Token {
  if (text.length > MAX_TOKEN_LENGTH)
    throw new InvalidTokenError(kind, text, `longer than ${MAX_TOKEN_LENGTH} bytes`);
  const v4 = parseIPv4(text);
  if (v4) {
    if (kind !== 'netmask') return { family: 4, text, ifcfgText: text };
    const prefix = contiguousPrefix(v4);
    if (prefix === undefined) throw new InvalidTokenError(kind, text, 'not a contiguous netmask');
    return { family: 4, text, ifcfgText: text, prefix };
  }
  const v6 = parseIPv6(text);
  if (v6) {
    if (kind !== 'netmask') return { family: 6, text, ifcfgText: expandIPv6(v6) };
    const prefix = contiguousPrefix(v6);
    if (prefix === undefined) throw new InvalidTokenError(kind, text, 'not a contiguous netmask');
    return { family: 6, text, ifcfgText: expandIPv6(v6), prefix };
  }
  if (kind === 'netmask') {
    const m = PREFIX_RE.exec(text);
    const n = m ? Number(m[1]) : NaN;
    if (n >= 0 && n <= 128) return { family: 6, text, ifcfgText: text, prefix: n };
    throw new InvalidTokenError(kind, text, 'neither a netmask nor a prefix length 0..128');
  }
  throw new InvalidTokenError(kind, text, 'not an IPv4 or IPv6 address');
}

export function parseList(kind: ListKind, list: string): Token[] {
  return splitTokens(list).map((t) => parseToken(kind, t));
}

// ---------------------------------------------------------------------------------------------
// The two files

export interface ParsedConfig {
  readonly dhcp: boolean;
  readonly addresses: readonly Token[];
  readonly netmasks: readonly Token[];
  readonly gateways: readonly Token[];
  readonly dns: readonly Token[];
}

/** Validate all four lists and the address/netmask pairs; throws InvalidTokenError. */
export function parseConfig(ip: KvpIpInfo): ParsedConfig {
  const addresses = parseList('address', ip.ipAddr);
  const netmasks = parseList('netmask', ip.subNet);
  const gateways = parseList('gateway', ip.gateWay);
  const dns = parseList('dns', ip.dnsAddr);
  const pairs = Math.min(addresses.length, netmasks.length);
  for (let k = 0; k < pairs; k++) {
    const a = addresses[k] as Token;
    const m = netmasks[k] as Token;
    if (a.family === 4 && m.family !== 4) {
      throw new InvalidTokenError('netmask', m.text, `IPv4 address ${a.text} needs a dotted netmask`);
    }
    if (a.family === 6 && m.family !== 6) {
      throw new InvalidTokenError('netmask', m.text, `IPv6 address ${a.text} needs a prefix length`);
    }
  }
  return { dhcp: ip.dhcpEnabled !== 0, addresses, netmasks, gateways, dns };
}

/** ifcfg names as upstream's process_ip_string numbers them (daemons.md §2.10 table). */
function ifcfgLines(kind: ListKind, tokens: readonly Token[]): string[] {
  const base = {
    address: ['IPADDR', 'IPV6ADDR'],
    netmask: ['NETMASK', 'IPV6NETMASK'],
    gateway: ['GATEWAY', 'IPV6_DEFAULTGW'],
    dns: ['DNS', 'DNS'],
  }[kind];
  let i = 0; // IPv4 counter (shared with IPv6 for DNS)
  let j = 0; // IPv6 counter
  return tokens.map((t) => {
    let suffix = '';
    if (kind === 'dns') suffix = String(++i);
    else if (t.family === 4) {
      if (kind === 'gateway' && i === 0) i++;
      else suffix = String(i++);
    } else if (j === 0) j++;
    else suffix = `_${j++}`;
    return `${base[t.family === 4 ? 0 : 1]}${suffix}=${t.ifcfgText}\n`;
  });
}

export function ifcfgContent(ifname: string, mac: string, c: ParsedConfig): string {
  return [
    `HWADDR=${mac}\n`,
    `DEVICE=${ifname}\n`,
    `BOOTPROTO=${c.dhcp ? 'dhcp' : 'none'}\n`,
    ...ifcfgLines('address', c.addresses),
    ...ifcfgLines('netmask', c.netmasks),
    ...ifcfgLines('gateway', c.gateways),
    ...ifcfgLines('dns', c.dns),
  ].join('');
}

function keyfileSection(family: 4 | 6, c: ParsedConfig): string {
  let out = `\n[ipv${family}]\n`;
  let n = 0;
  const pairs = Math.min(c.addresses.length, c.netmasks.length);
  for (let k = 0; k < pairs; k++) {
    const a = c.addresses[k] as Token;
    if (a.family !== family) continue;
    out += `address${++n}=${a.text}/${(c.netmasks[k] as Token).prefix ?? 0}\n`;
  }
  const method = family === 4 ? (c.dhcp ? 'auto' : n > 0 ? 'manual' : 'disabled') : n > 0 ? 'manual' : 'auto';
  out += `method=${method}\n`;
  const gw = c.gateways.filter((t) => t.family === family).map((t) => t.text);
  if (gw.length > 0) out += `gateway=${gw.join(',')}\n`;
  const dns = c.dns.filter((t) => t.family === family).map((t) => t.text);
  if (dns.length > 0) out += `dns=${dns.join(',')}\n`;
  return out;
}

/** The NetworkManager keyfile as upstream writes it (blank line before every section header). */
export function keyfileContent(ifname: string, mac: string, c: ParsedConfig): string {
  return (
    `\n[connection]\ninterface-name=${ifname}\n` +
    `\n[ethernet]\nmac-address=${mac}\n` +
    keyfileSection(4, c) +
    keyfileSection(6, c)
  );
}

// ---------------------------------------------------------------------------------------------
// Effects

/** A name the kernel could have given an interface, safe to put in a file name. */
export function isSafeIfname(name: string): boolean {
  return /^[^/\s:\0]{1,15}$/.test(name) && name !== '.' && name !== '..';
}

/** The interface whose /sys/class/net/<if>/device/device_id equals `guid` (case ignored). */
export async function interfaceByGuid(
  guid: string,
  deps: Pick<SetIpDeps, 'sysRoot' | 'fs'>,
): Promise<string | undefined> {
  if (guid === '') return undefined;
  const netDir = join(deps.sysRoot, 'sys/class/net');
  let names: string[];
  try {
    names = await deps.fs.readdir(netDir);
  } catch {
    return undefined;
  }
  const wanted = guid.toLowerCase();
  for (const name of names) {
    let id: string;
    try {
      id = firstLine(await deps.fs.readFile(join(netDir, name, 'device/device_id')));
    } catch {
      continue;
    }
    if (id.toLowerCase() === wanted && isSafeIfname(name)) return name;
  }
  return undefined;
}

/**
 * SET_IP_INFO. Returns the status for the host: HV_S_OK; HV_GUID_NOTFOUND (no interface with that
 * device GUID); HV_INVALIDARG (a token or an address/netmask pair is invalid; nothing written);
 * HV_E_FAIL (MAC unreadable, files not written, hv_set_ifconfig missing, failed or timed out).
 */
export async function setIpInfo(ip: KvpIpInfo, deps: SetIpDeps): Promise<number> {
  const log = deps.logger;
  const ifname = await interfaceByGuid(ip.adapterId, deps);
  if (ifname === undefined) {
    log.warn({ adapterId: ip.adapterId }, 'SET_IP_INFO: no interface has this device GUID');
    return HV_GUID_NOTFOUND;
  }
  let mac: string;
  try {
    mac = firstLine(
      await deps.fs.readFile(join(deps.sysRoot, 'sys/class/net', ifname, 'address')),
    ).toUpperCase();
  } catch (err) {
    log.error({ ifname, err: String(err) }, 'Failed to write config file: cannot read the MAC address');
    return HV_E_FAIL;
  }
  if (mac === '') {
    log.error({ ifname }, 'Failed to write config file: empty MAC address');
    return HV_E_FAIL;
  }
  let config: ParsedConfig;
  try {
    config = parseConfig(ip);
  } catch (err) {
    if (!(err instanceof InvalidTokenError)) throw err;
    log.error({ ifname, kind: err.kind, token: err.token }, `SET_IP_INFO: ${err.message}; nothing written`);
    return HV_INVALIDARG;
  }
  if (config.addresses.length !== config.netmasks.length) {
    log.warn(
      { ifname, addresses: config.addresses.length, netmasks: config.netmasks.length },
      'SET_IP_INFO: address and netmask counts differ; the keyfile gets only the paired ones',
    );
  }
  const ifcfgPath = join(deps.configDir, `ifcfg-${ifname}`);
  const nmPath = join(deps.configDir, `${ifname}.nmconnection`);
  try {
    await deps.fs.mkdir(deps.configDir);
    await deps.fs.writeFilesAtomic([
      { path: ifcfgPath, data: ifcfgContent(ifname, mac, config), mode: CONFIG_FILE_MODE },
      { path: nmPath, data: keyfileContent(ifname, mac, config), mode: CONFIG_FILE_MODE },
    ]);
  } catch (err) {
    log.error({ ifname, err: String(err) }, 'Failed to write config file');
    return HV_E_FAIL;
  }
  const script = join(deps.scriptsDir, 'hv_set_ifconfig');
  const r = await deps.run(script, [ifcfgPath, nmPath], { timeoutMs: deps.scriptTimeoutMs });
  if (r.code !== 0 || r.timedOut) {
    const why =
      r.error !== undefined
        ? `could not start: ${r.error}`
        : r.timedOut
          ? `timed out after ${deps.scriptTimeoutMs} ms`
          : r.code === null
            ? `killed by ${r.signal ?? 'a signal'}`
            : `exit code ${r.code}`;
    log.error(
      { ifname, cmd: script, args: [ifcfgPath, nmPath], code: r.code, stderr: r.stderr?.slice(0, 2000) },
      `Failed to execute cmd '${script} ${ifcfgPath} ${nmPath}'; ${why}`,
    );
    return HV_E_FAIL;
  }
  log.info(
    { ifname, dhcp: config.dhcp, addresses: config.addresses.map((t) => t.text) },
    'SET_IP_INFO applied',
  );
  return HV_S_OK;
}
