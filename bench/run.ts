/**
 * Benchmark runner: `npm run bench -- <suite> [<suite>...]` runs bench/<suite>.ts.
 * Every suite measures Lockstep against an anchor measured in the same run and prints ratios.
 */
const suites = process.argv.slice(2).filter((a) => !a.startsWith('-'));
if (suites.length === 0) {
  console.error(
    'usage: npm run bench -- <suite...>   (suites: sync, store, redis, postgres, sqlite, named-locks-redis, named-locks-postgres, rate-limits, ...)',
  );
  process.exit(2);
}
for (const name of suites) {
  if (!/^[a-z0-9-]+$/.test(name)) {
    console.error(`unknown bench suite ${JSON.stringify(name)}`);
    process.exit(2);
  }
  const mod = (await import(`./${name}.ts`)) as { default: () => Promise<void> };
  await mod.default();
}
