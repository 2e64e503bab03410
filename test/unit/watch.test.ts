// The watch's rules on scripted behaviour with a manual clock: each rule fires on the misbehaviour it
// names, and a normal day's work (a few hundred ordinary requests) raises nothing.
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../broker/core/clock';
import type { IdSource } from '../../broker/core/clock';
import { DEFAULT_WATCH_CONFIG, Watch } from '../../broker/core/watch';
import type { Finding } from '../../broker/core/watch';

function ids(): IdSource {
  let n = 0;
  return { id: (p) => `${p}_${++n}`, secret: (p) => `${p}_s${++n}` };
}

const ID = 'inv_a';
const AGENT = 'agt_1';

describe('Watch', () => {
  it('raises nothing for a normal day of work', () => {
    const clock = new ManualClock();
    const w = new Watch(DEFAULT_WATCH_CONFIG, clock, ids());
    const granted = ['repo:read:acme/*', 'repo:write:acme/web', 'http:GET:https://api.github.com/repos/acme/**'];
    const asks = [['repo:read:acme/web'], ['repo:write:acme/web'], ['http:GET:https://api.github.com/repos/acme/web/issues'], ['repo:read:acme/api']];
    const findings: Finding[] = [];
    for (let i = 0; i < 400; i++) {
      clock.advance(30_000 + (i % 7) * 20_000); // every half minute to two and a half minutes
      findings.push(...w.onRequest(ID, AGENT, asks[i % asks.length]!, granted));
      for (let m = 0; m < 20; m++) {
        clock.advance(100);
        findings.push(...w.onMint(ID, AGENT));
      }
      findings.push(...w.onPending(ID, AGENT, i % 2));
    }
    expect(findings).toEqual([]);
  });

  it('scope creep: a scope never granted to this identity before, with the new scope as evidence', () => {
    const w = new Watch(DEFAULT_WATCH_CONFIG, new ManualClock(), ids());
    expect(w.onRequest(ID, AGENT, ['repo:read:acme/web'], ['repo:read:acme/*'])).toEqual([]);
    const f = w.onRequest(ID, AGENT, ['repo:read:acme/web', 'repo:admin:acme/web'], ['repo:read:acme/*']);
    expect(f).toEqual([
      { id: 'fnd_1', kind: 'scope-creep', identity: ID, agentId: AGENT, at: Date.UTC(2026, 0, 1), action: 'warn', evidence: { newScopes: ['repo:admin:acme/web'], grantedBefore: 1 } },
    ]);
    // Open findings are not raised twice; after a dismissal they can be.
    expect(w.onRequest(ID, AGENT, ['repo:admin:acme/web'], ['repo:read:acme/*'])).toEqual([]);
    expect(w.dismiss('fnd_1')?.kind).toBe('scope-creep');
    expect(w.onRequest(ID, AGENT, ['repo:admin:acme/web'], ['repo:read:acme/*']).map((x) => x.kind)).toEqual(['scope-creep']);
  });

  it('a first request of a new identity is not creep: there is no history to creep from', () => {
    const w = new Watch(DEFAULT_WATCH_CONFIG, new ManualClock(), ids());
    expect(w.onRequest(ID, AGENT, ['repo:admin:acme/web'], [])).toEqual([]);
  });

  it('scope burst: five new scopes within a minute', () => {
    const clock = new ManualClock();
    const w = new Watch(DEFAULT_WATCH_CONFIG, clock, ids());
    const kinds: string[] = [];
    for (let i = 0; i < 5; i++) {
      clock.advance(5_000);
      kinds.push(...w.onRequest(ID, AGENT, [`repo:read:other/r${i}`], ['repo:read:acme/*']).map((f) => f.kind));
    }
    expect(kinds).toEqual(['scope-creep', 'scope-burst']);
    expect(w.openFindings().find((f) => f.kind === 'scope-burst')?.evidence).toEqual({ newScopes: 5, windowMs: 60_000 });
  });

  it('request burst: far above the minimum with no history, and the default action blocks', () => {
    const clock = new ManualClock();
    const w = new Watch(DEFAULT_WATCH_CONFIG, clock, ids());
    const out: Finding[] = [];
    for (let i = 0; i < 31; i++) {
      clock.advance(100);
      out.push(...w.onRequest(ID, AGENT, ['repo:read:acme/web'], ['repo:read:acme/web']));
    }
    expect(out.map((f) => [f.kind, f.action, f.evidence])).toEqual([['request-burst', 'block', { requests: 31, windowMs: 10_000, baselinePerWindow: 3 }]]);
  });

  it('mint burst is relative to the identity own rate: a doubling is normal, a tenfold jump is not', () => {
    const clock = new ManualClock();
    const w = new Watch(DEFAULT_WATCH_CONFIG, clock, ids());
    const out: Finding[] = [];
    const run = (perSecond: number, seconds: number) => {
      for (let i = 0; i < perSecond * seconds; i++) {
        clock.advance(1000 / perSecond);
        out.push(...w.onMint(ID, AGENT));
      }
    };
    run(50, 300); // five minutes at 50/s: below the minimum of 600 per 10 s
    run(100, 60); // a minute at twice that: above the minimum, but only 2x its own rate
    expect(out).toEqual([]);
    run(2000, 12); // twenty times its rate
    expect(out.map((f) => f.kind)).toEqual(['mint-burst']);
  });

  it('pending flood, bad token and process mismatch carry their evidence', () => {
    const w = new Watch(DEFAULT_WATCH_CONFIG, new ManualClock(), ids());
    expect(w.onPending(ID, AGENT, 2)).toEqual([]);
    expect(w.onPending(ID, AGENT, 3).map((f) => f.evidence)).toEqual([{ pending: 3 }]);
    expect(w.onBadToken(ID, AGENT, 'WRIT_TOKEN_REVOKED', 'tok_1').map((f) => f.evidence)).toEqual([{ code: 'WRIT_TOKEN_REVOKED', jti: 'tok_1' }]);
    expect(w.onProcessMismatch(ID, AGENT, { pid: 10, exe: '/usr/bin/node' }, { pid: 11, exe: '/usr/bin/curl' }).map((f) => f.evidence)).toEqual([
      { expected: { pid: 10, exe: '/usr/bin/node' }, actual: { pid: 11, exe: '/usr/bin/curl' } },
    ]);
  });
});

describe('Watch: whose token is this', () => {
  it('bad-token findings stay apart per code: a leaked token is not hidden behind an open expired-token finding', () => {
    const w = new Watch(DEFAULT_WATCH_CONFIG, new ManualClock(), ids());
    expect(w.onBadToken(ID, AGENT, 'WRIT_TOKEN_EXPIRED', 'jti_1').map((f) => f.evidence)).toEqual([{ code: 'WRIT_TOKEN_EXPIRED', jti: 'jti_1' }]);
    expect(w.onBadToken(ID, AGENT, 'WRIT_TOKEN_EXPIRED', 'jti_2')).toEqual([]);
    const presenter = { agentIds: ['agt_9'], pid: 4242, exe: '/usr/bin/node' };
    expect(w.onBadToken(ID, AGENT, 'WRIT_TOKEN_NOT_YOURS', 'jti_3', { via: 'exchange', presenter }).map((f) => [f.kind, f.action, f.evidence])).toEqual([
      ['bad-token', 'warn', { code: 'WRIT_TOKEN_NOT_YOURS', jti: 'jti_3', via: 'exchange', presenter }],
    ]);
    expect(w.openFindings()).toHaveLength(2);
  });

  it('process-mismatch: expected and actual process with the jti, warn by default, once per identity until dismissed', () => {
    const w = new Watch(DEFAULT_WATCH_CONFIG, new ManualClock(), ids());
    const f = w.onProcessMismatch(ID, AGENT, { pid: 10, exe: '/a' }, { pid: 20 }, { jti: 'jti_1', via: 'proxy' });
    expect(f.map((x) => [x.kind, x.action, x.identity, x.agentId, x.evidence])).toEqual([
      ['process-mismatch', 'warn', ID, AGENT, { expected: { pid: 10, exe: '/a' }, actual: { pid: 20 }, jti: 'jti_1', via: 'proxy' }],
    ]);
    expect(w.onProcessMismatch(ID, AGENT, { pid: 10 }, { pid: 30 }, { jti: 'jti_2', via: 'proxy' })).toEqual([]);
    w.dismiss(f[0]!.id);
    expect(w.onProcessMismatch(ID, AGENT, { pid: 10 }, { pid: 30 }, { jti: 'jti_2', via: 'proxy' })).toHaveLength(1);
  });
});

describe('Watch: bounded state', () => {
  it('drops the rate history of identities gone quiet past the baseline window; a quiet one that returns starts afresh', () => {
    const clock = new ManualClock();
    const w = new Watch(DEFAULT_WATCH_CONFIG, clock, ids());
    const seen: number[] = [];
    // 3,000 identities, one request and one mint each, one a second: about 600 fall within the 10-minute window.
    for (let i = 0; i < 3000; i++) {
      clock.advance(1000);
      w.onRequest(`inv_${i}`, AGENT, ['repo:read:a'], []);
      w.onMint(`inv_${i}`, AGENT);
      seen.push(w.trackedSeries());
    }
    expect(Math.max(...seen)).toBeLessThanOrEqual(2 * (601 + 256));
    expect(seen.at(-1)).toBeGreaterThanOrEqual(2 * 600);
    // The first identity's history was dropped; it is judged as a new identity: 31 requests in 3 s are a burst.
    const out: Finding[] = [];
    for (let i = 0; i < 31; i++) {
      clock.advance(100);
      out.push(...w.onRequest('inv_0', AGENT, ['repo:read:a'], []));
    }
    expect(out.map((f) => [f.kind, f.evidence])).toEqual([['request-burst', { requests: 31, windowMs: 10_000, baselinePerWindow: 3 }]]);
  });

  it('forget drops an identity\'s series and open findings, and leaves the others', () => {
    const w = new Watch(DEFAULT_WATCH_CONFIG, new ManualClock(), ids());
    w.onRequest('inv_a', AGENT, ['repo:read:a'], []);
    w.onRequest('inv_b', AGENT, ['repo:read:a'], []);
    w.onBadToken('inv_a', AGENT, 'WRIT_TOKEN_EXPIRED', 'jti_1');
    w.onBadToken('inv_b', AGENT, 'WRIT_TOKEN_EXPIRED', 'jti_2');
    w.forget('inv_a');
    expect(w.trackedSeries()).toBe(1);
    expect(w.openFindings().map((f) => f.identity)).toEqual(['inv_b']);
    // Forgotten, so the same bad token raises a finding again.
    expect(w.onBadToken('inv_a', AGENT, 'WRIT_TOKEN_EXPIRED', 'jti_1')).toHaveLength(1);
  });
});
