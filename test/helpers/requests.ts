// An approval request as the broker sends it to the editor or its terminal, for tests of what the developer sees.
import type { ApprovalRequest } from '../../broker/protocol';

export function approvalRequest(over: Partial<ApprovalRequest> = {}): ApprovalRequest {
  return {
    requestId: 'req_1',
    agent: { id: 'agt_1', name: 'claude', kind: 'cli', parents: [] },
    task: 'fix issue 12',
    scopes: ['repo:read:acme/web'],
    audience: 'https://api.github.com',
    ttl: 300,
    maxTtl: 600,
    deadline: 1_000_000,
    ...over,
  };
}
