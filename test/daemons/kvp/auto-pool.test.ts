/** The AUTO pool (pool 2): key names, OS data from os-release and its fallbacks, addresses, FQDN. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { machine, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { memoryLogger } from '../../../daemons/common/log.js';
import {
  AUTO_POOL_KEYS,
  UNKNOWN_VERSION,
  addressList,
  autoPoolEntry,
  parseOsRelease,
  readOsInfo,
  type AutoPoolDeps,
} from '../../../daemons/kvp/auto-pool.js';
import {
  FQDN_AGAIN,
  FQDN_NONAME,
  cachedFqdn,
  canonicalName,
  defaultDeps,
  listInterfaces,
  runCommand,
  type NetInterface,
  type RunFn,
  type RunResult,
} from '../../../daemons/kvp/effects.js';

const tmp = mkdtempSync(join(tmpdir(), 'hv-autopool-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A deps object over an in-memory file map. */
function makeDeps(files: Record<string, string>, over: Partial<AutoPoolDeps> = {}): AutoPoolDeps {
  const logger = memoryLogger();
  return {
    sysRoot: '/root-x',
    fs: {
      readFile: async (p) => {
        const v = files[p];
        if (v === undefined) throw Object.assign(new Error(`ENOENT ${p}`), { code: 'ENOENT' });
        return v;
      },
      readdir: async () => [],
      mkdir: async () => {},
      writeFilesAtomic: async () => {},
    },
    interfaces: async () => [],
    uname: () => ({ sysname: 'Linux', release: '6.1.0-27-amd64', machine: 'x86_64' }),
    fqdn: async () => 'vm.example.com',
    integrationServicesVersion: () => undefined,
    logger,
    ...over,
  };
}

const DEBIAN_OS_RELEASE = `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
`;

async function allEntries(deps: AutoPoolDeps): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (let i = 0; i < 10; i++) {
    const e = await autoPoolEntry(i, deps);
    if (!e) throw new Error(`index ${i} empty`);
    out[e.key] = e.value;
  }
  return out;
}

describe('auto pool keys', () => {
  it('names the ten indices exactly as upstream, in order', () => {
    expect(AUTO_POOL_KEYS).toEqual([
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
    ]);
  });

  it('has nothing at index 10 and beyond (the caller answers HV_S_CONT)', async () => {
    const deps = makeDeps({});
    expect(await autoPoolEntry(10, deps)).toBeUndefined();
    expect(await autoPoolEntry(0xffffffff, deps)).toBeUndefined();
    expect(await autoPoolEntry(-1, deps)).toBeUndefined();
  });

  it('gives the documented Debian 12 values', async () => {
    const deps = makeDeps(
      { '/root-x/etc/os-release': DEBIAN_OS_RELEASE },
      {
        integrationServicesVersion: () => '3.1',
        interfaces: async () => [
          {
            name: 'lo',
            addresses: [{ family: 4, address: '127.0.0.1', netmask: '255.0.0.0', internal: true }],
          },
          {
            name: 'eth0',
            addresses: [
              { family: 4, address: '10.0.0.4', netmask: '255.255.255.0', internal: false },
              {
                family: 6,
                address: 'fe80::215:5dff:fe01:203',
                netmask: 'ffff:ffff:ffff:ffff::',
                internal: false,
              },
            ],
          },
        ],
      },
    );
    expect(await allEntries(deps)).toEqual({
      FullyQualifiedDomainName: 'vm.example.com',
      IntegrationServicesVersion: '3.1',
      NetworkAddressIPv4: '10.0.0.4',
      NetworkAddressIPv6: 'fe80::215:5dff:fe01:203',
      OSBuildNumber: '6.1.0-27-amd64',
      OSName: 'Debian GNU/Linux',
      OSMajorVersion: '12',
      OSMinorVersion: '',
      OSVersion: '6.1.0',
      ProcessorArchitecture: 'x86_64',
    });
  });

  it('reports "Unknown version" before the kernel handshake', async () => {
    expect(await autoPoolEntry(1, makeDeps({}))).toEqual({
      key: 'IntegrationServicesVersion',
      value: UNKNOWN_VERSION,
    });
    expect(UNKNOWN_VERSION).toBe('Unknown version');
  });

  it('takes the version from the caller first (the KVP service holds the handshake state)', async () => {
    const deps = makeDeps({}, { integrationServicesVersion: () => '3.0' });
    expect((await autoPoolEntry(1, deps, '3.1'))?.value).toBe('3.1');
    expect((await autoPoolEntry(1, deps))?.value).toBe('3.0');
    const { integrationServicesVersion: _unused, ...without } = deps;
    expect((await autoPoolEntry(1, without))?.value).toBe('Unknown version');
  });

  it('keeps a release without "-" whole for OSVersion', async () => {
    const deps = makeDeps({}, { uname: () => ({ sysname: 'Linux', release: '6.12.3', machine: 'aarch64' }) });
    expect(await autoPoolEntry(8, deps)).toEqual({ key: 'OSVersion', value: '6.12.3' });
    expect(await autoPoolEntry(9, deps)).toEqual({ key: 'ProcessorArchitecture', value: 'aarch64' });
  });

  it('computes values at each request (a changed address or os-release shows without restart)', async () => {
    const files: Record<string, string> = { '/root-x/etc/os-release': 'NAME=Old\n' };
    let ifaces: NetInterface[] = [
      {
        name: 'eth0',
        addresses: [{ family: 4, address: '10.0.0.4', netmask: '255.255.255.0', internal: false }],
      },
    ];
    const deps = makeDeps(files, { interfaces: async () => ifaces });
    expect((await autoPoolEntry(2, deps))?.value).toBe('10.0.0.4');
    expect((await autoPoolEntry(5, deps))?.value).toBe('Old');
    ifaces = [
      {
        name: 'eth0',
        addresses: [{ family: 4, address: '10.0.0.9', netmask: '255.255.255.0', internal: false }],
      },
    ];
    files['/root-x/etc/os-release'] = 'NAME=New\n';
    expect((await autoPoolEntry(2, deps))?.value).toBe('10.0.0.9');
    expect((await autoPoolEntry(5, deps))?.value).toBe('New');
  });
});

describe('os-release parsing (upstream quirks)', () => {
  it('skips # lines and lines without =, takes the text before the first =', () => {
    expect(parseOsRelease('#NAME=Commented\nNAME\nNAME=a=b\n')).toEqual({ name: 'a=b' });
  });

  it('matches names exactly (no trimming, case-sensitive)', () => {
    expect(parseOsRelease(' NAME=Spaced\nname=lower\nNAME =x\nVERSION_ID=1\n')).toEqual({ versionId: '1' });
  });

  it('drops every quote, keeps escaped characters literally', () => {
    expect(parseOsRelease(`NAME="Deb'ian" \\"GNU\\"/Linux\\\\x"\n`)).toEqual({
      name: `Debian "GNU"/Linux\\x`,
    });
    expect(parseOsRelease(`NAME='it''s'\n`)).toEqual({ name: 'its' });
  });

  it('keeps a newline escaped by a final backslash, as fgets + the C loop do', () => {
    expect(parseOsRelease('NAME=foo\\\nVERSION_ID=7\n')).toEqual({ name: 'foo\n', versionId: '7' });
  });

  it('lets later duplicates win and ignores VERSION, PRETTY_NAME', () => {
    expect(
      parseOsRelease('NAME=First\nVERSION_ID=1\nNAME=Second\nVERSION=9\nPRETTY_NAME=P\nVERSION_ID=2\n'),
    ).toEqual({
      name: 'Second',
      versionId: '2',
    });
  });

  it('cuts a line at a NUL byte and reads a last line without newline', () => {
    expect(parseOsRelease('NAME=ab\0cd\nVERSION_ID=3')).toEqual({ name: 'ab', versionId: '3' });
  });

  it('falls back to uname sysname and empty versions when os-release lacks NAME/VERSION_ID', async () => {
    const deps = makeDeps({
      '/root-x/etc/os-release': 'ID=x\n',
      '/root-x/etc/redhat-release': 'Red Hat\n7\n9\n',
    });
    // os-release exists: the fallbacks are not used even though it has no NAME.
    expect(await readOsInfo(deps)).toMatchObject({ name: 'Linux', major: '', minor: '' });
  });
});

describe('release-file fallbacks (only without /etc/os-release)', () => {
  it('reads lines 1/2/3 of /etc/SuSE-release', async () => {
    const deps = makeDeps({
      '/root-x/etc/SuSE-release':
        'SUSE Linux Enterprise Server 11 (x86_64)\nVERSION = 11\nPATCHLEVEL = 4\nextra\n',
      '/root-x/etc/redhat-release': 'Red Hat\n',
    });
    const e = await allEntries(deps);
    expect([e.OSName, e.OSMajorVersion, e.OSMinorVersion]).toEqual([
      'SUSE Linux Enterprise Server 11 (x86_64)',
      'VERSION = 11',
      'PATCHLEVEL = 4',
    ]);
  });

  it('uses /etc/redhat-release when SuSE-release is absent; missing lines stay empty', async () => {
    const deps = makeDeps({ '/root-x/etc/redhat-release': 'CentOS release 6.10 (Final)\n' });
    expect(await readOsInfo(deps)).toEqual({
      name: 'CentOS release 6.10 (Final)',
      major: '',
      minor: '',
      version: '6.1.0',
      build: '6.1.0-27-amd64',
      arch: 'x86_64',
    });
  });

  it('keeps uname sysname when no file exists', async () => {
    expect((await readOsInfo(makeDeps({}))).name).toBe('Linux');
  });
});

describe('address lists (indices 2 and 3)', () => {
  const ifaces: NetInterface[] = [
    {
      name: 'lo',
      addresses: [
        { family: 4, address: '127.0.0.1', netmask: '255.0.0.0', internal: true },
        { family: 6, address: '::1', netmask: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', internal: true },
      ],
    },
    {
      name: 'eth0',
      addresses: [
        { family: 4, address: '10.0.0.4', netmask: '255.255.255.0', internal: false },
        { family: 4, address: '10.0.0.5', netmask: '255.255.255.0', internal: false },
        { family: 6, address: 'fd00::4', netmask: 'ffff:ffff:ffff:ffff::', internal: false },
        { family: 6, address: 'fe80::215:5dff:fe01:203', netmask: 'ffff:ffff:ffff:ffff::', internal: false },
      ],
    },
    {
      name: 'docker0',
      addresses: [{ family: 4, address: '172.17.0.1', netmask: '255.255.0.0', internal: false }],
    },
  ];

  it('joins non-loopback addresses with ";" in interface order, no trailing ";", link-local included', () => {
    expect(addressList(ifaces, 4)).toBe('10.0.0.4;10.0.0.5;172.17.0.1');
    expect(addressList(ifaces, 6)).toBe('fd00::4;fe80::215:5dff:fe01:203');
    expect(addressList([], 4)).toBe('');
  });

  it('never cuts an address: the list stops at whole addresses within the 1022 characters the kernel passes', () => {
    const many: NetInterface[] = [
      {
        name: 'eth0',
        addresses: Array.from({ length: 150 }, (_, i) => ({
          family: 4 as const,
          address: `192.168.100.${100 + i}`,
          netmask: '255.255.255.0',
          internal: false,
        })),
      },
    ];
    const full = many[0]?.addresses.map((a) => a.address) ?? [];
    const v = addressList(many, 4);
    expect(v.length).toBeLessThanOrEqual(1022);
    const parts = v.split(';');
    expect(parts).toEqual(full.slice(0, parts.length));
    expect(v.length + 1 + (full[parts.length]?.length ?? 0)).toBeGreaterThan(1022);
  });
});

describe('FQDN', () => {
  function fakeRun(result: Partial<RunResult>, calls: unknown[][] = []): RunFn {
    return async (cmd, args, opts) => {
      calls.push([cmd, [...args], opts.timeoutMs]);
      return { stdout: '', code: 0, ...result };
    };
  }

  it('takes the canonical name from the first line of getent ahostsv4, host passed after --', async () => {
    const calls: unknown[][] = [];
    const run = fakeRun(
      { stdout: '127.0.1.1       STREAM vm.example.com\n127.0.1.1       DGRAM  \n' },
      calls,
    );
    expect(await canonicalName('vm', run, 3000, memoryLogger())).toBe('vm.example.com');
    expect(calls).toEqual([['getent', ['ahostsv4', '--', 'vm'], 3000]]);
  });

  it("reproduces upstream's getaddrinfo failure texts", async () => {
    expect(FQDN_NONAME).toBe('getaddrinfo failed: 0xfffffffe Name or service not known');
    expect(FQDN_AGAIN).toBe('getaddrinfo failed: 0xfffffffd Temporary failure in name resolution');
    expect(await canonicalName('vm', fakeRun({ code: 2 }), 3000, memoryLogger())).toBe(FQDN_NONAME);
    const log = memoryLogger();
    expect(await canonicalName('vm', fakeRun({ code: null, timedOut: true }), 3000, log)).toBe(FQDN_AGAIN);
    expect(log.lines.some((l) => l.level === 'warn' && /timed out/.test(l.msg))).toBe(true);
  });

  it('reports the plain host name when getent is missing', async () => {
    const log = memoryLogger();
    expect(await canonicalName('vm', fakeRun({ code: null, error: 'ENOENT' }), 3000, log)).toBe('vm');
    expect(log.lines.some((l) => l.level === 'warn')).toBe(true);
  });

  it('resolves localhost through the real getent', async () => {
    expect(await canonicalName('localhost', runCommand, 5000, memoryLogger())).toBe('localhost');
  });

  it('caches per host name, refreshes after the TTL without waiting, follows a rename at once', async () => {
    let host = 'vm';
    let t = 0;
    const resolved: string[] = [];
    let answer = 'vm.example.com';
    const fqdn = cachedFqdn({
      hostname: () => host,
      resolve: async (h) => {
        resolved.push(h);
        return h === 'vm' ? answer : `${h}.example.com`;
      },
      ttlMs: 1000,
      now: () => t,
    });
    expect(await fqdn()).toBe('vm.example.com');
    expect(await fqdn()).toBe('vm.example.com');
    expect(resolved).toEqual(['vm']);
    answer = 'vm.other.example';
    t = 1500;
    expect(await fqdn()).toBe('vm.example.com'); // stale value at once, refresh started
    await new Promise((r) => setTimeout(r, 0));
    expect(await fqdn()).toBe('vm.other.example');
    expect(resolved).toEqual(['vm', 'vm']);
    host = 'renamed';
    expect(await fqdn()).toBe('renamed.example.com');
    expect(resolved).toEqual(['vm', 'vm', 'renamed']);
  });

  it('runs one lookup at a time for concurrent requests', async () => {
    let calls = 0;
    let release: (v: string) => void = () => {};
    const fqdn = cachedFqdn({
      hostname: () => 'vm',
      resolve: () => {
        calls++;
        return new Promise<string>((r) => (release = r));
      },
    });
    const a = fqdn();
    const b = fqdn();
    release('vm.example.com');
    expect(await Promise.all([a, b])).toEqual(['vm.example.com', 'vm.example.com']);
    expect(calls).toBe(1);
  });
});

describe('listInterfaces (real os.networkInterfaces)', () => {
  it('marks loopback internal and orders interfaces by sysfs ifindex', async () => {
    const real = await listInterfaces('/nonexistent-root');
    const lo = real.find((i) => i.name === 'lo');
    expect(lo?.addresses.every((a) => a.internal)).toBe(true);
    expect(lo?.addresses.some((a) => a.family === 4 && a.address === '127.0.0.1')).toBe(true);
    const names = real.map((i) => i.name);
    // A fake sysfs giving the interfaces reversed ifindex values reverses the order.
    const root = join(tmp, 'ifindex-root');
    names.forEach((n, k) => {
      mkdirSync(join(root, 'sys/class/net', n), { recursive: true });
      writeFileSync(join(root, 'sys/class/net', n, 'ifindex'), `${names.length - k}\n`);
    });
    expect((await listInterfaces(root)).map((i) => i.name)).toEqual([...names].reverse());
  });
});

describe('defaultDeps (read-only look at this machine)', () => {
  it('answers every index from the real uname, os-release and interfaces', async () => {
    const deps = defaultDeps({
      scriptsDir: '/nonexistent',
      configDir: '/nonexistent',
      logger: memoryLogger(),
    });
    const e = await allEntries(deps);
    expect(e.OSBuildNumber).toBe(release());
    expect(e.ProcessorArchitecture).toBe(machine());
    expect(e.IntegrationServicesVersion).toBe('Unknown version');
    expect((e.NetworkAddressIPv4 ?? '').split(';')).not.toContain('127.0.0.1');
    expect(e.FullyQualifiedDomainName).not.toBe('');
    expect(typeof e.OSName).toBe('string');
  });
});
