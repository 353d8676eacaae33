/**
 * The helper scripts, run with /bin/sh against temp directories: PATH holds fake nmcli, networkctl,
 * resolvectl, ifquery, systemctl, ifup, ifdown (logging their argv) and links to a few real tools
 * only, so no real network manager on this machine is ever reached.
 */
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { memoryLogger } from '../../../daemons/common/log.js';
import { HV_E_FAIL, HV_S_OK } from '../../../uapi/constants.js';
import { nodeFs, runCommand, type RunFn } from '../../../daemons/kvp/effects.js';
import { ifcfgContent, keyfileContent, parseConfig, setIpInfo } from '../../../daemons/kvp/set-ip.js';
import type { KvpIpInfo } from '../../../uapi/kvp.js';

const SCRIPTS = resolve(import.meta.dirname, '../../../daemons/kvp/scripts');
const tmp = mkdtempSync(join(tmpdir(), 'hv-scripts-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Real tools the scripts may use; everything else is absent or fake. */
const TOOLS = [
  'awk',
  'basename',
  'cat',
  'chmod',
  'dirname',
  'grep',
  'head',
  'mkdir',
  'mv',
  'rm',
  'sed',
  'tr',
];
const toolsDir = join(tmp, 'tools');
mkdirSync(toolsDir);
for (const t of TOOLS) {
  const found = spawnSync('/bin/sh', ['-c', `command -v ${t}`], { encoding: 'utf8' }).stdout.trim();
  if (!found.startsWith('/')) throw new Error(`tool ${t} not found`);
  symlinkSync(found, join(toolsDir, t));
}

let count = 0;

interface Sandbox {
  dir: string;
  etc: string;
  fakes: string;
  log: string;
  env: NodeJS.ProcessEnv;
  /** A fake command: logs "name [arg] [arg]…" then runs `body` (sh). */
  fake(name: string, body: string): void;
  calls(): string[];
  run(script: string, args: string[]): { code: number | null; stdout: string; stderr: string };
}

function sandbox(): Sandbox {
  const dir = join(tmp, `s${count++}`);
  const etc = join(dir, 'etc');
  const fakes = join(dir, 'fakes');
  const log = join(dir, 'calls.log');
  mkdirSync(etc, { recursive: true });
  mkdirSync(fakes);
  writeFileSync(log, '');
  const env: NodeJS.ProcessEnv = {
    PATH: `${fakes}:${toolsDir}`,
    HV_ETC_DIR: etc,
    HV_RESOLV_CONF: join(etc, 'resolv.conf'),
    HV_RESOLVED_RESOLV_CONF: join(dir, 'run/systemd/resolve/resolv.conf'),
    HV_UUID_FILE: join(dir, 'uuid'),
    FAKE_LOG: log,
  };
  return {
    dir,
    etc,
    fakes,
    log,
    env,
    fake(name, body) {
      const p = join(fakes, name);
      writeFileSync(
        p,
        `#!/bin/sh\n{ printf '%s' ${name}; for a in "$@"; do printf ' [%s]' "$a"; done; echo; } >> "$FAKE_LOG"\n${body}\n`,
      );
      chmodSync(p, 0o755);
    },
    calls: () => readFileSync(log, 'utf8').split('\n').filter(Boolean),
    run(script, args) {
      const r = spawnSync('/bin/sh', [join(SCRIPTS, script), ...args], {
        env,
        encoding: 'utf8',
        timeout: 10_000,
      });
      return { code: r.status, stdout: r.stdout, stderr: r.stderr };
    },
  };
}

function write(path: string, text: string): void {
  mkdirSync(resolve(path, '..'), { recursive: true });
  writeFileSync(path, text);
}

// ---------------------------------------------------------------------------------------------

describe('hv_get_dns_info', () => {
  it('prints the link servers of systemd-resolved, cleaned of names, zones, ports and brackets', () => {
    const s = sandbox();
    s.fake(
      'resolvectl',
      `[ "$*" = "dns -- eth0" ] && echo 'Link 2 (eth0): 168.63.129.16 fe80::1%2#dns.example [2001:db8::53]:5353 10.0.0.53:53' && exit 0\nexit 1`,
    );
    write(join(s.etc, 'resolv.conf'), 'nameserver 127.0.0.53\n');
    const r = s.run('hv_get_dns_info', ['eth0']);
    expect(r).toMatchObject({ code: 0, stdout: '168.63.129.16\nfe80::1\n2001:db8::53\n10.0.0.53\n' });
    expect(s.calls()).toEqual(['resolvectl [dns] [--] [eth0]']);
  });

  it('falls back to the global resolved servers when the link has none', () => {
    const s = sandbox();
    s.fake(
      'resolvectl',
      `case "$*" in "dns -- eth0") echo 'Link 2 (eth0):';; dns) printf 'Global: 1.1.1.1 9.9.9.9\\nLink 2 (eth0):\\n';; *) exit 1;; esac`,
    );
    expect(s.run('hv_get_dns_info', ['eth0']).stdout).toBe('1.1.1.1\n9.9.9.9\n');
  });

  it('reads resolv.conf without the 127.0.0.53/54 stubs when resolved does not answer', () => {
    const s = sandbox();
    s.fake('resolvectl', 'echo "Failed to get global data" >&2; exit 1');
    write(
      join(s.etc, 'resolv.conf'),
      '# generated\nsearch example.com\nnameserver 127.0.0.53\nnameserver 10.0.0.2\n  nameserver   fe80::1%eth0\nnameserver 127.0.0.54\noptions edns0\n',
    );
    expect(s.run('hv_get_dns_info', ['eth0'])).toMatchObject({ code: 0, stdout: '10.0.0.2\nfe80::1\n' });
  });

  it("uses resolved's upstream list when resolv.conf holds only the stub", () => {
    const s = sandbox();
    write(join(s.etc, 'resolv.conf'), 'nameserver 127.0.0.53\n');
    write(join(s.dir, 'run/systemd/resolve/resolv.conf'), 'nameserver 168.63.129.16\n');
    expect(s.run('hv_get_dns_info', ['eth0']).stdout).toBe('168.63.129.16\n');
  });

  it('ignores resolvectl without an interface argument (Debian 6.1 daemons pass none)', () => {
    const s = sandbox();
    s.fake('resolvectl', 'echo "Link 2 (eth0): 10.9.9.9"');
    write(join(s.etc, 'resolv.conf'), 'nameserver 10.0.0.2\n');
    expect(s.run('hv_get_dns_info', []).stdout).toBe('10.0.0.2\n');
    expect(s.calls()).toEqual([]);
  });

  it('prints nothing and exits 0 when no server is known', () => {
    const s = sandbox();
    expect(s.run('hv_get_dns_info', ['eth0'])).toMatchObject({ code: 0, stdout: '' });
  });
});

describe('hv_get_dhcp_info', () => {
  it('asks NetworkManager for the active connection and its ipv4.method', () => {
    for (const [method, verdict] of [
      ['auto', 'Enabled'],
      ['manual', 'Disabled'],
    ]) {
      const s = sandbox();
      s.fake(
        'nmcli',
        `case "$*" in "-g GENERAL.CONNECTION device show eth0") echo 'Wired connection 1';; "-g ipv4.method connection show id Wired connection 1") echo ${method};; *) exit 10;; esac`,
      );
      s.fake('networkctl', 'echo should not be asked; exit 1');
      expect(s.run('hv_get_dhcp_info', ['eth0'])).toMatchObject({ code: 0, stdout: `${verdict}\n` });
      expect(s.calls()).toEqual([
        'nmcli [-g] [GENERAL.CONNECTION] [device] [show] [eth0]',
        'nmcli [-g] [ipv4.method] [connection] [show] [id] [Wired connection 1]',
      ]);
    }
  });

  it('moves on to systemd-networkd when NetworkManager does not manage the interface', () => {
    const cases: [string, string][] = [
      ['{"Name":"eth0","AdministrativeState":"configured","DHCPv4Client":{"Lease":{}}}', 'Enabled\n'],
      ['{"Name":"eth0","AdministrativeState":"configured"}', 'Disabled\n'],
    ];
    for (const [json, verdict] of cases) {
      const s = sandbox();
      s.fake('nmcli', 'echo');
      s.fake('networkctl', `[ "$*" = "status --json=short -- eth0" ] && echo '${json}'`);
      expect(s.run('hv_get_dhcp_info', ['eth0']).stdout).toBe(verdict);
    }
  });

  it('skips an unmanaged networkd link and asks ifupdown, matching the config name exactly', () => {
    const s = sandbox();
    s.fake('networkctl', `echo '{"Name":"eth0","AdministrativeState":"unmanaged","DHCPv4Client":{}}'`);
    s.fake('ifquery', '[ "$*" = "--state -- eth0" ] && echo eth0=eth0');
    write(
      join(s.etc, 'network/interfaces'),
      'source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n',
    );
    write(join(s.etc, 'network/interfaces.d/50-cloud-init'), 'auto eth0\niface eth0 inet dhcp\n');
    expect(s.run('hv_get_dhcp_info', ['eth0']).stdout).toBe('Enabled\n');

    const t = sandbox();
    t.fake('ifquery', 'echo eth0.100=eth0.100');
    write(join(t.etc, 'network/interfaces'), 'iface eth0x100 inet dhcp\niface eth0.100 inet static\n');
    expect(t.run('hv_get_dhcp_info', ['eth0.100']).stdout).toBe('Disabled\n');
  });

  it('reads network-scripts ifcfg files when no manager claims the interface', () => {
    const s = sandbox();
    s.fake('ifquery', 'exit 1');
    write(join(s.etc, 'sysconfig/network-scripts/ifcfg-eth0'), 'DEVICE=eth0\nBOOTPROTO=dhcp\n');
    expect(s.run('hv_get_dhcp_info', ['eth0']).stdout).toBe('Enabled\n');
    write(join(s.etc, 'sysconfig/network-scripts/ifcfg-eth0'), 'DEVICE=eth0\nBOOTPROTO=none\n');
    expect(s.run('hv_get_dhcp_info', ['eth0']).stdout).toBe('Disabled\n');
  });

  it('says Disabled when nothing is known, and refuses to run without an interface', () => {
    const s = sandbox();
    expect(s.run('hv_get_dhcp_info', ['eth0'])).toMatchObject({ code: 0, stdout: 'Disabled\n' });
    expect(s.run('hv_get_dhcp_info', [])).toMatchObject({ code: 1, stdout: '' });
  });
});

// ---------------------------------------------------------------------------------------------

const EXAMPLE: KvpIpInfo = {
  adapterId: '{f8615163-df3e-46c5-913f-f2d2f965ed0e}',
  addrFamily: 3,
  dhcpEnabled: 0,
  ipAddr: '192.168.1.10;fd00::10',
  subNet: '255.255.255.0;64',
  gateWay: '192.168.1.1;fd00::1',
  dnsAddr: '8.8.8.8;2001:4860:4860::8888',
};

/** The daemon's two files for `ip` on eth0, in the sandbox's /var/lib/hyperv. */
function daemonFiles(s: Sandbox, ip: KvpIpInfo = EXAMPLE): { ifcfg: string; nm: string } {
  const c = parseConfig(ip);
  const ifcfg = join(s.dir, 'var/lib/hyperv/ifcfg-eth0');
  const nm = join(s.dir, 'var/lib/hyperv/eth0.nmconnection');
  write(ifcfg, ifcfgContent('eth0', '00:15:5D:01:02:03', c));
  write(nm, keyfileContent('eth0', '00:15:5D:01:02:03', c));
  return { ifcfg, nm };
}

const NM_RUNNING = `case "$*" in "-t -f RUNNING general") echo running;; *) exit 0;; esac`;
const UUID = '0b6c3b64-5a0e-4c4b-8d5e-2f6f1c0e7a11';

describe('hv_set_ifconfig', () => {
  it('installs the completed keyfile 0600 for NetworkManager, loads it and brings it up', () => {
    const s = sandbox();
    s.fake('nmcli', NM_RUNNING);
    writeFileSync(s.env.HV_UUID_FILE ?? '', `${UUID}\n`);
    const { ifcfg, nm } = daemonFiles(s);
    const before = [readFileSync(ifcfg, 'utf8'), readFileSync(nm, 'utf8')];
    const r = s.run('hv_set_ifconfig', [ifcfg, nm]);
    expect(r).toMatchObject({ code: 0, stderr: '' });
    const dest = join(s.etc, 'NetworkManager/system-connections/eth0.nmconnection');
    expect(readFileSync(dest, 'utf8')).toBe(
      `\n[connection]\nid=eth0\nuuid=${UUID}\ntype=ethernet\nautoconnect=true\ninterface-name=eth0\n\n[ethernet]\nmac-address=00:15:5D:01:02:03\n\n[ipv4]\naddress1=192.168.1.10/24\nmethod=manual\ngateway=192.168.1.1\ndns=8.8.8.8\n\n[ipv6]\naddress1=fd00::10/64\nmethod=manual\ngateway=fd00::1\ndns=2001:4860:4860::8888\n`,
    );
    expect(statSync(dest).mode & 0o777).toBe(0o600);
    expect(readdirSync(join(s.etc, 'NetworkManager/system-connections'))).toEqual(['eth0.nmconnection']);
    expect(s.calls()).toEqual([
      'nmcli [-t] [-f] [RUNNING] [general]',
      `nmcli [connection] [load] [${dest}]`,
      `nmcli [--wait] [15] [connection] [up] [uuid] [${UUID}]`,
    ]);
    // The daemon's files are only read.
    expect([readFileSync(ifcfg, 'utf8'), readFileSync(nm, 'utf8')]).toEqual(before);
  });

  it('keeps the uuid of an earlier profile and fails when nmcli cannot bring it up', () => {
    const s = sandbox();
    s.fake(
      'nmcli',
      `case "$*" in "-t -f RUNNING general") echo running;; *" up "*) echo 'Error: activation failed' >&2; exit 4;; esac`,
    );
    write(
      join(s.etc, 'NetworkManager/system-connections/eth0.nmconnection'),
      '[connection]\nuuid=11111111-2222-3333-4444-555555555555\n',
    );
    const { ifcfg, nm } = daemonFiles(s);
    const r = s.run('hv_set_ifconfig', [ifcfg, nm]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/connection up/);
    expect(s.calls().at(-1)).toBe(
      'nmcli [--wait] [15] [connection] [up] [uuid] [11111111-2222-3333-4444-555555555555]',
    );
  });

  it('writes a systemd-networkd .network file and reloads networkd', () => {
    const s = sandbox();
    s.fake('systemctl', '[ "$*" = "is-active --quiet systemd-networkd.service" ]');
    s.fake('networkctl', 'exit 0');
    const { ifcfg, nm } = daemonFiles(s, {
      ...EXAMPLE,
      ipAddr: '192.168.1.10;fd00::10;192.168.2.10;fd00::11',
      subNet: '255.255.255.0;/64;255.255.0.0;ffff:ffff:ffff:ff00::',
      gateWay: '192.168.1.1;192.168.1.2;fd00::1',
    });
    expect(s.run('hv_set_ifconfig', [ifcfg, nm])).toMatchObject({ code: 0 });
    expect(readFileSync(join(s.etc, 'systemd/network/10-hyperv-eth0.network'), 'utf8')).toBe(
      [
        '# Written by hv_set_ifconfig for a Hyper-V host request; replaced by the next one.',
        '[Match]',
        'Name=eth0',
        '',
        '[Network]',
        'DHCP=no',
        'Address=192.168.1.10/24',
        'Address=192.168.2.10/16',
        'Address=fd00:0000:0000:0000:0000:0000:0000:0010/64',
        'Address=fd00:0000:0000:0000:0000:0000:0000:0011/56',
        'Gateway=192.168.1.1',
        'Gateway=192.168.1.2',
        'Gateway=fd00:0000:0000:0000:0000:0000:0000:0001',
        'DNS=8.8.8.8',
        'DNS=2001:4860:4860:0000:0000:0000:0000:8888',
        '',
      ].join('\n'),
    );
    expect(s.calls()).toEqual([
      'systemctl [is-active] [--quiet] [systemd-networkd.service]',
      'networkctl [reload]',
      'networkctl [reconfigure] [eth0]',
    ]);
  });

  it('writes ifupdown stanzas and restarts the interface', () => {
    const s = sandbox();
    s.fake('systemctl', 'exit 3');
    s.fake('ifup', 'exit 0');
    s.fake('ifdown', 'exit 1');
    write(join(s.etc, 'network/interfaces'), 'source /etc/network/interfaces.d/*\n');
    const { ifcfg, nm } = daemonFiles(s, {
      ...EXAMPLE,
      dhcpEnabled: 1,
      ipAddr: '192.168.1.10;fd00::10;192.168.1.11',
      subNet: '255.255.255.0;64;255.255.255.0',
    });
    expect(s.run('hv_set_ifconfig', [ifcfg, nm])).toMatchObject({ code: 0 });
    expect(readFileSync(join(s.etc, 'network/interfaces.d/hyperv-eth0'), 'utf8')).toBe(
      [
        '# Written by hv_set_ifconfig for a Hyper-V host request; replaced by the next one.',
        'auto eth0',
        'iface eth0 inet dhcp',
        '    dns-nameservers 8.8.8.8 2001:4860:4860:0000:0000:0000:0000:8888',
        'iface eth0 inet static',
        '    address 192.168.1.10/24',
        'iface eth0 inet static',
        '    address 192.168.1.11/24',
        'iface eth0 inet6 static',
        '    address fd00:0000:0000:0000:0000:0000:0000:0010/64',
        '    gateway fd00:0000:0000:0000:0000:0000:0000:0001',
        '',
      ].join('\n'),
    );
    expect(s.calls().slice(1)).toEqual(['ifdown [eth0]', 'ifup [eth0]']);
  });

  it('installs an ifcfg file for network-scripts with the upstream additions', () => {
    const s = sandbox();
    s.fake('ifup', 'exit 0');
    s.fake('ifdown', 'exit 0');
    mkdirSync(join(s.etc, 'sysconfig/network-scripts'), { recursive: true });
    const { ifcfg, nm } = daemonFiles(s);
    expect(s.run('hv_set_ifconfig', [ifcfg, nm])).toMatchObject({ code: 0 });
    expect(readFileSync(join(s.etc, 'sysconfig/network-scripts/ifcfg-eth0'), 'utf8')).toBe(
      `${readFileSync(ifcfg, 'utf8')}IPV6INIT=yes\nNM_CONTROLLED=no\nPEERDNS=yes\nONBOOT=yes\n`,
    );
    expect(s.calls()).toEqual(['ifdown [eth0]', 'ifup [eth0]']);
  });

  it('fails clearly with no network system, without arguments, or with a bad DEVICE', () => {
    const s = sandbox();
    const { ifcfg, nm } = daemonFiles(s);
    const none = s.run('hv_set_ifconfig', [ifcfg, nm]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/no supported network configuration system/);
    expect(s.run('hv_set_ifconfig', []).code).toBe(1);
    const bad = join(s.dir, 'bad-ifcfg');
    writeFileSync(bad, 'HWADDR=00:15:5D:01:02:03\nDEVICE=../../x\n');
    s.fake('nmcli', NM_RUNNING);
    const r = s.run('hv_set_ifconfig', [bad, nm]);
    expect([r.code, /bad or missing DEVICE/.test(r.stderr)]).toEqual([1, true]);
    expect(existsSync(join(s.etc, 'NetworkManager'))).toBe(false);
  });
});

describe('SET_IP_INFO end to end (daemon logic + real hv_set_ifconfig)', () => {
  it('turns a host request into an installed NetworkManager profile', async () => {
    const s = sandbox();
    s.fake('nmcli', NM_RUNNING);
    writeFileSync(s.env.HV_UUID_FILE ?? '', `${UUID}\n`);
    mkdirSync(join(s.dir, 'sys/class/net/eth0/device'), { recursive: true });
    writeFileSync(join(s.dir, 'sys/class/net/eth0/device/device_id'), `${EXAMPLE.adapterId}\n`);
    writeFileSync(join(s.dir, 'sys/class/net/eth0/address'), '00:15:5d:01:02:03\n');
    const run: RunFn = (cmd, args, opts) => runCommand('/bin/sh', [cmd, ...args], { ...opts, env: s.env });
    const deps = {
      sysRoot: s.dir,
      scriptsDir: SCRIPTS,
      configDir: join(s.dir, 'var/lib/hyperv'),
      fs: nodeFs,
      run,
      logger: memoryLogger(),
      scriptTimeoutMs: 10_000,
    };
    expect(await setIpInfo(EXAMPLE, deps)).toBe(HV_S_OK);
    expect(
      readFileSync(join(s.etc, 'NetworkManager/system-connections/eth0.nmconnection'), 'utf8'),
    ).toContain('address1=192.168.1.10/24\n');
    s.fake('nmcli', `case "$*" in "-t -f RUNNING general") echo running;; *" up "*) exit 4;; esac`);
    expect(await setIpInfo(EXAMPLE, deps)).toBe(HV_E_FAIL);
  });
});
