/** Process helpers for the tests and their host scripts, from /proc: children, names, states. */
import { readFileSync, readdirSync } from 'node:fs';

/**
 * The fields of /proc/PID/stat after the command's closing parenthesis (index 0 is the state,
 * field 3 of proc(5); utime is index 11, stime 12), or undefined once the process is gone.
 */
export function statFields(pid: number): string[] | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** Whether `pid` exists and is not a zombie (an orphan may wait for a slow init to reap it). */
export function isRunning(pid: number): boolean {
  const state = statFields(pid)?.[0];
  return state !== undefined && state !== 'Z';
}

/** The pids whose parent is `pid`. */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (/^\d+$/.test(d) && Number(statFields(Number(d))?.[1]) === pid) out.push(Number(d));
  }
  return out;
}

/** The process's name as pgrep sees it (its comm), or '' once it is gone. */
export function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}
