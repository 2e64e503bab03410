// The peer a user might pick instead: oidc-provider (panva) as a child process, client_credentials with a
// resource indicator, EdDSA JWT access tokens, hit over HTTP with keep-alive and client_secret_basic.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { decodeProtectedHeader } from 'jose';
import { postForm } from './httpc';
import type { LoadWorker } from './load';
import type { LoadFigure } from './stats';

const SERVER = fileURLToPath(new URL('./oidc-server.mjs', import.meta.url));
const BASIC = `Basic ${Buffer.from('bench:bench-secret-0123456789abcdef').toString('base64')}`;

export interface OidcPeer {
  url: string;
  child: ChildProcess;
  version: string;
  stop(): Promise<void>;
}

export async function startOidcProvider(): Promise<OidcPeer> {
  const child = spawn(process.execPath, [SERVER], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_ENV: 'production' } });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(out.trim());
    });
    child.once('exit', (code) => reject(new Error(`oidc-provider exited ${code}: ${err}`)));
  });
  const { createRequire } = await import('node:module');
  const version = (createRequire(import.meta.url)('oidc-provider/package.json') as { version: string }).version;
  return {
    url,
    child,
    version,
    stop: () =>
      new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

const FORM = 'grant_type=client_credentials&scope=repo%3Aread&resource=https%3A%2F%2Fapi.example';

async function issue(url: string): Promise<string> {
  const res = await postForm(`${url}/token`, FORM, { authorization: BASIC });
  const body = JSON.parse(res.body) as { access_token?: string; error?: string; error_description?: string };
  if (res.status !== 200 || !body.access_token) throw new Error(`oidc-provider refused: ${res.status} ${body.error} ${body.error_description}`);
  return body.access_token;
}

/** Checks once that the peer really issues EdDSA at+jwt tokens, then measures it from `load` (as Writ's figures are). */
export async function oidcLoad(peer: OidcPeer, load: LoadWorker, clients: number, seconds?: number): Promise<LoadFigure> {
  const h = decodeProtectedHeader(await issue(peer.url));
  if (h.alg !== 'EdDSA' || h.typ !== 'at+jwt') throw new Error(`oidc-provider issued ${h.alg} ${h.typ}, not EdDSA at+jwt`);
  return load.request({ op: 'post', url: `${peer.url}/token`, body: FORM, headers: { authorization: BASIC }, clients, seconds });
}
