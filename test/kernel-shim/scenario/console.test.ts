/**
 * The host console driven through streams: results in a human format, help, parse errors with
 * their line, background steps, status, run and save, quit.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { KernelShim } from '../../../kernel-shim/shim.js';
import {
  type Recording,
  type RecordedStep,
  formatEntry,
  helpText,
  runConsole,
} from '../../../kernel-shim/scenario/index.js';
import { type ScriptedDaemon, startKvpDaemon, startVssDaemon } from '../scripted-daemons.js';

const daemons: ScriptedDaemon[] = [];
let dir = '';
afterEach(async () => {
  for (const d of daemons.splice(0)) {
    d.stop();
    await d.done;
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = '';
});

/** Feed `lines` to a console and collect everything it prints. */
async function session(
  shim: KernelShim,
  lines: string[],
  opts: { baseDir?: string; stopOnFailure?: boolean; end?: boolean } = {},
): Promise<{ out: string; recording: Recording }> {
  const input = new PassThrough();
  const output = new PassThrough();
  let out = '';
  output.on('data', (b: Buffer) => (out += b.toString('utf8')));
  const done = runConsole({ shim, input, output, ...opts });
  for (const l of lines) input.write(`${l}\n`);
  if (opts.end !== false) input.end();
  const recording = await done;
  return { out, recording };
}

describe('console', () => {
  it('runs lines as they come and prints each result as an admin reads it', async () => {
    const shim = new KernelShim({ services: ['kvp'] });
    daemons.push(startKvpDaemon(shim));
    const { out, recording } = await session(shim, [
      'wait-ready kvp 5s',
      'kvp set Greeting "héllo wörld"',
      '# a comment, then an empty line',
      '',
      'kvp set Count 42 --pool guest --type u32 ; kvp get Greeting   expect HV_S_OK value="héllo wörld"',
      'kvp list external',
      'kvp get Greeting   expect value=bonjour',
      'kvp get-ip 00:15:5D:01:02:03',
    ]);
    expect(out).toBe(
      [
        '> wait-ready kvp 5s',
        'driver READY',
        '> kvp set Greeting "héllo wörld"',
        'HV_S_OK (0x00000000)',
        '> kvp set Count 42 --pool guest --type u32 ; kvp get Greeting   expect HV_S_OK value="héllo wörld"',
        'HV_S_OK (0x00000000)',
        'HV_S_OK (0x00000000)  key=Greeting  value="héllo wörld"',
        '  ok: HV_S_OK value="héllo wörld"',
        '> kvp list external',
        'HV_S_CONT (0x80070103) after 1 item',
        '  Greeting = "héllo wörld"',
        '> kvp get Greeting   expect value=bonjour',
        'HV_S_OK (0x00000000)  key=Greeting  value="héllo wörld"',
        '  FAILED: value=bonjour: got "héllo wörld"',
        '> kvp get-ip 00:15:5D:01:02:03',
        'HV_E_FAIL (0x80004005)',
        '  adapterId   00:15:5D:01:02:03',
        '  addrFamily  0',
        '  dhcpEnabled 0',
        '  ipAddr      ""',
        '  subNet      ""',
        '  gateWay     ""',
        '  dnsAddr     ""',
        '7 steps: 6 passed, 1 failed, 0 skipped',
        '',
      ].join('\n'),
    );
    expect(recording.steps.map((s) => s.line)).toEqual([1, 2, 5, 5, 6, 7, 8]);
  });

  it('reports parse errors with their input line and goes on', async () => {
    const shim = new KernelShim({ services: ['kvp'] });
    daemons.push(startKvpDaemon(shim));
    const { out, recording } = await session(shim, [
      'wait-ready kvp',
      'kvp set Greeting',
      'kvp get "open',
      'kvp list 9',
      'frobnicate',
      'kvp get Greeting ; kvp sett x y',
      'kvp set a b',
    ]);
    expect(out).toContain(
      'error: line 2, column 1: kvp set: missing VALUE (usage: kvp set KEY VALUE [--pool POOL] [--type sz|u32|u64])',
    );
    expect(out).toContain('error: line 3, column 9: unterminated double quote');
    expect(out).toContain('error: line 4, column 10: pool: expected 0..4 or external, guest, auto');
    expect(out).toContain("error: line 5, column 1: unknown command 'frobnicate'");
    expect(out).toContain("error: line 6, column 24: unknown kvp command 'sett'");
    expect(out).toContain('(nothing of it was run)');
    expect(recording.steps.map((s) => [s.line, s.op])).toEqual([
      [1, 'wait-ready'],
      [7, 'kvp set'],
    ]);
  });

  it('help lists every command, and narrows to a topic', async () => {
    const shim = new KernelShim({ services: ['kvp'] });
    const { out } = await session(shim, ['help', 'help vss', 'help expect', 'help nothing']);
    expect(out).toContain(helpText());
    for (const usage of [
      'wait-ready kvp|vss|fcopy [TIMEOUT]',
      'kvp set KEY VALUE [--pool POOL] [--type sz|u32|u64]',
      'kvp set-ip ADAPTER',
      'vss freeze',
      'fcopy copy SOURCE PATH NAME [--overwrite] [--create-path] [--size N]',
      'fault rescind kvp|vss|fcopy',
      'sleep DURATION',
      'wait',
      'error=KIND',
      'quit',
    ])
      expect(helpText()).toContain(usage);
    expect(helpText('vss')).toContain('vss hot-backup [--flags N]');
    expect(helpText('vss')).not.toContain('kvp set');
    expect(helpText('kvp get')).toBe("  kvp get KEY [--pool POOL]\n      read one item's value (KVP GET)");
    expect(out).toContain(helpText('expect'));
    expect(out).toContain("no help on 'nothing'");
  });

  it('quit ends the session; what follows is not run', async () => {
    const shim = new KernelShim({ services: ['kvp'] });
    const pools = new Map<number, [string, string][]>();
    daemons.push(startKvpDaemon(shim, pools));
    const { out, recording } = await session(
      shim,
      ['wait-ready kvp', 'kvp set a 1', 'quit', 'kvp set b 2'],
      { end: false }, // the input stays open: quit alone ends it
    );
    expect(recording.steps).toHaveLength(2);
    expect(pools.get(0)).toEqual([['a', '1']]);
    expect(out.trimEnd().split('\n').at(-1)).toBe('2 steps: 2 passed, 0 failed, 0 skipped');
  });

  it('background steps report when they finish; status shows the devices', async () => {
    const shim = new KernelShim({ services: ['kvp', 'vss'] });
    daemons.push(startKvpDaemon(shim), startVssDaemon(shim));
    const { out, recording } = await session(shim, [
      'wait-ready vss; wait-ready kvp',
      'vss freeze expect HV_S_OK &',
      'wait',
      'status',
      'fault rescind vss --timeout 50ms',
    ]);
    expect(out).toContain('started in the background: vss freeze expect HV_S_OK');
    expect(out).toContain(
      '[done, line 2] vss freeze expect HV_S_OK\nHV_S_OK (0x00000000)  flags=0x0\n  ok: HV_S_OK',
    );
    expect(out).toContain(
      'kvp   /dev/vmbus/hv_kvp: driver READY; host not negotiated yet\nvss   /dev/vmbus/hv_vss: driver READY; host negotiated framework 3.0, service',
    );
    expect(out).toContain("error=timeout: fault rescind: no result within 50 ms (the step's time limit)");
    expect(recording.summary).toMatchObject({ total: 5, passed: 4, failed: 1 });
  });

  it('run FILE runs a scenario, save FILE writes the recording', async () => {
    dir = mkdtempSync(join(tmpdir(), 'console-'));
    writeFileSync(
      join(dir, 'setup.scenario'),
      '# from a file\nwait-ready kvp\nkvp set "Host Name" guest-01   expect HV_S_OK\n',
    );
    writeFileSync(join(dir, 'broken.scenario'), 'kvp get a\nkvp get\n');
    const shim = new KernelShim({ services: ['kvp'] });
    daemons.push(startKvpDaemon(shim));
    const { out, recording } = await session(
      shim,
      [
        'run setup.scenario',
        'run broken.scenario',
        'run missing.scenario',
        'kvp get "Host Name"',
        'save out.json',
      ],
      { baseDir: dir },
    );
    expect(out).toContain('error: line 2, column 1: kvp get: missing KEY');
    expect(out).toMatch(/error: ENOENT: no such file or directory.*missing\.scenario/);
    expect(out).toContain('HV_S_OK (0x00000000)  key="Host Name"  value=guest-01');
    expect(out).toContain('saved 3 steps to out.json');
    const saved = JSON.parse(readFileSync(join(dir, 'out.json'), 'utf8')) as Recording;
    expect(saved.steps.map((s) => [s.line, s.op])).toEqual([
      [2, 'wait-ready'],
      [3, 'kvp set'],
      [4, 'kvp get'],
    ]);
    expect(saved).toEqual(recording);
  });

  it('a backslash at the end of an input line continues the step', async () => {
    const shim = new KernelShim({ services: ['kvp'] });
    daemons.push(startKvpDaemon(shim));
    const { recording } = await session(shim, [
      'wait-ready kvp',
      'kvp set long \\',
      '  value   expect HV_S_OK',
    ]);
    expect(recording.steps[1]).toMatchObject({ line: 2, args: { key: 'long', value: 'value' }, ok: true });
  });

  it('stopOnFailure: the rest of the session is skipped', async () => {
    const shim = new KernelShim({ services: ['kvp'] });
    daemons.push(startKvpDaemon(shim));
    const { out, recording } = await session(
      shim,
      ['wait-ready kvp', 'kvp get nope expect HV_S_OK', 'kvp set a b'],
      { stopOnFailure: true },
    );
    expect(out).toContain(
      '(stopped: a step failed and stopOnFailure is set; the steps that follow are skipped)\n> kvp set a b\nskipped (an earlier step failed)\n',
    );
    expect(recording.summary).toMatchObject({ passed: 1, failed: 1, skipped: 1 });
  });

  it('a TTY session shows a prompt and a greeting', async () => {
    const shim = new KernelShim({ services: ['kvp'] });
    const input = new PassThrough();
    const output = new PassThrough();
    let out = '';
    output.on('data', (b: Buffer) => (out += b.toString('utf8')));
    const done = runConsole({ shim, input, output, terminal: true, prompt: 'host> ' });
    input.write('help kvp get\r');
    input.write('quit\r');
    await done;
    expect(out).toContain("Hyper-V host console: type 'help'");
    expect(out).toContain('host> ');
    expect(out).toContain('kvp get KEY [--pool POOL]');
    expect(out).not.toContain('> help kvp get\n'); // no echo on a terminal
  });
});

describe('formatEntry', () => {
  const base: RecordedStep = {
    index: 0,
    line: 1,
    text: 'x',
    op: 'vss freeze',
    args: {},
    background: false,
    expect: [],
    ok: true,
    failures: [],
    skipped: false,
  };

  it.each<[Partial<RecordedStep>, string[]]>([
    [
      {
        host: { error: 'channel-gone', message: 'VSS FREEZE: gone' },
        ok: false,
        failures: ['the host saw error=channel-gone: VSS FREEZE: gone'],
      },
      ['error=channel-gone: VSS FREEZE: gone', '  FAILED: the host saw error=channel-gone: VSS FREEZE: gone'],
    ],
    [
      { host: { status: 0, statusName: 'HV_S_OK (0x00000000)', step: 'complete', bytesSent: 3 } },
      ['HV_S_OK (0x00000000)  step=complete  bytesSent=3'],
    ],
    [
      { host: { status: 0x80070103, statusName: 'HV_S_CONT (0x80070103)', key: '', value: '' } },
      ['HV_S_CONT (0x80070103)'],
    ],
    [{ op: 'fault suspend', host: {} }, ['done']],
    [
      { op: 'wait-ready', host: { state: 'READY' }, expect: ['state=READY'] },
      ['driver READY', '  ok: state=READY'],
    ],
    [{ skipped: true, ok: false }, ['skipped (an earlier step failed)']],
  ])('%j', (entry, lines) => {
    expect(formatEntry({ ...base, ...entry })).toEqual(lines);
  });
});
