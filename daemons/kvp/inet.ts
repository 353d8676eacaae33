/**
 * Address text helpers with glibc's `inet_pton` semantics (what the C daemon validates with), plus
 * the netmask arithmetic of GET_IP_INFO and SET_IP_INFO. Pure: no I/O, never throws.
 */

const IPV4_OCTET = '(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])';
const IPV4_RE = new RegExp(`^${IPV4_OCTET}(?:\\.${IPV4_OCTET}){3}$`);
const HEX_GROUP_RE = /^[0-9a-fA-F]{1,4}$/;

/**
 * `inet_pton(AF_INET)`: exactly four decimal parts 0..255, no leading zeros (glibc rejects `01`),
 * nothing else. Returns the 4 bytes or undefined.
 */
export function parseIPv4(text: string): Uint8Array | undefined {
  if (!IPV4_RE.test(text)) return undefined;
  return Uint8Array.from(text.split('.').map(Number));
}

function parseGroups(part: string, v4Allowed: boolean): number[] | undefined {
  if (part === '') return [];
  const pieces = part.split(':');
  const groups: number[] = [];
  for (let i = 0; i < pieces.length; i++) {
    const piece = pieces[i] ?? '';
    if (i === pieces.length - 1 && v4Allowed && piece.includes('.')) {
      const v4 = parseIPv4(piece);
      if (!v4) return undefined;
      groups.push(((v4[0] ?? 0) << 8) | (v4[1] ?? 0), ((v4[2] ?? 0) << 8) | (v4[3] ?? 0));
    } else if (HEX_GROUP_RE.test(piece)) {
      groups.push(parseInt(piece, 16));
    } else {
      return undefined; // empty piece (stray ':'), too long, or not hex
    }
  }
  return groups;
}

/**
 * `inet_pton(AF_INET6)`: 8 groups of 1–4 hex digits, at most one `::` standing for at least one zero
 * group, an optional dotted IPv4 tail, no zone id (`%eth0`), no brackets. Returns 16 bytes or undefined.
 */
export function parseIPv6(text: string): Uint8Array | undefined {
  if (text.length < 2 || text.length > 45) return undefined;
  const dbl = text.indexOf('::');
  if (dbl !== -1 && text.indexOf('::', dbl + 1) !== -1) return undefined;
  let groups: number[];
  if (dbl === -1) {
    const all = parseGroups(text, true);
    if (!all || all.length !== 8) return undefined;
    groups = all;
  } else {
    const head = parseGroups(text.slice(0, dbl), false);
    const tail = parseGroups(text.slice(dbl + 2), true);
    if (!head || !tail || head.length + tail.length > 7) return undefined;
    groups = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  }
  const bytes = new Uint8Array(16);
  groups.forEach((g, i) => {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  });
  return bytes;
}

/** IPv4 or IPv6 by `inet_pton`, as the C daemon's `kvp_verify_ip_address`. */
export function isIpAddress(text: string): boolean {
  return parseIPv4(text) !== undefined || parseIPv6(text) !== undefined;
}

/** The fully expanded form the C daemon writes into ifcfg files: 8 groups of 4 lowercase hex digits. */
export function expandIPv6(bytes: Uint8Array): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) {
    groups.push(((bytes[i] ?? 0) * 256 + (bytes[i + 1] ?? 0)).toString(16).padStart(4, '0'));
  }
  return groups.join(':');
}

/** Number of one bits (the C daemon's hweight32 sum over the IPv6 netmask). */
export function popCount(bytes: Uint8Array): number {
  let n = 0;
  for (const b of bytes) {
    for (let v = b; v !== 0; v >>= 1) n += v & 1;
  }
  return n;
}

/** The prefix length of a contiguous mask (ones then zeros), undefined for a non-contiguous one. */
export function contiguousPrefix(bytes: Uint8Array): number | undefined {
  const n = popCount(bytes);
  for (let bit = 0; bit < bytes.length * 8; bit++) {
    const set = (((bytes[bit >> 3] ?? 0) >> (7 - (bit & 7))) & 1) === 1;
    if (set !== bit < n) return undefined;
  }
  return n;
}

/** The prefix length of a dotted IPv4 netmask (`255.255.255.0` → 24); undefined if not a contiguous mask. */
export function ipv4MaskPrefix(text: string): number | undefined {
  const bytes = parseIPv4(text);
  return bytes ? contiguousPrefix(bytes) : undefined;
}

/** The prefix length of an IPv6 netmask in address form (`ffff:ffff:ffff:ffff::` → 64) as popcount. */
export function ipv6MaskPopCount(text: string): number | undefined {
  const bytes = parseIPv6(text);
  return bytes ? popCount(bytes) : undefined;
}
