/**
 * The SQL connection pool with a fake driver: the bound, the FIFO queue and
 * its deadline, Postfix's failover order and back-off, dead connections.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { POOL_RETRY, SqlPool, poolSettings, setClock, sharedPool, sharedPoolCount, type PoolDriver, type PoolHost } from '../../src/tables/dbcommon/pool.js';

interface FakeConn {
  id: number;
  host: string;
  lose(): void;
}

class FakeDriver implements PoolDriver<string, FakeConn> {
  down = new Set<string>();
  connects: string[] = [];
  open = 0;
  maxOpen = 0;
  private n = 0;
  connect(h: PoolHost<string>, onLost: () => void): Promise<FakeConn> {
    this.connects.push(h.label);
    if (this.down.has(h.label)) return Promise.reject(new Error(`connect to fake server ${h.label}: refused`));
    this.open++;
    this.maxOpen = Math.max(this.maxOpen, this.open);
    return Promise.resolve({ id: ++this.n, host: h.label, lose: onLost });
  }
  close(_conn: FakeConn): void {
    this.open--;
  }
}

const host = (label: string, kind: 'unix' | 'inet' | 'uri' = 'inet'): PoolHost<string> => ({ label, kind, target: label });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const opts = { maxConnections: 3, retryInterval: 60, idleInterval: 60, connectTimeoutMs: 1000 };

describe('SQL pool', () => {
  let now = 1_000_000;
  afterEach(() => setClock(() => Math.floor(Date.now() / 1000)));

  it('never opens more than maxConnections; waiters are served in FIFO order', async () => {
    const d = new FakeDriver();
    const pool = new SqlPool([host('a')], d, opts);
    const order: number[] = [];
    const warnings: string[] = [];
    const jobs = Array.from({ length: 100 }, (_, i) =>
      pool.use(async () => {
        order.push(i);
        await sleep(2);
        return { kind: 'ok', value: i };
      }, { deadline: Date.now() + 10_000, warn: (t) => warnings.push(t) }),
    );
    const res = await Promise.all(jobs);
    assert.deepEqual(res, Array.from({ length: 100 }, (_, i) => i));
    assert.equal(d.maxOpen, 3);
    assert.equal(pool.stats().peak, 3);
    // the first three start at once, the rest in arrival order
    assert.deepEqual(order.slice(3), Array.from({ length: 97 }, (_, i) => i + 3));
    assert.deepEqual(warnings, []);
    pool.close();
  });

  it('answers RETRY when the wait exceeds the deadline', async () => {
    const d = new FakeDriver();
    const pool = new SqlPool([host('a')], d, { ...opts, maxConnections: 1 });
    const warnings: string[] = [];
    const slow = pool.use(async () => {
      await sleep(300);
      return { kind: 'ok', value: 'slow' };
    }, { deadline: Date.now() + 5000, warn: (t) => warnings.push(t) });
    const waiting = pool.use(async () => ({ kind: 'ok', value: 'late' }), { deadline: Date.now() + 50, warn: (t) => warnings.push(t) });
    assert.equal(await waiting, POOL_RETRY);
    assert.equal(await slow, 'slow');
    assert.match(warnings[0]!, /timed out waiting for a database connection/);
    pool.close();
  });

  it('prefers UNIX hosts, fails over, and leaves a failed host alone for retry_interval', async () => {
    setClock(() => now);
    const d = new FakeDriver();
    const pool = new SqlPool([host('inet1'), host('sock', 'unix'), host('uri', 'uri')], d, { ...opts, maxConnections: 1 });
    const warn = () => undefined;
    const use = () => pool.use(async (c: FakeConn) => ({ kind: 'ok', value: c.host }), { deadline: Date.now() + 1000, warn });
    assert.equal(await use(), 'sock');
    d.down.add('sock');
    // a query failure takes the host down; the next host is tried at once
    const r = await pool.use(async (c: FakeConn) => (c.host === 'sock' ? { kind: 'host-error', message: 'gone' } : { kind: 'ok', value: c.host }), { deadline: Date.now() + 1000, warn });
    assert.equal(r, 'inet1');
    d.connects.length = 0;
    d.down.delete('sock');
    // sock stays blocked while ts >= now, even though inet1 goes idle and closes
    now += 60;
    assert.equal(await use(), 'inet1');
    assert.deepEqual(d.connects, []);
    now += 1;
    pool.close();
  });

  it("hostOrder 'listed' (ldap): the first usable host in the order written, whatever its kind; the next one only while it is down", async () => {
    setClock(() => now);
    const d = new FakeDriver();
    const pool = new SqlPool([host('first'), host('sock', 'unix'), host('third')], d, { ...opts, retryInterval: 0, hostOrder: 'listed' });
    const warn = () => undefined;
    const use = () => pool.use(async (c: FakeConn) => ({ kind: 'ok', value: c.host }), { deadline: Date.now() + 1000, warn });
    // many lookups at once: every connection goes to the first host, none to the UNIX socket a random order would prefer
    assert.deepEqual(await Promise.all([use(), use(), use(), use(), use()]), ['first', 'first', 'first', 'first', 'first']);
    assert.deepEqual([...new Set(d.connects)], ['first']);
    // the first host fails: the next one written takes over
    d.down.add('first');
    const r = await pool.use(async (c: FakeConn) => (c.host === 'first' ? { kind: 'host-error', message: 'gone' } : { kind: 'ok', value: c.host }), { deadline: Date.now() + 1000, warn });
    assert.equal(r, 'sock');
    pool.close();
  });

  it('answers RETRY at once when every host is down, and recovers after retry_interval', async () => {
    setClock(() => now);
    const d = new FakeDriver();
    const pool = new SqlPool([host('a'), host('b')], d, { ...opts, retryInterval: 5 });
    d.down.add('a');
    d.down.add('b');
    const warnings: string[] = [];
    const use = () => pool.use(async (c: FakeConn) => ({ kind: 'ok', value: c.host }), { deadline: Date.now() + 1000, warn: (t) => warnings.push(t) });
    assert.equal(await use(), POOL_RETRY);
    assert.equal(warnings.length, 2);
    d.connects.length = 0;
    assert.equal(await use(), POOL_RETRY);
    assert.deepEqual(d.connects, [], 'no connect attempt while backing off');
    d.down.clear();
    now += 5;
    assert.equal(await use(), POOL_RETRY, 'ts >= now: still blocked');
    now += 1;
    assert.match(String(await use()), /^[ab]$/);
    pool.close();
  });

  it('lists a single host twice: one failure does not block it', async () => {
    setClock(() => now);
    const d = new FakeDriver();
    const pool = new SqlPool([host('only')], d, { ...opts, maxConnections: 1 });
    let fail = true;
    const r = await pool.use(async (c: FakeConn) => {
      if (fail) {
        fail = false;
        return { kind: 'host-error', message: 'server has gone away' };
      }
      return { kind: 'ok', value: c.id };
    }, { deadline: Date.now() + 1000, warn: () => undefined });
    assert.equal(r, 2);
    pool.close();
  });

  it('replaces connections that die while idle, without marking the host down', async () => {
    const d = new FakeDriver();
    const pool = new SqlPool([host('a'), host('b')], d, opts);
    let conn: FakeConn | undefined;
    await pool.use(async (c: FakeConn) => {
      conn = c;
      return { kind: 'ok', value: 1 };
    }, { deadline: Date.now() + 1000, warn: () => undefined });
    conn!.lose();
    assert.equal(pool.stats().open, 0);
    const h = conn!.host;
    const r = await pool.use(async (c: FakeConn) => ({ kind: 'ok', value: c }), { deadline: Date.now() + 1000, warn: () => undefined });
    assert.ok(r !== POOL_RETRY);
    assert.notEqual((r as FakeConn).id, conn!.id);
    assert.ok(pool.stats().hosts.every((x) => x.state !== 'fail'), `${h}: no host marked down`);
    pool.close();
  });

  it('a query that never answers ends at the deadline with RETRY; its host is taken out, the next lookup goes elsewhere', async (t) => {
    t.mock.method(Math, 'random', () => 0); // host a is picked first
    const d = new FakeDriver();
    const pool = new SqlPool([host('a'), host('b')], d, opts);
    const warnings: string[] = [];
    const hang = (c: FakeConn) => (c.host === 'a' ? new Promise<never>(() => undefined) : Promise.resolve({ kind: 'ok' as const, value: c.host }));
    const started = Date.now();
    const r = await pool.use(hang, { deadline: Date.now() + 1500, warn: (w) => warnings.push(w) });
    const took = Date.now() - started;
    assert.equal(r, POOL_RETRY);
    assert.deepEqual(warnings, ['a: query timed out']);
    assert.ok(took >= 1400 && took < 2500, `timed out after ${took} ms`);
    assert.equal(pool.stats().hosts.find((h) => h.label === 'a')!.state, 'fail');
    assert.equal(d.open, 0, 'the hung connection is closed');
    assert.equal(await pool.use(hang, { deadline: Date.now() + 1500, warn: (w) => warnings.push(w) }), 'b');
    pool.close();
  });

  it('a query gets at least a second, even when the deadline has passed', async () => {
    const d = new FakeDriver();
    const pool = new SqlPool([host('a')], d, { ...opts, maxConnections: 1 });
    const warnings: string[] = [];
    const started = Date.now();
    const r = await pool.use(() => new Promise<never>(() => undefined), { deadline: Date.now() + 10, warn: (t) => warnings.push(t) });
    const took = Date.now() - started;
    assert.equal(r, POOL_RETRY);
    assert.deepEqual(warnings, ['a: query timed out']);
    assert.ok(took >= 950 && took < 2000, `timed out after ${took} ms`);
    assert.equal(d.open, 0, 'the hung connection is closed');
    pool.close();
  });

  it('closes a connection idle for idle_interval', async () => {
    const d = new FakeDriver();
    const pool = new SqlPool([host('a')], d, { ...opts, idleInterval: 1 });
    await pool.use(async (c: FakeConn) => ({ kind: 'ok', value: c.id }), { deadline: Date.now() + 1000, warn: () => undefined });
    await sleep(700);
    assert.equal(pool.stats().idle, 1, 'still open before idle_interval');
    await sleep(600);
    assert.equal(pool.stats().open, 0);
    assert.equal(d.open, 0);
    pool.close();
  });

  it('one client at a time stays on the most recently used connection (the others idle out)', async () => {
    const d = new FakeDriver();
    const pool = new SqlPool([host('a')], d, opts);
    const uo = { deadline: Date.now() + 5000, warn: () => {} };
    await Promise.all(Array.from({ length: 3 }, () => pool.use(async () => { await sleep(5); return { kind: 'ok', value: 0 }; }, uo)));
    assert.equal(pool.stats().idle, 3);
    const used = new Set<number>();
    for (let i = 0; i < 30; i++) await pool.use(async (c) => { used.add(c.id); return { kind: 'ok', value: i }; }, uo);
    assert.equal(used.size, 1);
    pool.close();
  });

  it('a "retry" result fails only that lookup', async () => {
    const d = new FakeDriver();
    const pool = new SqlPool([host('a')], d, opts);
    const warnings: string[] = [];
    const r = await pool.use(async () => ({ kind: 'retry', message: 'bad key' }), { deadline: Date.now() + 1000, warn: (t) => warnings.push(t) });
    assert.equal(r, POOL_RETRY);
    assert.deepEqual(warnings, ['bad key']);
    assert.equal(pool.stats().idle, 1);
    pool.close();
  });

  it('tables share the bound but keep their own host states', async () => {
    setClock(() => now);
    const d = new FakeDriver();
    const pool = new SqlPool([host('a'), host('b')], d, { ...opts, maxConnections: 2 });
    const va = pool.view(60);
    const vb = pool.view(60);
    const warn = () => undefined;
    // table A's query fails on whichever host it gets: that host is down for A only
    let failedOn = '';
    const ra = await va.use(async (c: FakeConn) => {
      if (!failedOn) {
        failedOn = c.host;
        return { kind: 'host-error', message: 'syntax error' };
      }
      return { kind: 'ok', value: c.host };
    }, { deadline: Date.now() + 1000, warn });
    assert.notEqual(ra, failedOn);
    assert.equal(pool.stats(va).hosts.find((h) => h.label === failedOn)!.state, 'fail');
    assert.notEqual(pool.stats(vb).hosts.find((h) => h.label === failedOn)!.state, 'fail');
    // B may still use that host; many lookups from both never exceed the bound
    const jobs: Promise<unknown>[] = [];
    for (let i = 0; i < 50; i++) {
      for (const v of [va, vb]) {
        jobs.push(v.use(async (c: FakeConn) => {
          await sleep(1);
          return { kind: 'ok', value: c.host };
        }, { deadline: Date.now() + 5000, warn }));
      }
    }
    const res = await Promise.all(jobs);
    assert.ok(res.every((r) => r !== POOL_RETRY));
    assert.ok(res.filter((_, i) => i % 2 === 0).every((h) => h !== failedOn), 'A avoids the host it saw fail');
    assert.ok(d.maxOpen <= 2, `at most 2 connections (${d.maxOpen})`);
    pool.close();
  });

  it('a full pool of connections a table may not use is made room in, not waited for', async () => {
    setClock(() => now);
    const d = new FakeDriver();
    const pool = new SqlPool([host('a', 'unix'), host('b')], d, { ...opts, maxConnections: 1 });
    const va = pool.view(60);
    const vb = pool.view(60);
    const warn = () => undefined;
    // B leaves an idle connection to the UNIX host a; A fails on a
    assert.equal(await vb.use(async (c: FakeConn) => ({ kind: 'ok', value: c.host }), { deadline: Date.now() + 1000, warn }), 'a');
    const r = await va.use(async (c: FakeConn) => (c.host === 'a' ? { kind: 'host-error', message: 'x' } : { kind: 'ok', value: c.host }), { deadline: Date.now() + 1000, warn });
    assert.equal(r, 'b');
    assert.equal(await vb.use(async (c: FakeConn) => ({ kind: 'ok', value: c.host }), { deadline: Date.now() + 1000, warn }), 'b', 'B uses the idle connection it may use');
    assert.equal(d.maxOpen, 1);
    pool.close();
  });

  it('shares one pool per configuration key and closes it with its last user', () => {
    const before = sharedPoolCount();
    const d = new FakeDriver();
    const a = sharedPool('k1', () => new SqlPool([host('a')], d, opts));
    const b = sharedPool('k1', () => new SqlPool([host('a')], d, opts));
    const c = sharedPool('k2', () => new SqlPool([host('a')], d, opts));
    assert.equal(a.pool, b.pool);
    assert.notEqual(a.pool, c.pool);
    assert.equal(sharedPoolCount(), before + 2);
    a.release();
    a.release();
    assert.equal(sharedPoolCount(), before + 2);
    b.release();
    c.release();
    assert.equal(sharedPoolCount(), before);
  });

  it('reads its main.cf settings', () => {
    const warnings: string[] = [];
    const p = (m: Record<string, string>) => (n: string) => m[n];
    assert.deepEqual(poolSettings(p({}), (t) => warnings.push(t)), { maxConnections: 4, timeoutMs: 10_000, pipeline: 16 });
    assert.deepEqual(
      poolSettings(p({ proxymapd_sql_max_connections: '7', proxymapd_sql_timeout: '2m', proxymapd_sql_pipeline: '1' }), (t) => warnings.push(t)),
      { maxConnections: 7, timeoutMs: 120_000, pipeline: 1 },
    );
    assert.equal(warnings.length, 0);
    assert.deepEqual(
      poolSettings(p({ proxymapd_sql_max_connections: '0', proxymapd_sql_timeout: 'x', proxymapd_sql_pipeline: '0' }), (t) => warnings.push(t)),
      { maxConnections: 4, timeoutMs: 10_000, pipeline: 16 },
    );
    assert.equal(warnings.length, 3);
  });
});

describe('SQL pool pipeline', () => {
  /** A fake wire: queries on one connection are answered in the order sent, each after its own delay. */
  class Wire {
    private tail = Promise.resolve();
    inFlight = 0;
    maxInFlight = 0;
    run<R>(ms: number | 'never', value: R): Promise<R> {
      this.inFlight++;
      this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
      const p = this.tail.then(() => (ms === 'never' ? new Promise<never>(() => {}) : sleep(ms))).then(() => {
        this.inFlight--;
        return value;
      });
      this.tail = p.then(() => undefined);
      return p;
    }
  }
  const wires = new Map<number, Wire>();
  const wire = (c: FakeConn) => wires.get(c.id) ?? (wires.set(c.id, new Wire()), wires.get(c.id)!);
  const popts = { ...opts, maxConnections: 2, pipeline: 4 };

  it('opens every connection first, then puts at most `pipeline` queries on each; the rest wait their turn', async () => {
    const d = new FakeDriver();
    const pool = new SqlPool([host('a')], d, popts);
    const warnings: string[] = [];
    let seen = 0;
    const jobs = Array.from({ length: 40 }, (_, i) =>
      pool.use(async (c) => {
        seen = Math.max(seen, pool.stats().waiting);
        return { kind: 'ok', value: await wire(c).run(1, i) };
      }, { deadline: Date.now() + 10_000, warn: (t) => warnings.push(t) }),
    );
    assert.deepEqual(await Promise.all(jobs), Array.from({ length: 40 }, (_, i) => i));
    assert.equal(d.maxOpen, 2);
    const used = [...wires.values()].filter((w) => w.maxInFlight > 0);
    assert.equal(used.length, 2);
    for (const w of used) assert.equal(w.maxInFlight, 4);
    assert.ok(seen > 0, 'lookups beyond 2 x 4 waited');
    assert.deepEqual(warnings, []);
    pool.close();
    wires.clear();
  });

  it('pipeline 1 is one query per connection', async () => {
    const d = new FakeDriver();
    const pool = new SqlPool([host('a')], d, { ...popts, pipeline: 1 });
    const jobs = Array.from({ length: 10 }, (_, i) =>
      pool.use(async (c) => ({ kind: 'ok', value: await wire(c).run(1, i) }), { deadline: Date.now() + 10_000, warn: () => {} }),
    );
    await Promise.all(jobs);
    for (const w of wires.values()) assert.equal(w.maxInFlight, 1);
    pool.close();
    wires.clear();
  });

  /** Runs on c until it is closed (then fails as a lost connection would), or forever. */
  const killable = new Map<number, (() => void)[]>();
  const untilClosed = (c: FakeConn) => new Promise<never>((_, reject) => {
    killable.set(c.id, [...(killable.get(c.id) ?? []), () => reject(new Error(`conn ${c.id}: Lost connection`))]);
  });
  class KillDriver extends FakeDriver {
    closed: number[] = [];
    override close(c: FakeConn): void {
      super.close(c);
      this.closed.push(c.id);
      for (const k of killable.get(c.id) ?? []) k();
    }
  }

  it('a query that hangs closes its connection: the queries behind it go to another host', async () => {
    const d = new KillDriver();
    const pool = new SqlPool([host('a', 'unix'), host('b')], d, { ...popts, maxConnections: 1 });
    const warnings: string[] = [];
    const t0 = Date.now();
    const hung = pool.use(async (c) => {
      assert.equal(c.host, 'a');
      return untilClosed(c);
    }, { deadline: Date.now() + 200, warn: (t) => warnings.push(t) });
    await sleep(10);
    // behind the hung query on the same connection: they fail with it and are answered by the other host
    const where: string[] = [];
    const behind = Array.from({ length: 3 }, (_, i) =>
      pool.use(async (c) => {
        where.push(c.host);
        if (c.host === 'a') return untilClosed(c);
        return { kind: 'ok', value: await wire(c).run(1, i) };
      }, { deadline: Date.now() + 5000, warn: (t) => warnings.push(t) }),
    );
    assert.equal(await hung, POOL_RETRY);
    const got = await Promise.all(behind);
    assert.deepEqual(got, [0, 1, 2]);
    assert.ok(Date.now() - t0 >= 900, 'the hung query had its second');
    assert.deepEqual(where, ['a', 'a', 'a', 'b', 'b', 'b'], 'pipelined behind the hung query, then failed over');
    assert.deepEqual(d.closed, [1]);
    assert.match(warnings[0]!, /a: query timed out/);
    assert.equal(warnings.filter((w) => /Lost connection/.test(w)).length, 3);
    pool.close();
    wires.clear();
  });

  it('after a failed query the others on its connection finish, then it is closed', async () => {
    const d = new KillDriver();
    const pool = new SqlPool([host('a'), host('b')], d, { ...popts, maxConnections: 1 });
    const warnings: string[] = [];
    const uo = () => ({ deadline: Date.now() + 5000, warn: (t: string) => warnings.push(t) });
    const first = pool.use(async (c) => {
      await wire(c).run(20, null);
      return c.id === 1 ? { kind: 'host-error', message: 'query failed: boom' } : { kind: 'ok', value: 'again' };
    }, uo());
    await sleep(5);
    const others = Array.from({ length: 3 }, (_, i) =>
      pool.use(async (c) => ({ kind: 'ok', value: `${c.id}:${await wire(c).run(5, i)}` }), uo()),
    );
    assert.deepEqual(await Promise.all(others), ['1:0', '1:1', '1:2']);
    assert.equal(await first, 'again');
    assert.deepEqual(warnings, ['query failed: boom']);
    assert.deepEqual(d.closed, [1], 'the failed connection was closed once drained');
    assert.equal(d.open, 1);
    pool.close();
    wires.clear();
  });
});

describe('SQL open warm-up', () => {
  it('opens and closes synthetic tables without connecting, leaving no pool and no file behind', async () => {
    const { mysqlType } = await import('../../src/tables/sql/mysql.js');
    const { pgsqlType } = await import('../../src/tables/sql/pgsql.js');
    const { ldapType } = await import('../../src/tables/network/ldap.js');
    const os = await import('node:os');
    const fs = await import('node:fs');
    const before = sharedPoolCount();
    const tmpBefore = fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('proxymapd-warm-')).length;
    for (const t of [mysqlType, pgsqlType, ldapType]) await t.warmUp!(new Set([t.name]));
    assert.equal(sharedPoolCount(), before);
    assert.equal(fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('proxymapd-warm-')).length, tmpBefore);
  });
});
