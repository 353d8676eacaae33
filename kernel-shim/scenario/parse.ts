/**
 * The scenario language: what the Hyper-V host does, one step per line, read like a shell script.
 *
 *   wait-ready kvp 10s
 *   kvp set "Greeting" "héllo wörld"     expect HV_S_OK
 *   kvp get Greeting                     expect HV_S_OK value="héllo wörld"
 *   vss freeze & ; fault suspend ; wait
 *
 * Lexing follows the shell: words split on blanks, double quotes (with backslash escapes), single
 * quotes (literal), a backslash outside quotes takes the next character literally, `#` at the start
 * of a word begins a comment, `;` and `&` end a step (`&` runs it in the background), a backslash
 * at the end of a line continues the step on the next. A quoted word is never a keyword or an option.
 * The reference is kernel-shim/scenario/README.md; the command table below is what `help` prints.
 */
import {
  ADDR_FAMILY_IPV4,
  ADDR_FAMILY_IPV6,
  ADDR_FAMILY_NONE,
  DATA_FRAGMENT,
  HV_STATUS_NAMES,
  KVP_POOL_AUTO,
  KVP_POOL_AUTO_EXTERNAL,
  KVP_POOL_AUTO_INTERNAL,
  KVP_POOL_EXTERNAL,
  KVP_POOL_GUEST,
  REG_SZ,
  REG_U32,
  REG_U64,
  VSS_OP_AUTO_RECOVER,
  VSS_OP_BU_COMPLETE,
  VSS_OP_CREATE,
  VSS_OP_DELETE,
  VSS_OP_FREEZE,
  VSS_OP_GET_DM_INFO,
  VSS_OP_HOT_BACKUP,
  VSS_OP_THAW,
} from '../../uapi/constants.js';
import type { KvpIpInfo } from '../../uapi/kvp.js';
import { SERVICE_NAMES, type ServiceName } from '../device.js';

// ---------------------------------------------------------------------------------------------
// steps

/** Bytes given in a scenario: text (sent as UTF-8) or hex, repeated `repeat` times. */
export interface DataArg {
  readonly text: string;
  readonly encoding: 'utf8' | 'hex';
  readonly repeat: number;
}

type NoArgs = Record<string, never>;

/** A command and its arguments, as recorded (JSON-friendly: no bigints, no buffers). */
export type StepCommand =
  | {
      readonly op: 'kvp set' | 'kvp modify';
      readonly args: { key: string; value: string; pool: number; valueType: number };
    }
  | { readonly op: 'kvp get' | 'kvp delete'; readonly args: { key: string; pool: number } }
  | { readonly op: 'kvp enumerate'; readonly args: { pool: number; index: number } }
  | { readonly op: 'kvp list'; readonly args: { pool: number; max: number } }
  | { readonly op: 'kvp get-ip'; readonly args: { adapterId: string; addrFamily: number } }
  | { readonly op: 'kvp set-ip'; readonly args: KvpIpInfo }
  | { readonly op: 'vss hot-backup'; readonly args: { flags: number } }
  | { readonly op: 'vss freeze' | 'vss thaw' | 'vss dm-info'; readonly args: NoArgs }
  | { readonly op: 'vss request'; readonly args: { operation: number; flags: number } }
  | {
      readonly op: 'fcopy copy';
      readonly args: {
        source: string;
        path: string;
        name: string;
        overwrite: boolean;
        createPath: boolean;
        size?: number;
      };
    }
  | {
      readonly op: 'fcopy put';
      readonly args: {
        path: string;
        name: string;
        data: DataArg;
        overwrite: boolean;
        createPath: boolean;
        size?: number;
      };
    }
  | {
      readonly op: 'fcopy start';
      readonly args: { path: string; name: string; size: number; overwrite: boolean; createPath: boolean };
    }
  | { readonly op: 'fcopy write'; readonly args: { offset: number; data: DataArg } }
  | { readonly op: 'fcopy complete' | 'fcopy cancel'; readonly args: NoArgs }
  | { readonly op: 'fault suspend' | 'fault resume'; readonly args: NoArgs }
  | { readonly op: 'fault rescind' | 'fault reoffer'; readonly args: { service: ServiceName } }
  | { readonly op: 'wait-ready'; readonly args: { service: ServiceName; timeoutMs: number } }
  | { readonly op: 'sleep'; readonly args: { ms: number } }
  | { readonly op: 'wait'; readonly args: NoArgs };

export type StepOp = StepCommand['op'];

/** What the host saw go wrong, instead of a status. */
export type HostErrorKind = 'timeout' | 'channel-gone' | 'failed';
export const HOST_ERROR_KINDS: readonly HostErrorKind[] = ['timeout', 'channel-gone', 'failed'];

export type CompareOp = '=' | '!=' | '>=' | '<=' | '>' | '<' | '~=';

/** One `expect` clause. `text` is its canonical spelling (recordings and messages use it). */
export type Expectation =
  | { readonly kind: 'status'; readonly negate: boolean; readonly status: number; readonly text: string }
  | {
      readonly kind: 'error';
      readonly negate: boolean;
      readonly error: HostErrorKind | 'none';
      readonly text: string;
    }
  | {
      readonly kind: 'field';
      readonly field: string;
      readonly op: CompareOp;
      readonly value: string;
      readonly text: string;
    };

export type Step = StepCommand & {
  /** 1-based line of the step's first word. */
  readonly line: number;
  /** The step as written (continuations joined). */
  readonly text: string;
  readonly expect: readonly Expectation[];
  /** Ended by `&`: runs while the next steps go on; `wait` collects it. */
  readonly background: boolean;
  /** `--timeout`: the runner's limit for this step, ms. */
  readonly timeoutMs?: number;
};

// ---------------------------------------------------------------------------------------------
// errors

export interface ScenarioIssue {
  readonly line: number;
  readonly column: number;
  readonly message: string;
}

/** Everything wrong with a scenario text, each issue with its line and column. */
export class ScenarioSyntaxError extends Error {
  readonly issues: readonly ScenarioIssue[];

  constructor(issues: readonly ScenarioIssue[]) {
    super(issues.map((i) => `line ${i.line}, column ${i.column}: ${i.message}`).join('\n'));
    this.name = 'ScenarioSyntaxError';
    this.issues = issues;
  }

  /** The line of the first issue. */
  get line(): number {
    return this.issues[0]?.line ?? 0;
  }
}

/** An argument error inside one step; becomes an issue at the offending word. */
class ArgError extends Error {
  constructor(
    message: string,
    readonly token?: Token,
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------
// lexer

interface Token {
  readonly kind: 'word' | 'sep';
  /** The word after quote removal, or the separator (`;`, `&`, newline). */
  readonly text: string;
  /** Per UTF-16 unit of `text`: true when it came from quotes or a backslash escape. */
  readonly literal: readonly boolean[];
  /** Some part was quoted or escaped: never a keyword, an option or an operator. */
  readonly quoted: boolean;
  readonly line: number;
  readonly column: number;
  readonly start: number;
  readonly end: number;
}

const DQ_ESCAPES: Readonly<Record<string, string>> = {
  '"': '"',
  '\\': '\\',
  "'": "'",
  n: '\n',
  t: '\t',
  r: '\r',
  '0': '\0',
  $: '$',
  '`': '`',
};

function lex(src: string, firstLine: number): { tokens: Token[]; issues: ScenarioIssue[] } {
  const tokens: Token[] = [];
  const issues: ScenarioIssue[] = [];
  let line = firstLine;
  let lineStart = 0;
  let i = 0;
  // the word being built
  let inWord = false;
  let text = '';
  let literal: boolean[] = [];
  let quoted = false;
  let wStart = 0;
  let wLine = 0;
  let wCol = 0;

  const col = (at: number) => at - lineStart + 1;
  const begin = () => {
    if (inWord) return;
    inWord = true;
    text = '';
    literal = [];
    quoted = false;
    wStart = i;
    wLine = line;
    wCol = col(i);
  };
  const add = (s: string, lit: boolean) => {
    text += s;
    for (let k = 0; k < s.length; k++) literal.push(lit);
    if (lit) quoted = true;
  };
  const flush = () => {
    if (!inWord) return;
    tokens.push({ kind: 'word', text, literal, quoted, line: wLine, column: wCol, start: wStart, end: i });
    inWord = false;
  };
  const sep = (s: string) => {
    flush();
    tokens.push({ kind: 'sep', text: s, literal: [], quoted: false, line, column: col(i), start: i, end: i });
  };
  /** Drop the rest of this line after an error (the step it belongs to is not run). */
  const abandonLine = (message: string, at: number) => {
    issues.push({ line, column: col(at), message });
    inWord = false;
    // drop the words of the step it is in: a step with a lexical error is reported, not half-run
    while (tokens.length > 0 && tokens[tokens.length - 1]?.kind === 'word') tokens.pop();
    const nl = src.indexOf('\n', i);
    i = nl < 0 ? src.length : nl;
  };

  while (i < src.length) {
    const c = src[i] as string;
    if (c === '\r' && src[i + 1] === '\n') {
      i++;
      continue;
    }
    if (c === '\n') {
      sep('\n');
      i++;
      line++;
      lineStart = i;
      continue;
    }
    if (c === ' ' || c === '\t') {
      flush();
      i++;
      continue;
    }
    if (c === '#' && !inWord) {
      const nl = src.indexOf('\n', i);
      i = nl < 0 ? src.length : nl;
      continue;
    }
    if (c === ';' || c === '&') {
      sep(c);
      i++;
      continue;
    }
    if (c === '\\') {
      const next = src[i + 1];
      const crlf = next === '\r' && src[i + 2] === '\n';
      if (next === undefined || next === '\n' || crlf) {
        // line continuation
        i += next === undefined ? 1 : crlf ? 3 : 2;
        if (next !== undefined) {
          line++;
          lineStart = i;
        }
        continue;
      }
      begin();
      const cp = String.fromCodePoint(src.codePointAt(i + 1) ?? 0);
      add(cp, true);
      i += 1 + cp.length;
      continue;
    }
    if (c === "'") {
      begin();
      const close = src.indexOf("'", i + 1);
      const nl = src.indexOf('\n', i + 1);
      if (close < 0 || (nl >= 0 && nl < close)) {
        abandonLine(
          'unterminated single quote (a quoted word ends on the same line; use \\n in double quotes for a newline)',
          i,
        );
        continue;
      }
      add(src.slice(i + 1, close), true);
      quoted = true;
      i = close + 1;
      continue;
    }
    if (c === '"') {
      begin();
      quoted = true;
      const open = i;
      let j = i + 1;
      let ok = false;
      let bad: { message: string; at: number } | undefined;
      while (j < src.length) {
        const d = src[j] as string;
        if (d === '"') {
          ok = true;
          j++;
          break;
        }
        if (d === '\n' || (d === '\r' && src[j + 1] === '\n')) break;
        if (d !== '\\') {
          add(d, true);
          j++;
          continue;
        }
        const e = src[j + 1];
        if (e === undefined || e === '\n' || e === '\r') break;
        const simple = DQ_ESCAPES[e];
        if (simple !== undefined) {
          add(simple, true);
          j += 2;
          continue;
        }
        const hex = e === 'x' ? /^[0-9a-fA-F]{2}/.exec(src.slice(j + 2, j + 4)) : undefined;
        if (e === 'x') {
          if (!hex) {
            bad = { message: 'bad escape \\x: write two hex digits, e.g. \\x41', at: j };
            break;
          }
          add(String.fromCharCode(parseInt(hex[0], 16)), true);
          j += 4;
          continue;
        }
        if (e === 'u') {
          const braced = /^\{([0-9a-fA-F]{1,6})\}/.exec(src.slice(j + 2, j + 10));
          const four = /^[0-9a-fA-F]{4}/.exec(src.slice(j + 2, j + 6));
          const digits = braced ? braced[1] : four ? four[0] : undefined;
          const cp = digits === undefined ? NaN : parseInt(digits, 16);
          if (!(cp <= 0x10ffff)) {
            bad = { message: 'bad escape \\u: write \\uHHHH or \\u{H…} (at most 10FFFF)', at: j };
            break;
          }
          add(String.fromCodePoint(cp), true);
          j += 2 + (braced ? braced[0].length : 4);
          continue;
        }
        bad = {
          message: `unknown escape \\${e} in double quotes (known: \\" \\\\ \\n \\t \\r \\0 \\xHH \\uHHHH \\u{H…}; use single quotes for text with backslashes)`,
          at: j,
        };
        break;
      }
      if (bad) {
        i = bad.at;
        abandonLine(bad.message, bad.at);
        continue;
      }
      if (!ok) {
        i = open;
        abandonLine(
          'unterminated double quote (a quoted word ends on the same line; use \\n for a newline)',
          open,
        );
        continue;
      }
      i = j;
      continue;
    }
    begin();
    add(c, false);
    i++;
  }
  flush();
  return { tokens, issues };
}

// ---------------------------------------------------------------------------------------------
// value parsers (each throws ArgError with a message naming what was expected)

const POOLS: Readonly<Record<string, number>> = {
  external: KVP_POOL_EXTERNAL,
  guest: KVP_POOL_GUEST,
  auto: KVP_POOL_AUTO,
  'auto-external': KVP_POOL_AUTO_EXTERNAL,
  'auto-internal': KVP_POOL_AUTO_INTERNAL,
};

export const POOL_NAMES: readonly string[] = ['external', 'guest', 'auto', 'auto-external', 'auto-internal'];

function parseInteger(t: Token, what: string, min: number, max: number): number {
  const s = t.text;
  const n = /^0x[0-9a-f]+$/i.test(s) ? parseInt(s, 16) : /^\d+$/.test(s) ? Number(s) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `${min}..${max}`;
    throw new ArgError(`${what}: expected an integer ${range} (decimal or 0x…), got '${s}'`, t);
  }
  return n;
}

function parsePool(t: Token): number {
  const named = POOLS[t.text];
  if (named !== undefined) return named;
  if (/^[0-4]$/.test(t.text)) return Number(t.text);
  throw new ArgError(`pool: expected 0..4 or ${POOL_NAMES.join(', ')}; got '${t.text}'`, t);
}

/** `200ms`, `10s`, `1.5s`, `2m`. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|min)$/.exec(text);
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = m[2] === 'ms' ? 1 : m[2] === 's' ? 1000 : 60_000;
  return Math.round(n * unit);
}

function durationArg(t: Token, what: string): number {
  const ms = parseDuration(t.text);
  if (ms === undefined)
    throw new ArgError(`${what}: expected a duration like 200ms, 10s or 2m; got '${t.text}'`, t);
  return ms;
}

function serviceArg(t: Token): ServiceName {
  if ((SERVICE_NAMES as readonly string[]).includes(t.text)) return t.text as ServiceName;
  throw new ArgError(`expected a service (${SERVICE_NAMES.join(', ')}); got '${t.text}'`, t);
}

const VALUE_TYPES: Readonly<Record<string, number>> = {
  sz: REG_SZ,
  string: REG_SZ,
  reg_sz: REG_SZ,
  u32: REG_U32,
  reg_u32: REG_U32,
  u64: REG_U64,
  reg_u64: REG_U64,
};

const FAMILIES: Readonly<Record<string, number>> = {
  none: ADDR_FAMILY_NONE,
  ipv4: ADDR_FAMILY_IPV4,
  ipv6: ADDR_FAMILY_IPV6,
  both: ADDR_FAMILY_IPV4 | ADDR_FAMILY_IPV6,
};

function familyArg(t: Token): number {
  const f = FAMILIES[t.text.toLowerCase()];
  if (f !== undefined) return f;
  if (/^\d+$/.test(t.text)) return parseInteger(t, '--family', 0, 255);
  throw new ArgError(`--family: expected none, ipv4, ipv6, both or a number; got '${t.text}'`, t);
}

const VSS_OPS: Readonly<Record<string, number>> = {
  create: VSS_OP_CREATE,
  delete: VSS_OP_DELETE,
  'hot-backup': VSS_OP_HOT_BACKUP,
  'get-dm-info': VSS_OP_GET_DM_INFO,
  'dm-info': VSS_OP_GET_DM_INFO,
  'bu-complete': VSS_OP_BU_COMPLETE,
  freeze: VSS_OP_FREEZE,
  thaw: VSS_OP_THAW,
  'auto-recover': VSS_OP_AUTO_RECOVER,
};

/** A status by name (`HV_S_OK`) or number (`0x80004005`, decimal). */
export function parseStatus(text: string): number | undefined {
  for (const [code, name] of Object.entries(HV_STATUS_NAMES)) if (name === text) return Number(code);
  if (/^0x[0-9a-f]{1,8}$/i.test(text)) return parseInt(text, 16) >>> 0;
  if (/^\d+$/.test(text) && Number(text) <= 0xffffffff) return Number(text);
  return undefined;
}

/** Bytes of a DataArg. */
export function dataBytes(d: DataArg): Buffer {
  const one = d.encoding === 'hex' ? Buffer.from(d.text, 'hex') : Buffer.from(d.text, 'utf8');
  return d.repeat === 1 ? one : Buffer.concat(Array.from({ length: d.repeat }, () => one));
}

// ---------------------------------------------------------------------------------------------
// command table

interface OptionSpec {
  /** Takes a value (`--pool 1` or `--pool=1`); otherwise a flag. */
  readonly value?: boolean;
  /** May be given more than once (the values are kept in order). */
  readonly repeat?: boolean;
}

/** What a command's builder gets: its positional words and options. */
class Args {
  constructor(
    readonly command: CommandSpec,
    readonly positional: readonly Token[],
    readonly options: ReadonlyMap<string, readonly Token[]>,
    readonly at: Token,
  ) {}

  pos(i: number): Token {
    const t = this.positional[i];
    if (!t) {
      const name = this.command.args[i]?.replace(/\?$/, '') ?? `argument ${i + 1}`;
      throw new ArgError(`${this.command.name}: missing ${name} (usage: ${this.command.usage})`, this.at);
    }
    return t;
  }

  optionalPos(i: number): Token | undefined {
    return this.positional[i];
  }

  opt(name: string): Token | undefined {
    return this.options.get(name)?.[0];
  }

  all(name: string): readonly Token[] {
    return this.options.get(name) ?? [];
  }

  flag(name: string): boolean {
    return this.options.has(name);
  }
}

export interface CommandSpec {
  /** `kvp set`. */
  readonly name: StepOp;
  /** Positional argument names; a `?` suffix marks an optional one. */
  readonly args: readonly string[];
  readonly options: Readonly<Record<string, OptionSpec>>;
  readonly usage: string;
  readonly summary: string;
  /** Whether the host answers with a status (then `expect STATUS` and `--timeout` apply). */
  readonly status: boolean;
  /** Accepts `--timeout DURATION` (a limit on the step). */
  readonly timeout: boolean;
  /** Fields an `expect` may check (`item.*`, `ip.*` are families); numeric ones compare as numbers. */
  readonly fields: readonly string[];
  build(a: Args): StepCommand;
}

export const NUMERIC_FIELDS: readonly string[] = [
  'status',
  'count',
  'flags',
  'bytesSent',
  'ip.addrFamily',
  'ip.dhcpEnabled',
];

export const IP_FIELDS: readonly (keyof KvpIpInfo)[] = [
  'adapterId',
  'addrFamily',
  'dhcpEnabled',
  'ipAddr',
  'subNet',
  'gateWay',
  'dnsAddr',
];

const COPY_OPTIONS = {
  '--overwrite': {},
  '--create-path': {},
  '--size': { value: true },
} as const;
const DATA_OPTIONS = { '--hex': {}, '--repeat': { value: true } } as const;

function dataArg(a: Args, t: Token, limit?: number): DataArg {
  const hex = a.flag('--hex');
  if (hex && !/^(?:[0-9a-fA-F]{2})*$/.test(t.text))
    throw new ArgError(`--hex: DATA must be pairs of hex digits, got '${t.text}'`, t);
  const r = a.opt('--repeat');
  const repeat = r ? parseInteger(r, '--repeat', 0, 1 << 30) : 1;
  const d: DataArg = { text: t.text, encoding: hex ? 'hex' : 'utf8', repeat };
  const length = (hex ? t.text.length / 2 : Buffer.byteLength(t.text, 'utf8')) * repeat;
  if (limit !== undefined && length > limit)
    throw new ArgError(
      `${a.command.name}: DATA is ${length} bytes; one fragment holds at most ${limit} (use fcopy put to send more)`,
      t,
    );
  return d;
}

function kvpValueType(a: Args): number {
  const t = a.opt('--type');
  if (!t) return REG_SZ;
  const named = VALUE_TYPES[t.text.toLowerCase()];
  if (named !== undefined) return named;
  if (/^\d+$/.test(t.text)) return parseInteger(t, '--type', 0, 0xffffffff);
  throw new ArgError(`--type: expected sz, u32, u64 or a number; got '${t.text}'`, t);
}

/** A table entry: host commands (a status, --timeout, no arguments or options) need not say so. */
type CommandDef = Omit<CommandSpec, 'args' | 'options' | 'status' | 'timeout' | 'fields'> &
  Partial<Pick<CommandSpec, 'args' | 'options' | 'status' | 'timeout' | 'fields'>>;

const DEFS: readonly CommandDef[] = [
  {
    name: 'kvp set',
    args: ['KEY', 'VALUE'],
    options: { '--pool': { value: true }, '--type': { value: true } },
    usage: 'kvp set KEY VALUE [--pool POOL] [--type sz|u32|u64]',
    summary: 'add or change an item (KVP SET; default pool 0, external)',
    build: (a) => kvpSet('kvp set', a),
  },
  {
    name: 'kvp modify',
    args: ['KEY', 'VALUE'],
    options: { '--pool': { value: true }, '--type': { value: true } },
    usage: 'kvp modify KEY VALUE [--pool POOL] [--type sz|u32|u64]',
    summary: 'change an item (the same SET, as Modify-VMKvpItem sends it)',
    build: (a) => kvpSet('kvp modify', a),
  },
  {
    name: 'kvp get',
    args: ['KEY'],
    options: { '--pool': { value: true } },
    usage: 'kvp get KEY [--pool POOL]',
    summary: "read one item's value (KVP GET)",
    fields: ['status', 'key', 'value'],
    build: (a) => ({ op: 'kvp get', args: { key: a.pos(0).text, pool: poolOpt(a) } }),
  },
  {
    name: 'kvp delete',
    args: ['KEY'],
    options: { '--pool': { value: true } },
    usage: 'kvp delete KEY [--pool POOL]',
    summary: 'remove an item (KVP DELETE)',
    build: (a) => ({ op: 'kvp delete', args: { key: a.pos(0).text, pool: poolOpt(a) } }),
  },
  {
    name: 'kvp enumerate',
    args: ['POOL', 'INDEX'],
    usage: 'kvp enumerate POOL INDEX',
    summary: 'read the item at INDEX of POOL (KVP ENUMERATE)',
    fields: ['status', 'key', 'value'],
    build: (a) => ({
      op: 'kvp enumerate',
      args: { pool: parsePool(a.pos(0)), index: parseInteger(a.pos(1), 'INDEX', 0, 0xffffffff) },
    }),
  },
  {
    name: 'kvp list',
    args: ['POOL'],
    options: { '--max': { value: true } },
    usage: 'kvp list POOL [--max N]',
    summary: 'every item of POOL: ENUMERATE from 0 until the guest answers non-zero (status: that answer)',
    fields: ['status', 'count', 'has', 'item.*'],
    build: (a) => {
      const m = a.opt('--max');
      return {
        op: 'kvp list',
        args: { pool: parsePool(a.pos(0)), max: m ? parseInteger(m, '--max', 0, 0xffffffff) : 100_000 },
      };
    },
  },
  {
    name: 'kvp get-ip',
    args: ['MAC'],
    options: { '--family': { value: true } },
    usage: 'kvp get-ip MAC [--family none|ipv4|ipv6|both]',
    summary: 'read the IP configuration of the adapter with this MAC (KVP GET_IP_INFO)',
    fields: ['status', 'ip.*'],
    build: (a) => {
      const f = a.opt('--family');
      return { op: 'kvp get-ip', args: { adapterId: a.pos(0).text, addrFamily: f ? familyArg(f) : 0 } };
    },
  },
  {
    name: 'kvp set-ip',
    args: ['ADAPTER'],
    options: {
      '--ip': { value: true, repeat: true },
      '--subnet': { value: true, repeat: true },
      '--gateway': { value: true, repeat: true },
      '--dns': { value: true, repeat: true },
      '--dhcp': { value: true },
      '--family': { value: true },
    },
    usage:
      'kvp set-ip ADAPTER [--ip A]… [--subnet M]… [--gateway G]… [--dns D]… [--dhcp on|off] [--family none|ipv4|ipv6|both]',
    summary:
      'set the IP configuration of the adapter with this VMBus id (KVP SET_IP_INFO; repeated options join with ;)',
    build: (a) => {
      const join = (o: string) =>
        a
          .all(o)
          .map((t) => t.text)
          .join(';');
      const d = a.opt('--dhcp');
      let dhcpEnabled = 0;
      if (d) {
        const v = d.text.toLowerCase();
        if (v === 'on' || v === 'yes' || v === 'true' || v === '1') dhcpEnabled = 1;
        else if (!(v === 'off' || v === 'no' || v === 'false' || v === '0'))
          throw new ArgError(`--dhcp: expected on or off, got '${d.text}'`, d);
      }
      const f = a.opt('--family');
      return {
        op: 'kvp set-ip',
        args: {
          adapterId: a.pos(0).text,
          addrFamily: f ? familyArg(f) : 0,
          dhcpEnabled,
          ipAddr: join('--ip'),
          subNet: join('--subnet'),
          gateWay: join('--gateway'),
          dnsAddr: join('--dns'),
        },
      };
    },
  },
  {
    name: 'vss hot-backup',
    options: { '--flags': { value: true } },
    usage: 'vss hot-backup [--flags N]',
    summary: 'ask whether the guest supports application-consistent backup (VSS HOT_BACKUP)',
    fields: ['status', 'flags'],
    build: (a) => {
      const f = a.opt('--flags');
      return { op: 'vss hot-backup', args: { flags: f ? parseInteger(f, '--flags', 0, 0xffffffff) : 0 } };
    },
  },
  {
    name: 'vss freeze',
    usage: 'vss freeze',
    summary: "freeze the guest's filesystems for a snapshot (VSS FREEZE)",
    fields: ['status', 'flags'],
    build: () => ({ op: 'vss freeze', args: {} }),
  },
  {
    name: 'vss thaw',
    usage: 'vss thaw',
    summary: 'thaw them (VSS THAW)',
    fields: ['status', 'flags'],
    build: () => ({ op: 'vss thaw', args: {} }),
  },
  {
    name: 'vss dm-info',
    usage: 'vss dm-info',
    summary: 'VSS GET_DM_INFO (the kernel answers it)',
    fields: ['status', 'flags'],
    build: () => ({ op: 'vss dm-info', args: {} }),
  },
  {
    name: 'vss request',
    args: ['OPERATION'],
    options: { '--flags': { value: true } },
    usage: 'vss request OPERATION [--flags N]',
    summary:
      'any VSS operation: create, delete, hot-backup, get-dm-info, bu-complete, freeze, thaw, auto-recover or a number',
    fields: ['status', 'flags'],
    build: (a) => {
      const t = a.pos(0);
      const named = VSS_OPS[t.text.toLowerCase()];
      const operation =
        named ?? (/^(0x)?[0-9a-f]+$/i.test(t.text) ? parseInteger(t, 'OPERATION', 0, 255) : -1);
      if (operation < 0)
        throw new ArgError(
          `vss request: unknown operation '${t.text}' (known: ${Object.keys(VSS_OPS).join(', ')}, or a number)`,
          t,
        );
      const f = a.opt('--flags');
      return {
        op: 'vss request',
        args: { operation, flags: f ? parseInteger(f, '--flags', 0, 0xffffffff) : 0 },
      };
    },
  },
  {
    name: 'fcopy copy',
    args: ['SOURCE', 'PATH', 'NAME'],
    options: COPY_OPTIONS,
    usage: 'fcopy copy SOURCE PATH NAME [--overwrite] [--create-path] [--size N]',
    summary: 'Copy-VMFile: the host file SOURCE (relative to the scenario) to PATH/NAME in the guest',
    fields: ['status', 'step', 'bytesSent'],
    build: (a) => ({
      op: 'fcopy copy',
      args: {
        source: a.pos(0).text,
        path: a.pos(1).text,
        name: a.pos(2).text,
        ...copyFlags(a),
      },
    }),
  },
  {
    name: 'fcopy put',
    args: ['PATH', 'NAME', 'DATA'],
    options: { ...COPY_OPTIONS, ...DATA_OPTIONS },
    usage: 'fcopy put PATH NAME DATA [--hex] [--repeat N] [--overwrite] [--create-path] [--size N]',
    summary: 'copy DATA (text, or hex with --hex) to PATH/NAME: START, WRITEs, COMPLETE',
    fields: ['status', 'step', 'bytesSent'],
    build: (a) => ({
      op: 'fcopy put',
      args: { path: a.pos(0).text, name: a.pos(1).text, data: dataArg(a, a.pos(2)), ...copyFlags(a) },
    }),
  },
  {
    name: 'fcopy start',
    args: ['PATH', 'NAME'],
    options: COPY_OPTIONS,
    usage: 'fcopy start PATH NAME [--size N] [--overwrite] [--create-path]',
    summary: 'START_FILE_COPY alone (announced size default 0)',
    build: (a) => {
      const { size, ...flags } = copyFlags(a);
      return {
        op: 'fcopy start',
        args: { path: a.pos(0).text, name: a.pos(1).text, size: size ?? 0, ...flags },
      };
    },
  },
  {
    name: 'fcopy write',
    args: ['OFFSET', 'DATA'],
    options: DATA_OPTIONS,
    usage: 'fcopy write OFFSET DATA [--hex] [--repeat N]',
    summary: `one WRITE_TO_FILE fragment (at most ${DATA_FRAGMENT} bytes)`,
    build: (a) => ({
      op: 'fcopy write',
      args: {
        offset: parseInteger(a.pos(0), 'OFFSET', 0, Number.MAX_SAFE_INTEGER),
        data: dataArg(a, a.pos(1), DATA_FRAGMENT),
      },
    }),
  },
  {
    name: 'fcopy complete',
    usage: 'fcopy complete',
    summary: 'COMPLETE_FCOPY: the guest keeps the file',
    build: () => ({ op: 'fcopy complete', args: {} }),
  },
  {
    name: 'fcopy cancel',
    usage: 'fcopy cancel',
    summary: 'CANCEL_FCOPY: the guest drops the partial file',
    build: () => ({ op: 'fcopy cancel', args: {} }),
  },
  {
    name: 'fault suspend',
    usage: 'fault suspend',
    summary: 'hibernate the guest: every channel closed, pending host requests get no reply',
    status: false,
    fields: [],
    build: () => ({ op: 'fault suspend', args: {} }),
  },
  {
    name: 'fault resume',
    usage: 'fault resume',
    summary: 'resume from hibernation: fresh channels, the host negotiates again',
    status: false,
    fields: [],
    build: () => ({ op: 'fault resume', args: {} }),
  },
  {
    name: 'fault rescind',
    args: ['SERVICE'],
    usage: 'fault rescind kvp|vss|fcopy',
    summary: 'the host withdraws the device; done when the daemon has closed it and the node is gone',
    status: false,
    fields: [],
    build: (a) => ({ op: 'fault rescind', args: { service: serviceArg(a.pos(0)) } }),
  },
  {
    name: 'fault reoffer',
    args: ['SERVICE'],
    usage: 'fault reoffer kvp|vss|fcopy',
    summary: 'the host offers the device again (a fresh driver; the daemon must open and register)',
    status: false,
    fields: [],
    build: (a) => ({ op: 'fault reoffer', args: { service: serviceArg(a.pos(0)) } }),
  },
  {
    name: 'wait-ready',
    args: ['SERVICE', 'TIMEOUT?'],
    usage: 'wait-ready kvp|vss|fcopy [TIMEOUT]',
    summary: 'wait until a daemon has registered (the driver is READY), at most TIMEOUT (default 10s)',
    status: false,
    timeout: false,
    fields: ['state'],
    build: (a) => {
      const t = a.optionalPos(1);
      return {
        op: 'wait-ready',
        args: { service: serviceArg(a.pos(0)), timeoutMs: t ? durationArg(t, 'TIMEOUT') : 10_000 },
      };
    },
  },
  {
    name: 'sleep',
    args: ['DURATION'],
    usage: 'sleep DURATION',
    summary: "let time pass (200ms, 10s, 2m); on a FakeClock the shim's time moves instead",
    status: false,
    timeout: false,
    fields: [],
    build: (a) => ({ op: 'sleep', args: { ms: durationArg(a.pos(0), 'DURATION') } }),
  },
  {
    name: 'wait',
    usage: 'wait',
    summary: 'wait for every step started with & to finish',
    status: false,
    timeout: false,
    fields: [],
    build: () => ({ op: 'wait', args: {} }),
  },
];

/** Every command, in the order `help` lists them. */
export const COMMANDS: readonly CommandSpec[] = DEFS.map((d) => ({
  args: [],
  options: {},
  status: true,
  timeout: true,
  fields: ['status'],
  ...d,
}));

const BY_NAME = new Map<string, CommandSpec>(COMMANDS.map((c) => [c.name, c]));
const GROUPS = ['kvp', 'vss', 'fcopy', 'fault'];

/** The command table entry of an operation. */
export function commandSpec(op: string): CommandSpec | undefined {
  return BY_NAME.get(op);
}

function poolOpt(a: Args): number {
  const p = a.opt('--pool');
  return p ? parsePool(p) : KVP_POOL_EXTERNAL;
}

function kvpSet(op: 'kvp set' | 'kvp modify', a: Args): StepCommand {
  const valueType = kvpValueType(a);
  const v = a.pos(1);
  if (valueType === REG_U32 || valueType === REG_U64) {
    const max = valueType === REG_U32 ? 0xffffffff : undefined;
    if (!/^\d+$/.test(v.text) || (max !== undefined && Number(v.text) > max) || BigInt(v.text) >= 1n << 64n)
      throw new ArgError(
        `${op}: a ${valueType === REG_U32 ? 'u32' : 'u64'} VALUE must be a decimal integer${max ? ' ≤ 4294967295' : ''}, got '${v.text}'`,
        v,
      );
  }
  return { op, args: { key: a.pos(0).text, value: v.text, pool: poolOpt(a), valueType } };
}

function copyFlags(a: Args): { overwrite: boolean; createPath: boolean; size?: number } {
  const s = a.opt('--size');
  return {
    overwrite: a.flag('--overwrite'),
    createPath: a.flag('--create-path'),
    ...(s ? { size: parseInteger(s, '--size', 0, Number.MAX_SAFE_INTEGER) } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// expectations

const OPERATORS: readonly CompareOp[] = ['!=', '>=', '<=', '~=', '=', '>', '<'];

/** `"héllo wörld"` when the word needs quotes, else the word itself. */
export function quoteWord(s: string): string {
  if (s !== '' && /^[^\s"'\\#;&]+$/u.test(s)) return s;
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0) ?? 0;
    if (ch === '"' || ch === '\\') out += `\\${ch}`;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\r') out += '\\r';
    else if (cp < 0x20 || cp === 0x7f) out += `\\x${cp.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

function statusText(status: number): string {
  return HV_STATUS_NAMES[status] ?? `0x${status.toString(16).padStart(8, '0')}`;
}

function fieldAllowed(spec: CommandSpec, field: string): boolean {
  if (spec.fields.includes(field)) return true;
  if (field.startsWith('item.') && field.length > 5) return spec.fields.includes('item.*');
  if (field.startsWith('ip.'))
    return spec.fields.includes('ip.*') && IP_FIELDS.includes(field.slice(3) as keyof KvpIpInfo);
  return false;
}

function fieldList(spec: CommandSpec): string {
  const list = spec.fields.flatMap((f) =>
    f === 'ip.*' ? IP_FIELDS.map((x) => `ip.${x}`) : f === 'item.*' ? ['item.KEY'] : [f],
  );
  return [...list, 'error'].join(', ');
}

function parseExpectation(spec: CommandSpec, t: Token): Expectation {
  // the first operator character outside quotes splits field and value
  let at = -1;
  for (let k = 0; k < t.text.length; k++) {
    if (!t.literal[k] && '=!<>~'.includes(t.text[k] as string)) {
      at = k;
      break;
    }
  }
  if (at < 0) {
    const status = t.quoted ? undefined : parseStatus(t.text);
    if (status === undefined)
      throw new ArgError(
        `expect: '${t.text}' is not a status (${Object.values(HV_STATUS_NAMES).join(', ')} or 0x…) nor FIELD=VALUE`,
        t,
      );
    if (!spec.status)
      throw new ArgError(`expect: ${spec.name} has no status to expect (it can fail: error=…)`, t);
    return { kind: 'status', negate: false, status, text: statusText(status) };
  }
  const field = t.text.slice(0, at);
  const rest = t.text.slice(at);
  const op = OPERATORS.find((o) => rest.startsWith(o));
  if (!op || field === '')
    throw new ArgError(`expect: write FIELD=VALUE (or != >= <= > < ~=), got '${t.text}'`, t);
  const value = rest.slice(op.length);
  const text = `${field}${op}${quoteWord(value)}`;
  const eqOnly = (what: string) => {
    if (op !== '=' && op !== '!=') throw new ArgError(`expect: ${what} takes = or !=, got '${op}'`, t);
  };
  if (field === 'error') {
    eqOnly('error');
    if (value !== 'none' && !HOST_ERROR_KINDS.includes(value as HostErrorKind))
      throw new ArgError(`expect: error= takes ${HOST_ERROR_KINDS.join(', ')} or none; got '${value}'`, t);
    return { kind: 'error', negate: op === '!=', error: value as HostErrorKind | 'none', text };
  }
  if (field === 'status') {
    eqOnly('status');
    if (!spec.status)
      throw new ArgError(`expect: ${spec.name} has no status to expect (it can fail: error=…)`, t);
    const status = parseStatus(value);
    if (status === undefined) throw new ArgError(`expect: unknown status '${value}'`, t);
    return { kind: 'status', negate: op === '!=', status, text: `status${op}${statusText(status)}` };
  }
  if (!fieldAllowed(spec, field))
    throw new ArgError(`expect: ${spec.name} has no field '${field}' (it has: ${fieldList(spec)})`, t);
  if (field === 'has') eqOnly('has');
  const ordered = op === '>=' || op === '<=' || op === '>' || op === '<';
  if (ordered && !NUMERIC_FIELDS.includes(field))
    throw new ArgError(`expect: ${field} is text; ${op} compares numbers`, t);
  if (
    (ordered || op === '=' || op === '!=') &&
    NUMERIC_FIELDS.includes(field) &&
    !/^(0x[0-9a-f]+|\d+)$/i.test(value)
  )
    throw new ArgError(`expect: ${field}${op} needs a number (decimal or 0x…), got '${value}'`, t);
  if (op === '~=') {
    try {
      new RegExp(value, 'u');
    } catch (e) {
      throw new ArgError(`expect: ${field}~= needs a regular expression: ${(e as Error).message}`, t);
    }
  }
  return { kind: 'field', field, op, value, text };
}

// ---------------------------------------------------------------------------------------------
// steps from tokens

function commandFor(words: readonly Token[]): { spec: CommandSpec; used: number } {
  const first = words[0] as Token;
  if (first.quoted) throw new ArgError(`a command is not quoted: '${first.text}'`, first);
  const one = BY_NAME.get(first.text);
  if (one) return { spec: one, used: 1 };
  if (GROUPS.includes(first.text)) {
    const second = words[1];
    const two = second && !second.quoted ? BY_NAME.get(`${first.text} ${second.text}`) : undefined;
    if (two) return { spec: two, used: 2 };
    const known = COMMANDS.filter((c) => c.name.startsWith(`${first.text} `))
      .map((c) => c.name.slice(first.text.length + 1))
      .join(', ');
    throw new ArgError(
      second
        ? `unknown ${first.text} command '${second.text}' (known: ${known})`
        : `${first.text}: which command? (${known})`,
      second ?? first,
    );
  }
  const tops = [...GROUPS, ...COMMANDS.filter((c) => !c.name.includes(' ')).map((c) => c.name)].join(', ');
  throw new ArgError(`unknown command '${first.text}' (commands: ${tops}; try help)`, first);
}

/** `--name` or `--name=value` with the name unquoted; `eq` is the index of the `=`, or -1. */
function optionName(t: Token): { name: string; eq: number } | undefined {
  if (!t.text.startsWith('--') || t.text.length <= 2) return undefined;
  let eq = -1;
  for (let k = 0; k < t.text.length; k++) {
    if (t.literal[k]) {
      if (eq < 0) return undefined; // a quoted character in the name: a value, not an option
      break;
    }
    if (t.text[k] === '=') {
      eq = k;
      break;
    }
  }
  if (eq === 2) return undefined;
  return { name: eq < 0 ? t.text : t.text.slice(0, eq), eq };
}

function buildStep(words: readonly Token[], src: string, background: boolean): Step {
  const { spec, used } = commandFor(words);
  const positional: Token[] = [];
  const options = new Map<string, Token[]>();
  const expectations: Expectation[] = [];
  let timeoutMs: number | undefined;
  let inExpect = false;
  let endOfOptions = false;
  for (let k = used; k < words.length; k++) {
    const t = words[k] as Token;
    if (!t.quoted && t.text === 'expect') {
      inExpect = true;
      continue;
    }
    if (inExpect) {
      expectations.push(parseExpectation(spec, t));
      continue;
    }
    if (!t.quoted && !endOfOptions && t.text === '--') {
      endOfOptions = true;
      continue;
    }
    const opt = endOfOptions ? undefined : optionName(t);
    if (opt) {
      const { name, eq } = opt;
      const inline = eq < 0 ? undefined : t.text.slice(eq + 1);
      const inlineToken = (): Token => ({
        ...t,
        text: t.text.slice(eq + 1),
        literal: t.literal.slice(eq + 1),
      });
      if (name === '--timeout' && spec.timeout) {
        const v = inline !== undefined ? inlineToken() : words[++k];
        if (!v) throw new ArgError('--timeout needs a duration (200ms, 10s, 2m)', t);
        timeoutMs = durationArg(v, '--timeout');
        continue;
      }
      const o = spec.options[name];
      if (!o) {
        const known = [...Object.keys(spec.options), ...(spec.timeout ? ['--timeout'] : [])];
        throw new ArgError(
          `${spec.name}: unknown option ${name} (${known.length ? `options: ${known.join(', ')}` : 'it takes no options'}; quote a value that starts with --)`,
          t,
        );
      }
      if (options.has(name) && !o.repeat) throw new ArgError(`${spec.name}: ${name} given twice`, t);
      let value: Token;
      if (o.value) {
        const v = inline !== undefined ? inlineToken() : words[++k];
        if (!v || (!v.quoted && v.text === 'expect'))
          throw new ArgError(`${spec.name}: ${name} needs a value (usage: ${spec.usage})`, t);
        value = v;
      } else {
        if (inline !== undefined) throw new ArgError(`${spec.name}: ${name} is a flag and takes no value`, t);
        value = t;
      }
      options.set(name, [...(options.get(name) ?? []), value]);
      continue;
    }
    positional.push(t);
  }
  const first = words[0] as Token;
  const max = spec.args.length;
  if (positional.length > max) {
    const extra = positional[max] as Token;
    throw new ArgError(
      `${spec.name}: unexpected argument '${extra.text}' (usage: ${spec.usage}; quote a value with spaces)`,
      extra,
    );
  }
  const command = spec.build(new Args(spec, positional, options, first));
  const last = words[words.length - 1] as Token;
  const text = src
    .slice(first.start, last.end)
    .replace(/[ \t]*\\\r?\n[ \t]*/g, ' ')
    .trim();
  if (background && spec.name === 'wait') throw new ArgError('wait cannot run in the background (&)', first);
  return {
    ...command,
    line: first.line,
    text,
    expect: expectations,
    background,
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
  } as Step;
}

export interface ParseOptions {
  /** The number of the text's first line (default 1): the console passes each input line's. */
  firstLine?: number;
}

/** Parse a scenario, collecting every issue; throws ScenarioSyntaxError if there is any. */
export function parseScenario(src: string, opts: ParseOptions = {}): Step[] {
  const r = tryParseScenario(src, opts);
  if (r.issues.length > 0) throw new ScenarioSyntaxError(r.issues);
  return r.steps;
}

/** Parse without throwing: the steps that parsed, and the issues of the others. */
export function tryParseScenario(
  src: string,
  opts: ParseOptions = {},
): { steps: Step[]; issues: ScenarioIssue[] } {
  const { tokens, issues } = lex(src, opts.firstLine ?? 1);
  const steps: Step[] = [];
  let words: Token[] = [];
  const end = (terminator: Token | undefined) => {
    const background = terminator?.text === '&';
    if (words.length === 0) {
      if (background && terminator)
        issues.push({
          line: terminator.line,
          column: terminator.column,
          message: '& with no step before it',
        });
      return;
    }
    try {
      steps.push(buildStep(words, src, background));
    } catch (e) {
      if (!(e instanceof ArgError)) throw e;
      const at = e.token ?? words[0];
      issues.push({ line: at?.line ?? 0, column: at?.column ?? 0, message: e.message });
    }
    words = [];
  };
  for (const t of tokens) {
    if (t.kind === 'sep') end(t);
    else words.push(t);
  }
  end(undefined);
  issues.sort((a, b) => a.line - b.line || a.column - b.column);
  return { steps, issues };
}
