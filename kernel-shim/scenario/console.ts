/**
 * The host console: the scenario language typed by hand (or piped in), each result printed as a
 * Hyper-V admin reads it. One ScenarioRunner serves the whole session, so `&`, `wait` and `save`
 * work across lines.
 *
 *   hv-host> kvp set Greeting "héllo wörld"
 *   HV_S_OK (0x00000000)
 *   hv-host> kvp list external
 *   HV_S_CONT (0x80070103) after 1 item
 *     Greeting = "héllo wörld"
 */
import { readFile, writeFile } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { HV_STATUS_NAMES } from '../../uapi/constants.js';
import { HVUTIL_STATE_NAMES } from '../drivers/util.js';
import type { KernelShim } from '../shim.js';
import { COMMANDS, HOST_ERROR_KINDS, POOL_NAMES, type Step, quoteWord, tryParseScenario } from './parse.js';
import {
  type RecordedStep,
  type Recording,
  type RunOptions,
  ScenarioRunner,
  recordingToJson,
} from './run.js';

export interface ConsoleOptions extends Omit<RunOptions, 'onStep'> {
  /** Default: process.stdin. */
  input?: NodeJS.ReadableStream;
  /** Default: process.stdout. */
  output?: NodeJS.WritableStream;
  /** Line editing, prompt and completion (default: when input and output are TTYs). */
  terminal?: boolean;
  /** Default `hv-host> `. */
  prompt?: string;
  /** Print each command before its result (default: when not a terminal, so a log reads well). */
  echo?: boolean;
}

const META = ['help', 'status', 'run', 'save', 'quit', 'exit'];

// ---------------------------------------------------------------------------------------------
// human format

function version(v: number | undefined): string {
  return v === undefined ? '?' : `${v >>> 16}.${v & 0xffff}`;
}

/** A recorded step's result as lines of text (no trailing newline). */
export function formatEntry(entry: RecordedStep): string[] {
  const lines: string[] = [];
  const h = entry.host;
  if (!h) {
    lines.push(entry.failures.length > 0 ? entry.failures.join('; ') : 'skipped (an earlier step failed)');
    return lines;
  }
  if (h.error) {
    lines.push(`error=${h.error}: ${h.message ?? ''}`);
  } else if (h.status !== undefined) {
    let head = h.statusName ?? String(h.status);
    if (h.count !== undefined) head += ` after ${h.count} item${h.count === 1 ? '' : 's'}`;
    if (h.key !== undefined && (h.key !== '' || h.value !== '')) head += `  key=${quoteWord(h.key)}`;
    if (h.value !== undefined && (h.key !== '' || h.value !== '')) head += `  value=${quoteWord(h.value)}`;
    if (h.flags !== undefined) head += `  flags=0x${h.flags.toString(16)}`;
    if (h.step !== undefined) head += `  step=${h.step}  bytesSent=${h.bytesSent ?? 0}`;
    lines.push(head);
    for (const item of h.items ?? []) lines.push(`  ${quoteWord(item.key)} = ${quoteWord(item.value)}`);
    if (h.ip) {
      for (const [k, v] of Object.entries(h.ip))
        lines.push(`  ${k.padEnd(11)} ${typeof v === 'string' ? quoteWord(v) : String(v)}`);
    }
  } else if (h.state !== undefined) {
    lines.push(`driver ${h.state}`);
  } else {
    lines.push('done');
  }
  if (entry.failures.length > 0) for (const f of entry.failures) lines.push(`  FAILED: ${f}`);
  else if (entry.expect.length > 0) lines.push(`  ok: ${entry.expect.join(' ')}`);
  return lines;
}

/** The `help` text; a topic (`kvp`, `fault`, `expect`, a command) narrows it. */
export function helpText(topic = ''): string {
  const t = topic.trim();
  const expectHelp = [
    'Expectations: end a step with  expect CHECK…  (all must hold; the step fails otherwise):',
    `  STATUS              ${Object.values(HV_STATUS_NAMES).join(', ')}, or 0x…`,
    `  error=KIND          ${HOST_ERROR_KINDS.join(', ')}, or none (without error=, any host error fails the step)`,
    '  FIELD=VALUE         key, value, count, has (a key of kvp list), item.KEY, ip.ipAddr…, flags, step,',
    '                      bytesSent, state; also != >= <= > < (numbers) and ~= (regular expression)',
  ];
  const cmds = COMMANDS.filter((c) => t === '' || c.name === t || c.name.startsWith(`${t} `));
  if (t === 'expect') return expectHelp.join('\n');
  if (t !== '' && cmds.length === 0)
    return `no help on '${t}' (topics: kvp, vss, fcopy, fault, expect, or a command)`;
  const lines =
    t === '' ? ['Host commands (one step a line; ; separates steps, & runs one in the background):'] : [];
  for (const c of cmds) lines.push(`  ${c.usage}`, `      ${c.summary}`);
  if (t === '') {
    lines.push(
      '',
      `Pools: 0..4 or ${POOL_NAMES.join(', ')}.  Durations: 200ms, 10s, 2m.  Host steps take --timeout DURATION.`,
      '',
      ...expectHelp,
      '',
      'Console: help [TOPIC] · status (devices and drivers) · run FILE (a scenario) · save FILE (the recording) · quit',
    );
  }
  return lines.join('\n');
}

function statusText(shim: KernelShim): string {
  const lines: string[] = [];
  for (const [name, device] of shim.devices) {
    const state = HVUTIL_STATE_NAMES[device.driver.state] ?? String(device.driver.state);
    const ic = shim.host[name].ic;
    const nego = ic.negotiated
      ? `negotiated framework ${version(ic.negotiated.fwVersion)}, service ${version(ic.negotiated.srvVersion)}`
      : ic.connected
        ? 'not negotiated yet'
        : 'no channel';
    lines.push(
      `${name.padEnd(5)} ${device.exists ? device.path : `${device.path} (rescinded)`}: driver ${state}; host ${nego}`,
    );
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// the console

/** Words a TTY user can complete with Tab. */
function completer(line: string): [string[], string] {
  const words = [...new Set([...COMMANDS.map((c) => c.name), ...META])];
  const hits = words.filter((w) => w.startsWith(line));
  return [hits.length > 0 ? hits.map((h) => `${h} `) : [], line];
}

/**
 * Run the console until `quit` or the end of the input; resolves with the session's recording
 * (background steps awaited).
 */
export async function runConsole(opts: ConsoleOptions): Promise<Recording> {
  const input = opts.input ?? process.stdin;
  const output = opts.output ?? process.stdout;
  const terminal =
    opts.terminal ?? Boolean((input as { isTTY?: boolean }).isTTY && (output as { isTTY?: boolean }).isTTY);
  const echo = opts.echo ?? !terminal;
  const baseDir = opts.baseDir ?? process.cwd();
  const say = (text: string) => void output.write(`${text}\n`);
  const runner = new ScenarioRunner({
    ...opts,
    baseDir,
    onStep: (entry: RecordedStep, step: Step) => {
      const lines = formatEntry(entry);
      if (step.background) lines.unshift(`[done, line ${entry.line}] ${entry.text}`);
      say(lines.join('\n'));
    },
  });
  const rl = createInterface({
    input,
    ...(terminal ? { output, completer } : {}),
    terminal,
    historySize: 500,
  });
  rl.setPrompt(opts.prompt ?? 'hv-host> ');
  rl.on('SIGINT', () => rl.close());
  if (terminal) {
    say("Hyper-V host console: type 'help' for the commands, 'quit' to leave.");
    rl.prompt();
  }

  let lineNo = 0;
  let haltSaid = false;
  let pendingText = '';
  let pendingLine = 0;
  const runText = async (text: string, firstLine: number) => {
    const { steps, issues } = tryParseScenario(text, { firstLine });
    for (const i of issues) say(`error: line ${i.line}, column ${i.column}: ${i.message}`);
    if (issues.length > 0 && steps.length > 0) say('(nothing of it was run)');
    if (issues.length > 0) return;
    for (const s of steps) if (s.background) say(`started in the background: ${s.text}`);
    await runner.execute(steps);
  };

  for await (const raw of rl) {
    lineNo++;
    // a trailing backslash continues the line, as in a scenario file
    if (/(^|[^\\])(\\\\)*\\$/.test(raw)) {
      if (pendingText === '') pendingLine = lineNo;
      pendingText += `${raw}\n`;
      continue;
    }
    const first = pendingText === '' ? lineNo : pendingLine;
    const text = pendingText + raw;
    pendingText = '';
    const trimmed = text.trim();
    if (echo && trimmed !== '' && !trimmed.startsWith('#')) say(`> ${trimmed}`);
    const [word = '', ...rest] = trimmed.split(/\s+/);
    const arg = rest.join(' ');
    if (word === 'quit' || word === 'exit') break;
    try {
      if (trimmed === '' || trimmed.startsWith('#')) {
        // nothing
      } else if (word === 'help' || word === '?') {
        say(helpText(arg));
      } else if (word === 'status' && arg === '') {
        say(statusText(opts.shim));
      } else if ((word === 'run' || word === 'save') && arg !== '') {
        const file = isAbsolute(arg) ? arg : resolve(baseDir, arg);
        if (word === 'save') {
          await writeFile(file, recordingToJson(runner.recording()));
          say(`saved ${runner.recording().steps.length} steps to ${arg}`);
        } else {
          await runText(await readFile(file, 'utf8'), 1);
        }
      } else {
        await runText(text, first);
      }
    } catch (e) {
      say(`error: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (runner.halted && !haltSaid) {
      haltSaid = true;
      say('(stopped: a step failed and stopOnFailure is set; the steps that follow are skipped)');
    }
    if (terminal) rl.prompt();
  }
  rl.close();
  if (runner.running > 0) say(`waiting for ${runner.running} background step(s)…`);
  const recording = await runner.finish();
  const s = recording.summary;
  say(
    `${s.total} step${s.total === 1 ? '' : 's'}: ${s.passed} passed, ${s.failed} failed, ${s.skipped} skipped`,
  );
  return recording;
}
