// Which revocations stop a command under `writ exec` once a restarted broker no longer knows its agent: those that
// take its agent or an ancestor (by id, as the token's act chain names them), or everything issued up to its token.
import { describe, expect, it } from 'vitest';
import { heldToken, namesAgent, revokesAgent } from '../../broker/exec-line';
import type { RevocationEvent, RevocationSnapshot } from '../../broker/protocol';

const part = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
/** A token shaped as the broker mints a sub-agent's: the agent, then its parent, in `act`. */
const TOKEN = `${part({ alg: 'EdDSA', typ: 'at+jwt' })}.${part({ sub: 'dev@example.com', act: { sub: 'agt_child', act: { sub: 'agt_parent' } }, iat: 1000, exp: 1600, jti: 'tok_1', grant_id: 'grt_1', task_id: 'tsk_1' })}.c2ln`;
const held = heldToken(TOKEN);

const event = (target: RevocationEvent['target'], extra: Partial<RevocationEvent> = {}): RevocationEvent => ({ target, at: 1000, jtis: [], agentIds: [], taskIds: [], ...extra });
const snapshot = (extra: Partial<RevocationSnapshot>): RevocationSnapshot => ({ jtis: [], grantIds: [], agentIds: [], ...extra });

describe('writ exec: revocations heard after its agent came back as a new one', () => {
  it('reads the act chain and times of its own token', () => {
    expect(held).toEqual({ actors: ['agt_child', 'agt_parent'], issuedAt: 1000, expiresAt: 1600 });
  });

  it('a token without an act chain is refused before the command starts (WRIT_TOKEN_INVALID)', () => {
    expect(() => heldToken(`${part({})}.${part({ iat: 1, exp: 2 })}.c2ln`)).toThrow(expect.objectContaining({ code: 'WRIT_TOKEN_INVALID' }));
  });

  it.each([
    ['an event revoking the agent', event({ kind: 'agent', id: 'agt_child' }, { agentIds: ['agt_child'] }), true],
    ['an event revoking the parent (its tree named)', event({ kind: 'agent', id: 'agt_parent' }, { agentIds: ['agt_parent', 'agt_child'] }), true],
    ['an event revoking an agent unknown to this broker (only the target names it)', event({ kind: 'agent', id: 'agt_parent' }), true],
    ['an event revoking another agent', event({ kind: 'agent', id: 'agt_other' }, { agentIds: ['agt_other'] }), false],
    ['`all` after the token was issued', event({ kind: 'all' }, { at: 1001 }), true],
    ['`all` in the second the token was issued (covers strictly before)', event({ kind: 'all' }, { at: 1000 }), false],
    ['its token alone (as without a restart: the agent goes on)', event({ kind: 'token', jti: 'tok_1' }, { jtis: ['tok_1'] }), false],
    ['its grant alone', event({ kind: 'grant', id: 'grt_1' }, { grantIds: ['grt_1'] }), false],
    ['a snapshot naming the agent', snapshot({ agentIds: ['agt_child'] }), true],
    ['a snapshot naming the parent', snapshot({ agentIds: ['agt_parent'] }), true],
    ['a snapshot with `all` after the token', snapshot({ allBefore: 1001 }), true],
    ['a snapshot with `all` up to the token', snapshot({ allBefore: 1000 }), false],
    ['a snapshot naming others only', snapshot({ agentIds: ['agt_other'], jtis: ['tok_1'], grantIds: ['grt_1'] }), false],
  ] as const)('%s', (_what, r, stops) => {
    expect(revokesAgent(r, held)).toBe(stops);
  });
});

describe('writ exec: which of the ids its agent has had a revocation names', () => {
  it.each([
    ['its tree, by an id of this run', event({ kind: 'agent', id: 'agt_parent_now' }, { agentIds: ['agt_parent_now', 'agt_b'] }), true],
    ['an id of an earlier run (only the target names it)', event({ kind: 'agent', id: 'agt_a' }, { agentIds: ['agt_a'] }), true],
    ['another agent', event({ kind: 'agent', id: 'agt_other' }, { agentIds: ['agt_other'] }), false],
    ['everything (named by no id)', event({ kind: 'all' }, { at: 2000 }), false],
    ['a snapshot naming one of them', snapshot({ agentIds: ['agt_x', 'agt_b'] }), true],
    ['a snapshot naming others only', snapshot({ agentIds: ['agt_x'], allBefore: 2000 }), false],
  ] as const)('%s', (_what, r, named) => {
    expect(namesAgent(r, ['agt_a', 'agt_b'])).toBe(named);
  });
});
