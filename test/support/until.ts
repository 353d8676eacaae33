/** Wait until `cond()` holds, polling every `everyMs`; fail after `ms` naming what was awaited. */
export async function until(
  cond: () => boolean,
  ms = 5000,
  what = 'a condition',
  everyMs = 5,
): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
