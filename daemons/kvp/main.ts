/**
 * hv-kvp-ts: the KVP daemon program. A drop-in for hv_kvp_daemon: same flags (-n, -d, -h), same
 * device, pools, helper-script directory, and process name; see daemons/kvp/README.md.
 */
import { Option } from 'commander';
import { EX_CANTCREAT, daemonCommand, type CommonOptions } from '../common/cli.js';
import { main, runDaemon } from '../common/run-daemon.js';
import { autoPoolEntry } from './auto-pool.js';
import { defaultDeps } from './effects.js';
import { getIpInfo } from './ip-info.js';
import { KvpPools } from './pool.js';
import { SYNC_MODES, type SyncMode } from './pool-sync.js';
import { KVP_DEVICE, KvpService } from './service.js';
import { setIpInfo } from './set-ip.js';
import { VERSION } from '../common/version.js';

export const POOL_DIR = '/var/lib/hyperv';
export const SCRIPTS_DIR = '/usr/libexec/hypervkvpd';

interface KvpOptions extends CommonOptions {
  debugEnabled?: boolean;
  debug?: boolean;
  poolDir: string;
  scriptsDir: string;
  sync: SyncMode | false;
  sysRoot: string;
}

export function kvpProgram() {
  return daemonCommand({
    name: 'hv-kvp-ts',
    description:
      'Hyper-V key-value pair (KVP) daemon: answers the host through /dev/vmbus/hv_kvp with the pools in the ' +
      "pool directory and the guest's name, OS and IP addresses, and applies the IP settings the host pushes.",
    version: VERSION,
    device: KVP_DEVICE,
  })
    .option('-d, --debug-enabled', 'log every request at debug level (as hv_kvp_daemon -d)')
    .addOption(new Option('--debug').hideHelp())
    .option('--pool-dir <dir>', 'where the .kvp_pool_0 … .kvp_pool_4 files live', POOL_DIR)
    .option(
      '--scripts-dir <dir>',
      'where hv_get_dns_info, hv_get_dhcp_info and hv_set_ifconfig live',
      SCRIPTS_DIR,
    )
    .addOption(
      new Option(
        '--sync <mode>',
        'when pool writes reach the disk: always (fdatasync before answering), deferred (within 1 s), ' +
          'never (upstream); a crash of the daemon loses nothing in any mode',
      )
        .choices(SYNC_MODES)
        .default('deferred'),
    )
    .option('--no-sync', 'the same as --sync never')
    .addOption(
      new Option('--sys-root <dir>', 'read /sys and /etc below this directory (tests)')
        .default('/')
        .hideHelp(),
    );
}

export function runKvp(
  argv: readonly string[],
  binding?: Parameters<typeof runDaemon>[0]['binding'],
): Promise<number> {
  return runDaemon<KvpOptions>(
    {
      program: kvpProgram(),
      processName: 'hv_kvp_daemon',
      logName: 'hv-kvp-ts',
      ...(binding ? { binding } : {}),
      logLevel: (o) => (o.debugEnabled || o.debug ? 'debug' : o.logLevel),
      async setup(o, logger) {
        let pools: KvpPools;
        try {
          pools = await KvpPools.open({
            dir: o.poolDir,
            logger: logger.child({ part: 'pool' }),
            sync: o.sync === false ? 'never' : o.sync,
          });
        } catch (e) {
          throw Object.assign(
            new Error(`cannot open the pools in ${o.poolDir}: ${e instanceof Error ? e.message : e}`),
            {
              exitCode: EX_CANTCREAT,
            },
          );
        }
        const host = defaultDeps({
          scriptsDir: o.scriptsDir,
          configDir: o.poolDir,
          sysRoot: o.sysRoot,
          logger,
        });
        const protocol = new KvpService(
          {
            pools,
            autoPool: (index, version) => autoPoolEntry(index, host, version),
            getIpInfo: (adapterId) => getIpInfo(adapterId, host),
            setIpInfo: (ip) => setIpInfo(ip, host),
            logger,
            reuseBuffers: true,
          },
          o.device,
        );
        return { protocol, cleanup: () => pools.close() };
      },
    },
    argv,
  );
}

if (process.argv[1] && /kvp[/\\]main\.[cm]?[jt]s$|hv-kvp-ts(\.m?js)?$/.test(process.argv[1])) main(runKvp);
