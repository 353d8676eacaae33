/**
 * The packaged hv-fcopy-ts entry point: daemons/fcopy/main.ts starts itself only when run from its
 * source path, so the bundle calls it explicitly.
 */
import { main } from '../../daemons/common/run-daemon.js';
import { run } from '../../daemons/fcopy/main.js';

main((argv) => run(argv));
