/**
 * Prints one closing line, `tests: N passed, N failed, N skipped`, that CI reads, and turns any
 * skipped or todo test into a failure when CI=true: in CI every test must really run.
 */
import type { Reporter, TestModule } from 'vitest/node';

export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    const skippedNames: string[] = [];
    for (const mod of testModules) {
      for (const test of mod.children.allTests()) {
        const state = test.result().state;
        if (state === 'passed') passed++;
        else if (state === 'failed') failed++;
        else {
          skipped++;
          skippedNames.push(`${mod.moduleId}: ${test.fullName}`);
        }
      }
      if (mod.state() === 'failed' && mod.children.size === 0) failed++;
    }
    const ci = process.env.CI === 'true' || process.env.CI === '1';
    if (ci && skipped > 0) {
      for (const name of skippedNames)
        process.stdout.write(`skipped under CI (counts as a failure): ${name}\n`);
      failed += skipped;
      skipped = 0;
      process.exitCode = 1;
    }
    process.stdout.write(`\ntests: ${passed} passed, ${failed} failed, ${skipped} skipped\n`);
  }
}
