/**
 * The one rule for tests that need something outside the project (Postfix,
 * a database server, root): outside CI they skip, naming what is missing;
 * in CI (CI=true) nothing may be skipped, so a missing dependency fails the
 * test file at once.
 */
export function skipUnlessPresent(missing: string | false | undefined | null): string | false {
  if (!missing) return false;
  if (process.env.CI === 'true') throw new Error(`${missing}: required in CI`);
  return missing;
}
