import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // One throwaway Redis and PostgreSQL for the run (REDIS_URL / DATABASE_URL in every worker).
    globalSetup: ['test/setup/servers.ts'],
    setupFiles: ['test/setup/fast-check.ts'],
  },
});
