import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Two cores: end-to-end files spawn several node processes each.
    maxWorkers: 2,
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
