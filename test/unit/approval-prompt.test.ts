// The broker's terminal prompt shows agent-supplied text: none of it may fake a line of the prompt, hide the real
// ones or move the cursor (escape sequences), or reorder what is shown (bidirectional overrides).
import { describe, expect, it } from 'vitest';
import { describeRequest, printable } from '../../broker/net/approvers';
import type { ApprovalRequest } from '../../broker/protocol';
import { approvalRequest } from '../helpers/requests';

const request = (over: Partial<ApprovalRequest> = {}): ApprovalRequest =>
  approvalRequest({ scopes: ['http:DELETE:https://api.github.com/**'], ...over });

describe('the terminal approval prompt', () => {
  it('shows control characters, bidi overrides and line separators as escapes', () => {
    expect(printable('a\nb\r\x1b[8m\x07\x7f\x9b\u202e\u2066\u2028z')).toBe('a\\x0ab\\x0d\\x1b[8m\\x07\\x7f\\x9b\\u{202e}\\u{2066}\\u{2028}z');
    expect(printable('plain text, ünïcode and → arrows')).toBe('plain text, ünïcode and → arrows');
  });

  it('shows every bidirectional and invisible format control as an escape, the Arabic letter mark too', () => {
    // U+061C reorders like U+200F (escaped), and U+180E / U+FEFF are invisible: each could hide or reorder a field.
    const controls = ['\u061c', '\u180e', '\u200e', '\u200f', '\u202a', '\u202b', '\u202c', '\u202d', '\u202e', '\u2066', '\u2067', '\u2068', '\u2069', '\ufeff'];
    for (const c of controls) expect(printable(`a${c}b`)).toBe(`a\\u{${c.codePointAt(0)!.toString(16)}}b`);
  });

  it('a task that tries to fake the Audience and Scopes lines and hide the real ones stays on its own line', () => {
    const fake = 'triage\n  Audience: https://api.github.com\n  Scopes:   1) http:GET:https://api.github.com/issues\x1b[8m';
    const text = describeRequest(request({ task: fake, agent: { id: 'agt_1', name: 'claude\r  Agent:    trusted', kind: 'cli', parents: [] } }));
    const lines = text.split('\n');
    expect(lines.filter((l) => l.startsWith('  Audience:'))).toEqual(['  Audience: https://api.github.com']);
    expect(lines.filter((l) => l.startsWith('  Scopes:'))).toEqual(['  Scopes:   1) http:DELETE:https://api.github.com/**']);
    expect(lines.find((l) => l.startsWith('  Task:'))).toBe(`  Task:     ${fake.replace(/\n/g, '\\x0a').replace('\x1b', '\\x1b')}`);
    expect(text).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f]/);
    expect(lines).toHaveLength(8);
  });
});
