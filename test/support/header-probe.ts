/**
 * Compiles and runs a C program against the system's <linux/hyperv.h> (Debian: linux-libc-dev)
 * that prints sizeof/offsetof of every struct and field in our layout tables and the value of
 * every UAPI constant we define. Nothing here is taken from our own tables but the *names*.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Struct } from '../../uapi/layout.js';

export interface HeaderFacts {
  sizes: Map<string, number>;
  fields: Map<string, { offset: number; size: number }>;
  constants: Map<string, bigint>;
}

export const HEADER_PATH = '/usr/include/linux/hyperv.h';

export function probeSource(structs: readonly Struct[], constants: readonly string[]): string {
  const lines = [
    '#include <stddef.h>',
    '#include <stdio.h>',
    '#include <linux/hyperv.h>',
    'int main(void) {',
  ];
  for (const s of structs) {
    lines.push(`  printf("size ${s.name} %zu\\n", sizeof(struct ${s.name}));`);
    for (const f of Object.keys(s.fields)) {
      lines.push(
        `  printf("field ${s.name} ${f} %zu %zu\\n", offsetof(struct ${s.name}, ${f}), sizeof(((struct ${s.name} *)0)->${f}));`,
      );
    }
  }
  for (const c of constants) lines.push(`  printf("const ${c} %lld\\n", (long long)(${c}));`);
  lines.push('  return 0;', '}');
  return lines.join('\n') + '\n';
}

export function probeHeader(structs: readonly Struct[], constants: readonly string[]): HeaderFacts {
  const dir = mkdtempSync(join(tmpdir(), 'hv-uapi-'));
  try {
    const src = join(dir, 'probe.c');
    const exe = join(dir, 'probe');
    writeFileSync(src, probeSource(structs, constants));
    execFileSync('cc', ['-std=gnu11', '-Wall', '-Werror', '-o', exe, src], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out = execFileSync(exe, { encoding: 'utf8' });
    const facts: HeaderFacts = { sizes: new Map(), fields: new Map(), constants: new Map() };
    for (const line of out.trim().split('\n')) {
      const parts = line.split(' ');
      if (parts[0] === 'size') facts.sizes.set(parts[1]!, Number(parts[2]));
      else if (parts[0] === 'field') {
        facts.fields.set(`${parts[1]}.${parts[2]}`, { offset: Number(parts[3]), size: Number(parts[4]) });
      } else if (parts[0] === 'const') facts.constants.set(parts[1]!, BigInt(parts[2]!));
    }
    return facts;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Every difference between our tables and the header, one line each (empty when they agree). */
export function layoutMismatches(structs: readonly Struct[], facts: HeaderFacts): string[] {
  const out: string[] = [];
  for (const s of structs) {
    const size = facts.sizes.get(s.name);
    if (size !== s.size) out.push(`sizeof(struct ${s.name}): ours ${s.size}, header ${size}`);
    for (const [name, f] of Object.entries(s.fields)) {
      const real = facts.fields.get(`${s.name}.${name}`);
      if (!real || real.offset !== f.offset || real.size !== f.size) {
        out.push(
          `struct ${s.name}.${name}: ours @${f.offset}+${f.size}, header @${real?.offset}+${real?.size}`,
        );
      }
    }
  }
  return out;
}
