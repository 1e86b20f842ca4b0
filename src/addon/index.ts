/**
 * The project's native addon, one module per C file of native/ (see
 * load.ts for how it is loaded): this barrel re-exports them all.
 *
 *  - load.ts             native/addon_init.c: loadNative, nativeWith, NATIVE_ADDON_PATH, NativeEngines
 *  - pattern-engines.ts  native/pattern_engines.c: glibc regex and PCRE2 (ENGINE, REG, PCRE2)
 *  - compile-pool.ts     native/compile_pool.c: compile jobs, patternsScan, pattern batches
 *  - ruleset.ts          native/ruleset.c: rule sets (RULE_OP, ruleSetFromBatch, ruleSetExec)
 *  - exec-pool.ts        native/exec_pool.c: evaluations on the addon's threads
 *  - kv.ts, sqlite.ts, maillog.ts, fd.ts, sockset.ts, cdb.ts, notify.ts: native/kv.c, sqlite.c, maillog.c, fd.c,
 *    sockset.c, cdb.c, notify.c
 */
export * from './load.js';
export * from './pattern-engines.js';
export * from './compile-pool.js';
export * from './ruleset.js';
export * from './exec-pool.js';
export * from './kv.js';
export * from './sqlite.js';
export * from './maillog.js';
export * from './fd.js';
export * from './sockset.js';
export * from './cdb.js';
export * from './notify.js';
