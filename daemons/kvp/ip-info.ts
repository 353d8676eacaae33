/**
 * KVP_OP_GET_IP_INFO (daemons.md §2.9): the host names an adapter by MAC address; we answer with
 * its addresses, netmasks, default gateways, DNS servers and DHCP state.
 *
 * Differences from upstream (all deliberate, see daemons/kvp/README.md):
 * - the interface name is compared exactly (upstream: prefix, so `eth1` also took `eth10`'s addresses);
 * - the MAC comparison ignores case on both sides (upstream upper-cases only the sysfs side);
 * - sub_net stays aligned with ip_addr (upstream's IPv6 bookkeeping bug can skip entries);
 * - helpers run once per request, concurrently, each with a time limit (upstream: 3 runs per address,
 *   unbounded); a helper that fails, exits non-zero or times out leaves its field empty, with a log line;
 * - gate_way lists only default routes through this interface (`dev <ifname>`; upstream ≥ Dec 2024
 *   lists every default route of the system);
 * - lists that would not fit the kernel's fields (1024 UTF-16 units, gateway 512) are cut at a
 *   whole element (upstream fails the request, or the kernel cuts mid-address).
 */
import { join } from 'node:path';
import {
  ADDR_FAMILY_IPV4,
  ADDR_FAMILY_IPV6,
  ADDR_FAMILY_NONE,
  HV_E_FAIL,
  HV_S_OK,
} from '../../uapi/constants.js';
import type { KvpIpInfo } from '../../uapi/kvp.js';
import type { KvpHostDeps, NetAddress, RunResult } from './effects.js';
import { ipv6MaskPopCount, isIpAddress } from './inet.js';

export type IpInfoDeps = Pick<
  KvpHostDeps,
  'sysRoot' | 'scriptsDir' | 'fs' | 'run' | 'interfaces' | 'logger' | 'helperTimeoutMs' | 'ipCommand'
>;

/** Longest ip_addr / sub_net / dns_addr text the kernel passes on whole (1024 units, one left for NUL). */
export const IP_LIST_MAX = 1023;
/** Longest gate_way text (512 units, one left for NUL). */
export const GATEWAY_LIST_MAX = 511;

export interface IpInfoResult {
  readonly status: number;
  readonly ip: KvpIpInfo;
}

// ---------------------------------------------------------------------------------------------
// Pure parts

/** The first line of a sysfs attribute, without its newline. */
export function firstLine(text: string): string {
  const nl = text.indexOf('\n');
  return nl === -1 ? text : text.slice(0, nl);
}

/**
 * ip_addr and sub_net of one interface: addresses in order, `;`-joined; sub_net has the dotted mask
 * for IPv4 and `/<popcount>` for IPv6 at the same position. Both lists stop before an element that
 * would take either over {@link IP_LIST_MAX}, so they always stay aligned.
 */
export function addressFields(addresses: readonly NetAddress[]): {
  ipAddr: string;
  subNet: string;
  addrFamily: number;
  truncated: boolean;
} {
  let ipAddr = '';
  let subNet = '';
  let addrFamily = ADDR_FAMILY_NONE;
  for (const a of addresses) {
    const mask = a.family === 4 ? a.netmask : `/${ipv6MaskPopCount(a.netmask) ?? 0}`;
    const nextIp = ipAddr === '' ? a.address : `${ipAddr};${a.address}`;
    const nextSn = ipAddr === '' ? mask : `${subNet};${mask}`;
    if (nextIp.length > IP_LIST_MAX || nextSn.length > IP_LIST_MAX)
      return { ipAddr, subNet, addrFamily, truncated: true };
    ipAddr = nextIp;
    subNet = nextSn;
    addrFamily |= a.family === 4 ? ADDR_FAMILY_IPV4 : ADDR_FAMILY_IPV6;
  }
  return { ipAddr, subNet, addrFamily, truncated: false };
}

/**
 * Next hops of the default routes through `ifname`, from `ip --oneline route show` output. A line
 * counts if it starts with `default `; it is split into the route and its `nexthop` parts (multipath
 * routes); each part's `via <addr>` (also `via inet6 <addr>`) is taken when the same part says
 * `dev <ifname>` and the address passes inet_pton. Tokens end at blanks and at the `\` that
 * `--oneline` puts for line breaks, as in upstream.
 */
export function defaultGateways(routeOutput: string, ifname: string): string[] {
  const result: string[] = [];
  for (const line of routeOutput.split('\n')) {
    if (!line.startsWith('default ')) continue;
    const tokens = line
      .slice('default '.length)
      .split(/[\s\\]+/)
      .filter((t) => t !== '');
    const parts: string[][] = [[]];
    for (const t of tokens) {
      if (t === 'nexthop') parts.push([]);
      else parts[parts.length - 1]?.push(t);
    }
    for (const part of parts) {
      let dev: string | undefined;
      const vias: string[] = [];
      for (let i = 0; i < part.length; i++) {
        if (part[i] === 'dev') dev = part[i + 1];
        else if (part[i] === 'via') {
          let addr = part[i + 1];
          if (addr === 'inet' || addr === 'inet6') addr = part[i + 2];
          if (addr !== undefined) vias.push(addr);
        }
      }
      if (dev === ifname) result.push(...vias.filter(isIpAddress));
    }
  }
  return result;
}

/** Elements each followed by `;` (upstream's gate_way and dns_addr format), whole elements up to `max`. */
export function semicolonTerminated(items: readonly string[], max: number): string {
  let out = '';
  for (const item of items) {
    if (out.length + item.length + 1 > max) break;
    out += `${item};`;
  }
  return out;
}

/** hv_get_dns_info output: one server per line; blank lines are skipped, blanks trimmed. */
export function dnsLines(stdout: string): string[] {
  return stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
}

/** hv_get_dhcp_info output: 1 if its first line starts with `Enabled`, else 0 (also for no output). */
export function dhcpFlag(stdout: string): number {
  return firstLine(stdout).startsWith('Enabled') ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------
// Effects

function describe(r: RunResult): string {
  if (r.error !== undefined) return `could not start: ${r.error}`;
  if (r.timedOut) return 'timed out';
  if (r.code === null) return `killed by ${r.signal ?? 'a signal'}`;
  return `exit code ${r.code}`;
}

/** Run one helper; its stdout, or undefined (logged) if it failed, exited non-zero or timed out. */
async function helperOutput(
  deps: IpInfoDeps,
  what: string,
  cmd: string,
  args: readonly string[],
): Promise<string | undefined> {
  const r = await deps.run(cmd, args, { timeoutMs: deps.helperTimeoutMs });
  if (r.code === 0 && !r.timedOut) return r.stdout;
  deps.logger.warn(
    { cmd, args, code: r.code, timedOut: r.timedOut === true, stderr: r.stderr?.slice(0, 500) },
    `GET_IP_INFO: ${what} ${describe(r)}; its field is left empty`,
  );
  return undefined;
}

/** gate_way, dns_addr and dhcp_enabled of `ifname`: four helpers, concurrently, each time-limited. */
async function interfaceConfig(
  ifname: string,
  deps: IpInfoDeps,
): Promise<{ gateWay: string; dnsAddr: string; dhcpEnabled: number }> {
  const [v4, v6, dns, dhcp] = await Promise.all([
    helperOutput(deps, 'ip -4 route', deps.ipCommand, ['--oneline', '-4', 'route', 'show']),
    helperOutput(deps, 'ip -6 route', deps.ipCommand, ['--oneline', '-6', 'route', 'show']),
    helperOutput(deps, 'hv_get_dns_info', join(deps.scriptsDir, 'hv_get_dns_info'), [ifname]),
    helperOutput(deps, 'hv_get_dhcp_info', join(deps.scriptsDir, 'hv_get_dhcp_info'), [ifname]),
  ]);
  const gateways = [...defaultGateways(v4 ?? '', ifname), ...defaultGateways(v6 ?? '', ifname)];
  return {
    gateWay: semicolonTerminated(gateways, GATEWAY_LIST_MAX),
    dnsAddr: semicolonTerminated(dnsLines(dns ?? ''), IP_LIST_MAX),
    dhcpEnabled: dhcpFlag(dhcp ?? ''),
  };
}

/**
 * GET_IP_INFO for the adapter with MAC `adapterId` (e.g. `00:15:5D:01:02:03`).
 *
 * Walks /sys/class/net/<if>/address (readdir order); every interface whose MAC equals adapterId is
 * tried in turn and the first one with a non-loopback IPv4/IPv6 address wins (a netvsc NIC and its
 * SR-IOV VF share the MAC; the VF has no addresses). Status: HV_S_OK; HV_E_FAIL if no interface has
 * that MAC or /sys/class/net cannot be read. Interfaces matched but without addresses: HV_S_OK with
 * empty fields, no helper run (as upstream).
 */
export async function getIpInfo(adapterId: string, deps: IpInfoDeps): Promise<IpInfoResult> {
  const empty: KvpIpInfo = {
    adapterId,
    addrFamily: ADDR_FAMILY_NONE,
    dhcpEnabled: 0,
    ipAddr: '',
    subNet: '',
    gateWay: '',
    dnsAddr: '',
  };
  const netDir = join(deps.sysRoot, 'sys/class/net');
  let names: string[];
  try {
    names = await deps.fs.readdir(netDir);
  } catch (err) {
    deps.logger.error({ dir: netDir, err: String(err) }, 'GET_IP_INFO: cannot list the network interfaces');
    return { status: HV_E_FAIL, ip: empty };
  }
  const wanted = adapterId.toUpperCase();
  const matched: string[] = [];
  for (const name of names) {
    let mac: string;
    try {
      mac = firstLine(await deps.fs.readFile(join(netDir, name, 'address'))).toUpperCase();
    } catch {
      continue; // bonding_masters and the like
    }
    if (wanted === '' || mac !== wanted) continue;
    matched.push(name);
  }
  if (matched.length === 0) {
    deps.logger.warn({ adapterId }, 'GET_IP_INFO: no interface has this MAC address');
    return { status: HV_E_FAIL, ip: empty };
  }
  let interfaces;
  try {
    interfaces = await deps.interfaces();
  } catch (err) {
    deps.logger.error({ err: String(err) }, 'GET_IP_INFO: listing the interface addresses failed');
    return { status: HV_E_FAIL, ip: empty };
  }
  for (const name of matched) {
    const addresses = (interfaces.find((i) => i.name === name)?.addresses ?? []).filter((a) => !a.internal);
    if (addresses.length === 0) {
      deps.logger.debug(
        { adapterId, ifname: name },
        'GET_IP_INFO: interface has no address; trying the next',
      );
      continue;
    }
    const fields = addressFields(addresses);
    if (fields.truncated) {
      deps.logger.warn(
        { ifname: name, count: addresses.length },
        'GET_IP_INFO: address list cut to fit the host field',
      );
    }
    const config = await interfaceConfig(name, deps);
    return {
      status: HV_S_OK,
      ip: {
        adapterId,
        addrFamily: fields.addrFamily,
        dhcpEnabled: config.dhcpEnabled,
        ipAddr: fields.ipAddr,
        subNet: fields.subNet,
        gateWay: config.gateWay,
        dnsAddr: config.dnsAddr,
      },
    };
  }
  deps.logger.info({ adapterId, interfaces: matched }, 'GET_IP_INFO: the adapter has no IP address');
  return { status: HV_S_OK, ip: empty };
}
