/**
 * The scenario language: quoting, options, every command's arguments, expectations, and the
 * errors (each with its line and column).
 */
import { describe, expect, it } from 'vitest';
import {
  HV_E_FAIL,
  HV_S_CONT,
  HV_S_OK,
  KVP_POOL_AUTO,
  KVP_POOL_AUTO_EXTERNAL,
  KVP_POOL_AUTO_INTERNAL,
  KVP_POOL_GUEST,
  REG_SZ,
  REG_U32,
  REG_U64,
  VSS_OP_BU_COMPLETE,
} from '../../../uapi/constants.js';
import {
  COMMANDS,
  ScenarioSyntaxError,
  type Step,
  dataBytes,
  parseScenario,
  quoteWord,
  tryParseScenario,
} from '../../../kernel-shim/scenario/index.js';

function one(text: string): Step {
  const steps = parseScenario(text);
  expect(steps).toHaveLength(1);
  return steps[0] as Step;
}

/** The first issue of a text that must not parse. */
function issue(text: string): { line: number; column: number; message: string } {
  const r = tryParseScenario(text);
  expect(r.issues.length).toBeGreaterThan(0);
  return r.issues[0] as { line: number; column: number; message: string };
}

describe('quoting', () => {
  it.each([
    ['kvp set Greeting hello', 'Greeting', 'hello'],
    ['kvp set "Greeting" "héllo wörld"', 'Greeting', 'héllo wörld'],
    ["kvp set 'Host Name' 'it''s'", 'Host Name', 'its'],
    ["kvp set key 'a \\n b'", 'key', 'a \\n b'],
    ['kvp set key "a\\tb\\nc"', 'key', 'a\tb\nc'],
    ['kvp set key "say \\"hi\\" \\\\ bye"', 'key', 'say "hi" \\ bye'],
    ['kvp set key "\\x41\\u00e9\\u{1F600}"', 'key', 'Aé😀'],
    ['kvp set a\\ b c\\;d', 'a b', 'c;d'],
    ['kvp set pre"fix mid"post x', 'prefix midpost', 'x'],
    ['kvp set 日本語 "ключ значение"', '日本語', 'ключ значение'],
    ['kvp set k ""', 'k', ''],
    ['kvp set k "#not a comment"', 'k', '#not a comment'],
    ['kvp set k a#b', 'k', 'a#b'],
    ['kvp set k v # a comment', 'k', 'v'],
    ['kvp set "expect" "--pool"', 'expect', '--pool'],
  ])('%s', (text, key, value) => {
    const s = one(text);
    expect(s).toMatchObject({ op: 'kvp set', args: { key, value } });
  });

  it('keeps CRLF files, comments and blank lines out of the steps', () => {
    const steps = parseScenario('# header\r\n\r\nkvp get a\r\n   # indented comment\r\nkvp get b\r\n');
    expect(steps.map((s) => [s.line, s.args])).toEqual([
      [3, { key: 'a', pool: 0 }],
      [5, { key: 'b', pool: 0 }],
    ]);
  });

  it('; separates steps on a line, & runs one in the background', () => {
    const steps = parseScenario(
      'fcopy start /tmp/dest f --size 100 ; fcopy write 0 "abc" ; fcopy cancel\nvss freeze & fault suspend; wait',
    );
    expect(steps.map((s) => [s.op, s.line, s.background, s.text])).toEqual([
      ['fcopy start', 1, false, 'fcopy start /tmp/dest f --size 100'],
      ['fcopy write', 1, false, 'fcopy write 0 "abc"'],
      ['fcopy cancel', 1, false, 'fcopy cancel'],
      ['vss freeze', 2, true, 'vss freeze'],
      ['fault suspend', 2, false, 'fault suspend'],
      ['wait', 2, false, 'wait'],
    ]);
  });

  it('a backslash at the end of a line continues the step', () => {
    const steps = parseScenario(
      'kvp set-ip "{guid}" \\\n    --ip 10.0.0.5 --ip 10.0.0.6 \\\n    --dhcp on   expect HV_S_OK\nkvp get x',
    );
    expect(steps[0]).toMatchObject({
      op: 'kvp set-ip',
      line: 1,
      text: 'kvp set-ip "{guid}" --ip 10.0.0.5 --ip 10.0.0.6 --dhcp on   expect HV_S_OK',
      args: { adapterId: '{guid}', ipAddr: '10.0.0.5;10.0.0.6', dhcpEnabled: 1 },
    });
    expect(steps[1]?.line).toBe(4);
  });

  it('quoteWord writes back what the lexer reads', () => {
    for (const s of [
      'plain',
      'héllo wörld',
      '',
      'a"b\\c',
      'tab\there',
      'line\nbreak',
      '#x',
      'a;b&c',
      '\x01',
    ]) {
      const q = quoteWord(s);
      expect(one(`kvp set k ${q}`).args).toMatchObject({ value: s });
    }
    expect(quoteWord('Greeting')).toBe('Greeting');
    expect(quoteWord('héllo wörld')).toBe('"héllo wörld"');
  });
});

describe('commands and options', () => {
  it.each<[string, Partial<Step>]>([
    ['wait-ready kvp 10s', { op: 'wait-ready', args: { service: 'kvp', timeoutMs: 10_000 } }],
    ['wait-ready fcopy', { op: 'wait-ready', args: { service: 'fcopy', timeoutMs: 10_000 } }],
    ['wait-ready vss 1.5s', { op: 'wait-ready', args: { service: 'vss', timeoutMs: 1500 } }],
    ['sleep 200ms', { op: 'sleep', args: { ms: 200 } }],
    ['sleep 2m', { op: 'sleep', args: { ms: 120_000 } }],
    ['wait', { op: 'wait', args: {} }],
    [
      'kvp set Count 42 --pool 1 --type u32',
      { args: { key: 'Count', value: '42', pool: 1, valueType: REG_U32 } },
    ],
    [
      'kvp set Big 18446744073709551615 --type=u64 --pool=guest',
      { args: { key: 'Big', value: '18446744073709551615', pool: 1, valueType: REG_U64 } },
    ],
    ['kvp set K V --type sz', { args: { key: 'K', value: 'V', pool: 0, valueType: REG_SZ } }],
    [
      'kvp modify K V --pool external',
      { op: 'kvp modify', args: { key: 'K', value: 'V', pool: 0, valueType: REG_SZ } },
    ],
    ['kvp get Greeting --pool auto', { op: 'kvp get', args: { key: 'Greeting', pool: KVP_POOL_AUTO } }],
    [
      'kvp delete Greeting --pool guest',
      { op: 'kvp delete', args: { key: 'Greeting', pool: KVP_POOL_GUEST } },
    ],
    [
      'kvp enumerate auto-external 0x10',
      { op: 'kvp enumerate', args: { pool: KVP_POOL_AUTO_EXTERNAL, index: 16 } },
    ],
    ['kvp list auto-internal', { op: 'kvp list', args: { pool: KVP_POOL_AUTO_INTERNAL, max: 100_000 } }],
    ['kvp list 0 --max 3', { op: 'kvp list', args: { pool: 0, max: 3 } }],
    [
      'kvp get-ip 00:15:5D:01:02:03',
      { op: 'kvp get-ip', args: { adapterId: '00:15:5D:01:02:03', addrFamily: 0 } },
    ],
    [
      'kvp get-ip 00:15:5D:01:02:03 --family ipv6',
      { args: { adapterId: '00:15:5D:01:02:03', addrFamily: 2 } },
    ],
    [
      'kvp set-ip "{guid}" --ip 10.0.0.5 --subnet 255.255.255.0 --gateway 10.0.0.1 --dns 8.8.8.8 --dns 8.8.4.4 --dhcp off --family ipv4',
      {
        op: 'kvp set-ip',
        args: {
          adapterId: '{guid}',
          addrFamily: 1,
          dhcpEnabled: 0,
          ipAddr: '10.0.0.5',
          subNet: '255.255.255.0',
          gateWay: '10.0.0.1',
          dnsAddr: '8.8.8.8;8.8.4.4',
        },
      },
    ],
    ['vss hot-backup', { op: 'vss hot-backup', args: { flags: 0 } }],
    ['vss hot-backup --flags 0x5', { op: 'vss hot-backup', args: { flags: 5 } }],
    ['vss freeze', { op: 'vss freeze', args: {} }],
    ['vss thaw', { op: 'vss thaw', args: {} }],
    ['vss dm-info', { op: 'vss dm-info', args: {} }],
    ['vss request bu-complete', { op: 'vss request', args: { operation: VSS_OP_BU_COMPLETE, flags: 0 } }],
    ['vss request 42 --flags 1', { op: 'vss request', args: { operation: 42, flags: 1 } }],
    [
      'fcopy copy ./fixtures/file.bin /tmp/dest file.bin --overwrite --create-path',
      {
        op: 'fcopy copy',
        args: {
          source: './fixtures/file.bin',
          path: '/tmp/dest',
          name: 'file.bin',
          overwrite: true,
          createPath: true,
        },
      },
    ],
    [
      'fcopy copy a /d n --size 7',
      { args: { source: 'a', path: '/d', name: 'n', overwrite: false, createPath: false, size: 7 } },
    ],
    [
      'fcopy put /tmp "with space.txt" "héllo" --repeat 3',
      {
        op: 'fcopy put',
        args: {
          path: '/tmp',
          name: 'with space.txt',
          data: { text: 'héllo', encoding: 'utf8', repeat: 3 },
          overwrite: false,
          createPath: false,
        },
      },
    ],
    [
      'fcopy start /tmp/dest f --size 100',
      {
        op: 'fcopy start',
        args: { path: '/tmp/dest', name: 'f', size: 100, overwrite: false, createPath: false },
      },
    ],
    [
      'fcopy start /tmp/dest f',
      { args: { path: '/tmp/dest', name: 'f', size: 0, overwrite: false, createPath: false } },
    ],
    [
      'fcopy write 0 "abc"',
      { op: 'fcopy write', args: { offset: 0, data: { text: 'abc', encoding: 'utf8', repeat: 1 } } },
    ],
    [
      'fcopy write 6144 00ff --hex',
      { args: { offset: 6144, data: { text: '00ff', encoding: 'hex', repeat: 1 } } },
    ],
    ['fcopy complete', { op: 'fcopy complete' }],
    ['fcopy cancel', { op: 'fcopy cancel' }],
    ['fault suspend', { op: 'fault suspend' }],
    ['fault resume', { op: 'fault resume' }],
    ['fault rescind kvp', { op: 'fault rescind', args: { service: 'kvp' } }],
    ['fault reoffer vss', { op: 'fault reoffer', args: { service: 'vss' } }],
    ['vss freeze --timeout 5s', { op: 'vss freeze', timeoutMs: 5000 }],
    ['fault rescind kvp --timeout=100ms', { op: 'fault rescind', timeoutMs: 100 }],
    ['kvp set -- --key --value', { args: { key: '--key', value: '--value', pool: 0, valueType: REG_SZ } }],
    ['kvp set "--key" \'--value\'', { args: { key: '--key', value: '--value', pool: 0, valueType: REG_SZ } }],
  ])('%s', (text, want) => {
    expect(one(text)).toMatchObject(want);
  });

  it('every command in the table parses from its usage line', () => {
    const sample: Record<string, string> = {
      KEY: 'k',
      VALUE: 'v',
      POOL: '0',
      INDEX: '0',
      MAC: 'm',
      ADAPTER: 'a',
      OPERATION: 'thaw',
      SOURCE: 's',
      PATH: '/p',
      NAME: 'n',
      DATA: 'd',
      OFFSET: '0',
      SERVICE: 'kvp',
      'TIMEOUT?': '1s',
      DURATION: '1s',
    };
    for (const c of COMMANDS) {
      const text = [c.name, ...c.args.map((a) => sample[a] ?? 'x')].join(' ');
      expect(one(text).op, text).toBe(c.name);
    }
  });

  it('data arguments become bytes', () => {
    expect(dataBytes({ text: 'héllo', encoding: 'utf8', repeat: 2 }).toString()).toBe('héllohéllo');
    expect([...dataBytes({ text: '00ff', encoding: 'hex', repeat: 1 })]).toEqual([0, 255]);
    expect(dataBytes({ text: 'x', encoding: 'utf8', repeat: 0 }).length).toBe(0);
  });
});

describe('expectations', () => {
  it.each<[string, unknown[]]>([
    ['kvp set a b expect HV_S_OK', [{ kind: 'status', negate: false, status: HV_S_OK, text: 'HV_S_OK' }]],
    ['kvp get a expect 0x80004005', [{ kind: 'status', status: HV_E_FAIL, text: 'HV_E_FAIL' }]],
    ['kvp get a expect 0x12345678', [{ kind: 'status', status: 0x12345678, text: '0x12345678' }]],
    [
      'kvp get a expect status!=HV_S_CONT',
      [{ kind: 'status', negate: true, status: HV_S_CONT, text: 'status!=HV_S_CONT' }],
    ],
    [
      'kvp get Greeting expect HV_S_OK value="héllo wörld"',
      [
        { kind: 'status', status: HV_S_OK },
        { kind: 'field', field: 'value', op: '=', value: 'héllo wörld', text: 'value="héllo wörld"' },
      ],
    ],
    ['kvp get a expect value=x=y', [{ kind: 'field', field: 'value', op: '=', value: 'x=y' }]],
    ['kvp get a expect value="a!=b"', [{ kind: 'field', field: 'value', op: '=', value: 'a!=b' }]],
    [
      'kvp get a expect value!=""',
      [{ kind: 'field', field: 'value', op: '!=', value: '', text: 'value!=""' }],
    ],
    ['kvp get a expect value~=^Ubu', [{ kind: 'field', op: '~=', value: '^Ubu' }]],
    [
      'kvp enumerate 0 0 expect HV_S_OK key=Greeting',
      [{ kind: 'status' }, { kind: 'field', field: 'key', value: 'Greeting' }],
    ],
    ['kvp list 0 expect count=1', [{ kind: 'field', field: 'count', op: '=', value: '1' }]],
    [
      'kvp list auto expect count>=5 has=FullyQualifiedDomainName',
      [{ op: '>=' }, { field: 'has', value: 'FullyQualifiedDomainName' }],
    ],
    [
      'kvp list auto expect item.OSName~=Linux item."Host Name"=x "item.a=b"=c',
      [
        { field: 'item.OSName', op: '~=' },
        { field: 'item.Host Name', value: 'x' },
        { field: 'item.a=b', value: 'c' },
      ],
    ],
    [
      'kvp get-ip m expect ip.ipAddr=10.0.0.5 ip.dhcpEnabled=1',
      [{ field: 'ip.ipAddr' }, { field: 'ip.dhcpEnabled', value: '1' }],
    ],
    ['vss hot-backup expect flags=0x2', [{ field: 'flags', value: '0x2' }]],
    ['fcopy put /p n d expect step=complete bytesSent=1', [{ field: 'step' }, { field: 'bytesSent' }]],
    ['kvp get a expect error=timeout', [{ kind: 'error', negate: false, error: 'timeout' }]],
    ['vss freeze expect error=channel-gone', [{ kind: 'error', error: 'channel-gone' }]],
    ['fault reoffer kvp expect error=failed', [{ kind: 'error', error: 'failed' }]],
    ['kvp get a expect error!=timeout', [{ kind: 'error', negate: true, error: 'timeout' }]],
    ['wait-ready kvp 1s expect state=READY', [{ field: 'state', value: 'READY' }]],
    ['kvp get a expect HV_S_OK expect value=b', [{ kind: 'status' }, { kind: 'field' }]],
  ])('%s', (text, want) => {
    expect(one(text).expect).toMatchObject(want);
  });
});

describe('errors carry the line, the column and what was expected', () => {
  it.each<[string, number, number, RegExp]>([
    ['kvp set Greeting', 1, 1, /kvp set: missing VALUE \(usage: kvp set KEY VALUE/],
    ['\n\nkvp get a b', 3, 11, /kvp get: unexpected argument 'b'.*quote a value with spaces/],
    ['kvp frob x', 1, 5, /unknown kvp command 'frob' \(known: set, modify, get, delete, enumerate, list/],
    ['kvp', 1, 1, /kvp: which command\?/],
    [
      'hello world',
      1,
      1,
      /unknown command 'hello' \(commands: kvp, vss, fcopy, fault, wait-ready, sleep, wait/,
    ],
    ['"kvp" get a', 1, 1, /a command is not quoted/],
    [
      'kvp list 7',
      1,
      10,
      /pool: expected 0..4 or external, guest, auto, auto-external, auto-internal; got '7'/,
    ],
    ['kvp set k v --pool', 1, 13, /--pool needs a value/],
    ['kvp set k v --pool expect HV_S_OK', 1, 13, /--pool needs a value/],
    ['kvp set k v --colour red', 1, 13, /unknown option --colour \(options: --pool, --type, --timeout/],
    ['kvp set k v --pool 1 --pool 2', 1, 22, /--pool given twice/],
    ['fcopy copy a b c --overwrite=yes', 1, 18, /--overwrite is a flag and takes no value/],
    ['kvp set k v --type float', 1, 20, /--type: expected sz, u32, u64/],
    ['kvp set k -1 --type u32', 1, 11, /a u32 VALUE must be a decimal integer ≤ 4294967295, got '-1'/],
    ['kvp set k 4294967296 --type u32', 1, 11, /u32 VALUE must be a decimal integer/],
    ['kvp set k 18446744073709551616 --type u64', 1, 11, /u64 VALUE must be a decimal integer/],
    ['kvp enumerate 0 -1', 1, 17, /INDEX: expected an integer 0..4294967295/],
    ['kvp set-ip a --dhcp maybe', 1, 21, /--dhcp: expected on or off/],
    ['kvp get-ip a --family ipx', 1, 23, /--family: expected none, ipv4, ipv6, both/],
    ['vss request explode', 1, 13, /unknown operation 'explode'/],
    ['fcopy write 0 zz --hex', 1, 15, /--hex: DATA must be pairs of hex digits/],
    [
      'fcopy write 0 x --repeat 6145',
      1,
      15,
      /DATA is 6145 bytes; one fragment holds at most 6144 \(use fcopy put/,
    ],
    ['wait-ready kvp soon', 1, 16, /TIMEOUT: expected a duration like 200ms, 10s or 2m/],
    ['wait-ready disk', 1, 12, /expected a service \(kvp, vss, fcopy\)/],
    ['sleep 10', 1, 7, /expected a duration/],
    ['sleep 1s --timeout 2s', 1, 10, /unknown option --timeout \(it takes no options/],
    ['kvp get a expect HV_S_KO', 1, 18, /'HV_S_KO' is not a status \(HV_S_OK, .*\) nor FIELD=VALUE/],
    ['kvp get a expect "HV_S_OK"', 1, 18, /is not a status/],
    ['kvp get a expect "value=x"', 1, 18, /is not a status .* nor FIELD=VALUE/],
    ['kvp get a expect count=1', 1, 18, /kvp get has no field 'count' \(it has: status, key, value, error\)/],
    [
      'kvp get-ip m expect ip.address=1',
      1,
      21,
      /no field 'ip.address' \(it has: status, ip.adapterId, ip.addrFamily/,
    ],
    ['kvp get a expect value>3', 1, 18, /value is text; > compares numbers/],
    ['kvp list 0 expect count>many', 1, 19, /count> needs a number/],
    ['kvp list 0 expect count=two', 1, 19, /count= needs a number \(decimal or 0x…\), got 'two'/],
    ['kvp get a expect value~=(', 1, 18, /value~= needs a regular expression/],
    ['kvp get a expect error=lost', 1, 18, /error= takes timeout, channel-gone, failed or none/],
    ['kvp get a expect error>=timeout', 1, 18, /error takes = or !=/],
    ['kvp list 0 expect has>=x', 1, 19, /has takes = or !=/],
    ['kvp get a expect =x', 1, 18, /write FIELD=VALUE/],
    ['fault suspend expect HV_S_OK', 1, 22, /fault suspend has no status to expect/],
    ['wait-ready kvp expect status=HV_S_OK', 1, 23, /wait-ready has no status/],
    ['kvp get "unterminated', 1, 9, /unterminated double quote/],
    ["kvp get 'unterminated\nkvp get b", 1, 9, /unterminated single quote/],
    ['kvp get "bad \\q escape"', 1, 14, /unknown escape \\q in double quotes/],
    ['kvp get "\\xZZ"', 1, 10, /bad escape \\x/],
    ['kvp get "\\u{110000}"', 1, 10, /bad escape \\u/],
    ['& kvp get a', 1, 1, /& with no step before it/],
    ['wait &', 1, 1, /wait cannot run in the background/],
  ])('%s', (text, line, column, message) => {
    const i = issue(text);
    expect(i.message).toMatch(message);
    expect([i.line, i.column]).toEqual([line, column]);
  });

  it('collects every issue of a scenario, in line order, and keeps the good steps', () => {
    const text = ['kvp get ok1', 'kvp get', 'kvp get ok2', 'vss melt', 'kvp get "open', 'kvp get ok3'].join(
      '\n',
    );
    const r = tryParseScenario(text);
    expect(r.steps.map((s) => s.args)).toEqual([
      { key: 'ok1', pool: 0 },
      { key: 'ok2', pool: 0 },
      { key: 'ok3', pool: 0 },
    ]);
    expect(r.issues.map((i) => i.line)).toEqual([2, 4, 5]);
    expect(() => parseScenario(text)).toThrow(ScenarioSyntaxError);
    try {
      parseScenario(text);
    } catch (e) {
      const err = e as ScenarioSyntaxError;
      expect(err.line).toBe(2);
      expect(err.issues).toHaveLength(3);
      expect(err.message.split('\n')[0]).toMatch(/^line 2, column 1: kvp get: missing KEY/);
    }
  });

  it('a lexical error drops its step, not the steps before it on the line', () => {
    const r = tryParseScenario('kvp get a ; kvp get "b');
    expect(r.steps.map((s) => s.args)).toEqual([{ key: 'a', pool: 0 }]);
    expect(r.issues).toHaveLength(1);
  });

  it('firstLine numbers the lines of a text that starts later (the console)', () => {
    expect(tryParseScenario('kvp get', { firstLine: 42 }).issues[0]?.line).toBe(42);
    expect(parseScenario('kvp get a', { firstLine: 7 })[0]?.line).toBe(7);
  });
});
