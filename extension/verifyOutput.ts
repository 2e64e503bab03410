// `writ audit verify` run as a child (it reads the public keys from the keychain, else a running broker's JWKS):
// its exit code and output as a result the editor shows. Pure.
import type { VerifyView } from '../broker/protocol';

export function verifyView(code: number | null, stdout: string, stderr: string): VerifyView {
  const out = stdout.trim().split('\n').filter(Boolean).at(-1) ?? '';
  const err = stderr.trim().split('\n').filter((l) => l.startsWith('writ: ')).at(-1)?.slice(6) ?? stderr.trim().split('\n').at(-1) ?? '';
  if (code === 0) return { state: 'intact', message: out ? out.charAt(0).toUpperCase() + out.slice(1) : 'Audit log intact' };
  const broken = /^audit log BROKEN at line (\d+)/.exec(err);
  if (broken) return { state: 'broken', message: err.charAt(0).toUpperCase() + err.slice(1), line: Number(broken[1]) };
  // Exit 3: the keychain was out of reach and the broker's JWKS lacked a key; not a break, not a pass either.
  const unverifiable = /^audit log UNVERIFIABLE from line (\d+)/.exec(err);
  if (unverifiable) return { state: 'unverifiable', message: err.charAt(0).toUpperCase() + err.slice(1), line: Number(unverifiable[1]) };
  // Exit 4: records no checkpoint signs and no running broker vouches for; not a break found, not a pass either.
  const unsigned = /^audit log UNSIGNED from line (\d+)/.exec(err);
  if (unsigned) return { state: 'unverifiable', message: err.charAt(0).toUpperCase() + err.slice(1), line: Number(unsigned[1]) };
  return { state: 'error', message: err || `verification failed (exit ${code})` };
}
