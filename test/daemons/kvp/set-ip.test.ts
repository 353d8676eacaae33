/** SET_IP_INFO: adapter by GUID, token validation, the ifcfg and keyfile formats, atomic writes, the script. */
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { memoryLogger } from '../../../daemons/common/log.js';
import { HV_E_FAIL, HV_GUID_NOTFOUND, HV_INVALIDARG, HV_S_OK } from '../../../uapi/constants.js';
import type { KvpIpInfo } from '../../../uapi/kvp.js';
import {
  nodeFs,
  runCommand,
  writeFilesAtomic,
  type RunFn,
  type RunResult,
} from '../../../daemons/kvp/effects.js';
import { expandIPv6, parseIPv4, parseIPv6 } from '../../../daemons/kvp/inet.js';
import {
  isSafeIfname,
  parseToken,
  setIpInfo,
  splitTokens,
  type SetIpDeps,
} from '../../../daemons/kvp/set-ip.js';

const tmp = mkdtempSync(join(tmpdir(), 'hv-setip-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let count = 0;

const GUID = '{f8615163-df3e-46c5-913f-f2d2f965ed0e}';

interface Env {
  root: string;
  configDir: string;
  calls: { cmd: string; args: string[]; timeoutMs: number }[];
  log: ReturnType<typeof memoryLogger>;
  deps: SetIpDeps;
}

/** A fake sysfs with eth0 (the GUID above) and eth1, an empty config dir, a recording run(). */
function env(result: Partial<RunResult> = {}, over: Partial<SetIpDeps> = {}): Env {
  const root = join(tmp, `r${count++}`);
  for (const [name, guid, mac] of [
    ['eth1', '{00000000-0000-0000-0000-000000000001}', '00:15:5d:00:00:01'],
    ['eth0', GUID, '00:15:5d:01:02:03'],
  ] as const) {
    mkdirSync(join(root, 'sys/class/net', name, 'device'), { recursive: true });
    writeFileSync(join(root, 'sys/class/net', name, 'device/device_id'), `${guid}\n`);
    writeFileSync(join(root, 'sys/class/net', name, 'address'), `${mac}\n`);
  }
  mkdirSync(join(root, 'sys/class/net/lo'));
  writeFileSync(join(root, 'sys/class/net/lo/address'), '00:00:00:00:00:00\n');
  const configDir = join(root, 'var/lib/hyperv');
  const calls: Env['calls'] = [];
  const log = memoryLogger();
  const run: RunFn = async (cmd, args, opts) => {
    calls.push({ cmd, args: [...args], timeoutMs: opts.timeoutMs });
    return { stdout: '', code: 0, ...result };
  };
  const deps: SetIpDeps = {
    sysRoot: root,
    scriptsDir: '/usr/libexec/hypervkvpd',
    configDir,
    fs: nodeFs,
    run,
    logger: log,
    scriptTimeoutMs: 25_000,
    ...over,
  };
  return { root, configDir, calls, log, deps };
}

function request(over: Partial<KvpIpInfo> = {}): KvpIpInfo {
  return {
    adapterId: GUID,
    addrFamily: 0x03,
    dhcpEnabled: 0,
    ipAddr: '192.168.1.10;fd00::10',
    subNet: '255.255.255.0;64',
    gateWay: '192.168.1.1;fd00::1',
    dnsAddr: '8.8.8.8;2001:4860:4860::8888',
    ...over,
  };
}

const EXAMPLE_IFCFG = `HWADDR=00:15:5D:01:02:03
DEVICE=eth0
BOOTPROTO=none
IPADDR0=192.168.1.10
IPV6ADDR=fd00:0000:0000:0000:0000:0000:0000:0010
NETMASK0=255.255.255.0
IPV6NETMASK=64
GATEWAY=192.168.1.1
IPV6_DEFAULTGW=fd00:0000:0000:0000:0000:0000:0000:0001
DNS1=8.8.8.8
DNS2=2001:4860:4860:0000:0000:0000:0000:8888
`;

const EXAMPLE_KEYFILE = `
[connection]
interface-name=eth0

[ethernet]
mac-address=00:15:5D:01:02:03

[ipv4]
address1=192.168.1.10/24
method=manual
gateway=192.168.1.1
dns=8.8.8.8

[ipv6]
address1=fd00::10/64
method=manual
gateway=fd00::1
dns=2001:4860:4860::8888
`;

const read = (e: Env, name: string): string => readFileSync(join(e.configDir, name), 'utf8');

describe('SET_IP_INFO files', () => {
  it('writes the documented ifcfg and keyfile byte for byte and runs hv_set_ifconfig (daemons.md §2.10)', async () => {
    const e = env();
    expect(await setIpInfo(request(), e.deps)).toBe(HV_S_OK);
    expect(read(e, 'ifcfg-eth0')).toBe(EXAMPLE_IFCFG);
    expect(read(e, 'eth0.nmconnection')).toBe(EXAMPLE_KEYFILE);
    expect(statSync(join(e.configDir, 'ifcfg-eth0')).mode & 0o777).toBe(0o644);
    expect(statSync(join(e.configDir, 'eth0.nmconnection')).mode & 0o777).toBe(0o644);
    expect(e.calls).toEqual([
      {
        cmd: '/usr/libexec/hypervkvpd/hv_set_ifconfig',
        args: [join(e.configDir, 'ifcfg-eth0'), join(e.configDir, 'eth0.nmconnection')],
        timeoutMs: 25_000,
      },
    ]);
    expect(readdirSync(e.configDir).sort()).toEqual(['eth0.nmconnection', 'ifcfg-eth0']);
  });

  it('numbers several entries as upstream (IPADDRn, IPV6ADDR_n, GATEWAY/GATEWAYn, shared DNS counter)', async () => {
    const e = env();
    const status = await setIpInfo(
      request({
        dhcpEnabled: 1,
        ipAddr: '10.0.0.4;fd00::4;10.0.0.5;fd00::5;fd00::6',
        subNet: '255.255.255.0;/64;255.255.0.0;ffff:ffff:ffff:ffff:ffff:ffff::;48',
        gateWay: '10.0.0.1;10.0.0.2;fe80::1;fe80::2;10.0.0.3',
        dnsAddr: '2001:db8::53;10.0.0.53;10.0.0.54',
      }),
      e.deps,
    );
    expect(status).toBe(HV_S_OK);
    expect(read(e, 'ifcfg-eth0')).toBe(
      [
        'HWADDR=00:15:5D:01:02:03',
        'DEVICE=eth0',
        'BOOTPROTO=dhcp',
        'IPADDR0=10.0.0.4',
        'IPV6ADDR=fd00:0000:0000:0000:0000:0000:0000:0004',
        'IPADDR1=10.0.0.5',
        'IPV6ADDR_1=fd00:0000:0000:0000:0000:0000:0000:0005',
        'IPV6ADDR_2=fd00:0000:0000:0000:0000:0000:0000:0006',
        'NETMASK0=255.255.255.0',
        'IPV6NETMASK=/64',
        'NETMASK1=255.255.0.0',
        'IPV6NETMASK_1=ffff:ffff:ffff:ffff:ffff:ffff:0000:0000',
        'IPV6NETMASK_2=48',
        'GATEWAY=10.0.0.1',
        'GATEWAY1=10.0.0.2',
        'IPV6_DEFAULTGW=fe80:0000:0000:0000:0000:0000:0000:0001',
        'IPV6_DEFAULTGW_1=fe80:0000:0000:0000:0000:0000:0000:0002',
        'GATEWAY2=10.0.0.3',
        'DNS1=2001:0db8:0000:0000:0000:0000:0000:0053',
        'DNS2=10.0.0.53',
        'DNS3=10.0.0.54',
        '',
      ].join('\n'),
    );
    // `/64` → 64 (upstream's atoi gives 0), an IPv6 mask → its prefix length.
    expect(read(e, 'eth0.nmconnection')).toBe(
      [
        '',
        '[connection]',
        'interface-name=eth0',
        '',
        '[ethernet]',
        'mac-address=00:15:5D:01:02:03',
        '',
        '[ipv4]',
        'address1=10.0.0.4/24',
        'address2=10.0.0.5/16',
        'method=auto',
        'gateway=10.0.0.1,10.0.0.2,10.0.0.3',
        'dns=10.0.0.53,10.0.0.54',
        '',
        '[ipv6]',
        'address1=fd00::4/64',
        'address2=fd00::5/96',
        'address3=fd00::6/48',
        'method=manual',
        'gateway=fe80::1,fe80::2',
        'dns=2001:db8::53',
        '',
      ].join('\n'),
    );
  });

  it('writes method=disabled / auto and omits gateway and dns lines when there is nothing', async () => {
    const e = env();
    expect(await setIpInfo(request({ ipAddr: '', subNet: '', gateWay: '', dnsAddr: '' }), e.deps)).toBe(
      HV_S_OK,
    );
    expect(read(e, 'ifcfg-eth0')).toBe('HWADDR=00:15:5D:01:02:03\nDEVICE=eth0\nBOOTPROTO=none\n');
    expect(read(e, 'eth0.nmconnection')).toBe(
      '\n[connection]\ninterface-name=eth0\n\n[ethernet]\nmac-address=00:15:5D:01:02:03\n\n[ipv4]\nmethod=disabled\n\n[ipv6]\nmethod=auto\n',
    );
  });

  it('skips empty tokens (upstream stopped there), trims blanks, accepts a trailing ";"', async () => {
    const e = env();
    const status = await setIpInfo(
      request({
        ipAddr: ' 192.168.1.10;;fd00::10 ',
        subNet: '255.255.255.0; 64;',
        gateWay: '192.168.1.1;',
        dnsAddr: '8.8.8.8',
      }),
      e.deps,
    );
    expect(status).toBe(HV_S_OK);
    expect(read(e, 'ifcfg-eth0')).toContain(
      'IPADDR0=192.168.1.10\nIPV6ADDR=fd00:0000:0000:0000:0000:0000:0000:0010\n',
    );
    expect(read(e, 'eth0.nmconnection')).toContain('address1=fd00::10/64\n');
  });

  it('lists only paired addresses in the keyfile when counts differ, with a warning', async () => {
    const e = env();
    expect(
      await setIpInfo(request({ ipAddr: '192.168.1.10;192.168.1.11', subNet: '255.255.255.0' }), e.deps),
    ).toBe(HV_S_OK);
    expect(read(e, 'ifcfg-eth0')).toContain('IPADDR1=192.168.1.11\n');
    expect(read(e, 'eth0.nmconnection')).not.toContain('192.168.1.11');
    expect(e.log.lines.some((l) => l.level === 'warn' && /counts differ/.test(l.msg))).toBe(true);
  });

  it('finds the interface by GUID ignoring case', async () => {
    const e = env();
    expect(await setIpInfo(request({ adapterId: GUID.toUpperCase() }), e.deps)).toBe(HV_S_OK);
    expect(existsSync(join(e.configDir, 'ifcfg-eth0'))).toBe(true);
  });
});

describe('SET_IP_INFO statuses', () => {
  it('answers HV_GUID_NOTFOUND for an unknown GUID (and an empty one), writing nothing', async () => {
    for (const adapterId of [
      '{f8615163-df3e-46c5-913f-f2d2f965ed0f}',
      '',
      'f8615163-df3e-46c5-913f-f2d2f965ed0e',
    ]) {
      const e = env();
      expect(await setIpInfo(request({ adapterId }), e.deps)).toBe(HV_GUID_NOTFOUND);
      expect(existsSync(e.configDir)).toBe(false);
      expect(e.calls).toEqual([]);
    }
  });

  it.each([
    ['an address that is not one', { ipAddr: '192.168.1.10;abc' }],
    ['an IPv4 octet over 255', { ipAddr: '192.168.1.256' }],
    ['an IPv4 leading zero', { ipAddr: '192.168.01.1' }],
    ['an IPv6 zone id', { ipAddr: 'fe80::1%eth0', subNet: '64' }],
    ['a token over 45 bytes', { ipAddr: '0000:0000:0000:0000:0000:0000:ffff:192.168.100.200', subNet: '64' }],
    ['a 100-byte token', { dnsAddr: '1'.repeat(100) }],
    ['a non-contiguous netmask', { subNet: '255.0.255.0;64' }],
    ['a prefix over 128', { subNet: '255.255.255.0;129' }],
    ['an IPv4 address with a prefix length', { subNet: '24;64' }],
    ['an IPv6 address with a dotted netmask', { subNet: '255.255.255.0;255.255.255.0' }],
    ['a bad gateway', { gateWay: '192.168.1.1;gw' }],
    ['a bad DNS server', { dnsAddr: '8.8.8.8;dns.google' }],
    ['a hostname-like netmask', { subNet: 'abc;64' }],
  ])('answers HV_INVALIDARG for %s and leaves the previous files untouched', async (_what, over) => {
    const e = env();
    mkdirSync(e.configDir, { recursive: true });
    writeFileSync(join(e.configDir, 'ifcfg-eth0'), 'OLD ifcfg\n');
    writeFileSync(join(e.configDir, 'eth0.nmconnection'), 'OLD keyfile\n');
    expect(await setIpInfo(request(over), e.deps)).toBe(HV_INVALIDARG);
    expect(read(e, 'ifcfg-eth0')).toBe('OLD ifcfg\n');
    expect(read(e, 'eth0.nmconnection')).toBe('OLD keyfile\n');
    expect(readdirSync(e.configDir).sort()).toEqual(['eth0.nmconnection', 'ifcfg-eth0']);
    expect(e.calls).toEqual([]);
    expect(e.log.lines.some((l) => l.level === 'error' && /invalid/.test(l.msg))).toBe(true);
  });

  it("answers HV_E_FAIL when the script fails, with upstream's log text", async () => {
    const e = env({ code: 1, stderr: 'nmcli: boom' });
    expect(await setIpInfo(request(), e.deps)).toBe(HV_E_FAIL);
    expect(read(e, 'ifcfg-eth0')).toBe(EXAMPLE_IFCFG); // the files stay, as upstream's
    const line = e.log.lines.find((l) => l.level === 'error');
    expect(line?.msg).toMatch(
      /^Failed to execute cmd '\/usr\/libexec\/hypervkvpd\/hv_set_ifconfig .*ifcfg-eth0 .*eth0\.nmconnection'; exit code 1$/,
    );
  });

  it('answers HV_E_FAIL when the script is missing or times out (real processes)', async () => {
    const scripts = join(tmp, 'scripts');
    mkdirSync(scripts, { recursive: true });
    const missing = env({}, { run: runCommand, scriptsDir: join(tmp, 'no-scripts') });
    expect(await setIpInfo(request(), missing.deps)).toBe(HV_E_FAIL);
    expect(missing.log.lines.some((l) => /could not start: ENOENT/.test(l.msg))).toBe(true);

    writeFileSync(join(scripts, 'hv_set_ifconfig'), '#!/bin/sh\nsleep 30\n');
    chmodSync(join(scripts, 'hv_set_ifconfig'), 0o755);
    const slow = env({}, { run: runCommand, scriptsDir: scripts, scriptTimeoutMs: 300 });
    const t0 = Date.now();
    expect(await setIpInfo(request(), slow.deps)).toBe(HV_E_FAIL);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(slow.log.lines.some((l) => /timed out after 300 ms/.test(l.msg))).toBe(true);

    writeFileSync(
      join(scripts, 'hv_set_ifconfig'),
      '#!/bin/sh\n[ -f "$1" ] && [ -f "$2" ] && exit 0\nexit 9\n',
    );
    const ok = env({}, { run: runCommand, scriptsDir: scripts });
    expect(await setIpInfo(request(), ok.deps)).toBe(HV_S_OK);
  });

  it('answers HV_E_FAIL when the MAC cannot be read', async () => {
    const e = env();
    rmSync(join(e.root, 'sys/class/net/eth0/address'));
    expect(await setIpInfo(request(), e.deps)).toBe(HV_E_FAIL);
    expect(e.calls).toEqual([]);
  });

  it('answers HV_E_FAIL, without running the script, when the files cannot be written', async () => {
    const e = env(
      {},
      {
        fs: {
          ...nodeFs,
          writeFilesAtomic: async () => {
            throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
          },
        },
      },
    );
    expect(await setIpInfo(request(), e.deps)).toBe(HV_E_FAIL);
    expect(e.calls).toEqual([]);
    expect(e.log.lines.some((l) => l.msg === 'Failed to write config file')).toBe(true);
  });
});

describe('atomic writes', () => {
  it('leaves every target untouched and no temp file when one file cannot be written', async () => {
    const dir = join(tmp, 'atomic1');
    mkdirSync(dir);
    writeFileSync(join(dir, 'a'), 'old a\n');
    await expect(
      writeFilesAtomic([
        { path: join(dir, 'a'), data: 'new a\n', mode: 0o644 },
        { path: join(dir, 'missing-dir', 'b'), data: 'new b\n', mode: 0o644 },
      ]),
    ).rejects.toThrow(/ENOENT/);
    expect(readFileSync(join(dir, 'a'), 'utf8')).toBe('old a\n');
    expect(readdirSync(dir).sort()).toEqual(['a']);
  });

  it('removes the remaining temp files when a rename fails', async () => {
    const dir = join(tmp, 'atomic2');
    mkdirSync(join(dir, 'b', 'occupied'), { recursive: true });
    await expect(
      writeFilesAtomic([
        { path: join(dir, 'a'), data: 'new a\n', mode: 0o600 },
        { path: join(dir, 'b'), data: 'new b\n', mode: 0o644 },
      ]),
    ).rejects.toThrow();
    expect(readFileSync(join(dir, 'a'), 'utf8')).toBe('new a\n');
    expect(statSync(join(dir, 'a')).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir).sort()).toEqual(['a', 'b']);
  });
});

describe('tokens', () => {
  it('accepts IPv4 as glibc inet_pton does', () => {
    expect(parseIPv4('192.168.1.10')).toEqual(Uint8Array.from([192, 168, 1, 10]));
    expect(parseIPv4('0.0.0.0')).toEqual(Uint8Array.from([0, 0, 0, 0]));
    for (const bad of [
      '1.2.3',
      '1.2.3.4.5',
      '01.2.3.4',
      '1.2.3.256',
      '1.2.3.4 ',
      ' 1.2.3.4',
      '1..3.4',
      'a.b.c.d',
      '',
    ]) {
      expect(parseIPv4(bad)).toBeUndefined();
    }
  });

  it('accepts IPv6 as glibc inet_pton does and expands it', () => {
    const ok: [string, string][] = [
      ['::', '0000:0000:0000:0000:0000:0000:0000:0000'],
      ['::1', '0000:0000:0000:0000:0000:0000:0000:0001'],
      ['fd00::10', 'fd00:0000:0000:0000:0000:0000:0000:0010'],
      ['FD00:0:0:0:0:0:0:10', 'fd00:0000:0000:0000:0000:0000:0000:0010'],
      ['1:2:3:4:5:6:7::', '0001:0002:0003:0004:0005:0006:0007:0000'],
      ['::ffff:1.2.3.4', '0000:0000:0000:0000:0000:ffff:0102:0304'],
      ['1:2:3:4:5:6:1.2.3.4', '0001:0002:0003:0004:0005:0006:0102:0304'],
    ];
    for (const [text, expanded] of ok) {
      const b = parseIPv6(text);
      expect(b, text).toBeDefined();
      if (b) expect(expandIPv6(b)).toBe(expanded);
    }
    for (const bad of [
      ':1::2',
      '1::2::3',
      '1:::2',
      '1:2:3:4:5:6:7:8:9',
      '1:2:3:4:5:6:7',
      '1:2:3:4:5:6:7:8::',
      '::1:2:3:4:5:6:7:8',
      '12345::1',
      'fe80::1%eth0',
      '[::1]',
      '1.2.3.4::',
      '::1.2.3',
      'g::1',
      '',
    ]) {
      expect(parseIPv6(bad), bad).toBeUndefined();
    }
  });

  it('splits lists and classifies netmask tokens', () => {
    expect(splitTokens(' a ;;\tb;')).toEqual(['a', 'b']);
    expect(parseToken('netmask', '64')).toMatchObject({ family: 6, ifcfgText: '64', prefix: 64 });
    expect(parseToken('netmask', '/0')).toMatchObject({ family: 6, ifcfgText: '/0', prefix: 0 });
    expect(parseToken('netmask', '255.255.255.128')).toMatchObject({ family: 4, prefix: 25 });
    expect(() => parseToken('address', '64')).toThrow(/not an IPv4 or IPv6 address/);
    expect(() => parseToken('netmask', '-1')).toThrow();
    // The longest valid text is 45 bytes; anything longer is refused before parsing.
    expect(parseToken('address', '0000:0000:0000:0000:0000:ffff:192.168.100.200')).toMatchObject({
      family: 6,
    });
    expect(() => parseToken('address', `0${'0000:0000:0000:0000:0000:ffff:192.168.100.200'}`)).toThrow(
      /longer than 45 bytes/,
    );
  });

  it('accepts only interface names that are safe file-name parts', () => {
    expect(isSafeIfname('eth0')).toBe(true);
    expect(isSafeIfname('enP4660s1.100')).toBe(true);
    for (const bad of ['', '.', '..', 'a/b', 'a b', 'a:1', 'x'.repeat(16)])
      expect(isSafeIfname(bad)).toBe(false);
  });
});
