// The benchmark's HTTP load, the same for Writ's exchange and oidc-provider's token endpoint: autocannon (the HTTP
// load generator Node projects such as Fastify benchmark with), one keep-alive connection per client and one request
// in flight on each, the next sent when its answer is in: a closed loop, as every other figure here.
// Both servers share the two cores with the client, so a client's own cost per call lowers both figures and pulls
// their ratio toward 1. Measured here, 16 clients: node:http with a keep-alive agent spent 80-150 µs of the benchmark
// process's CPU per call, autocannon 40-50 µs; Node's fetch spent more than either server (700-1,200 µs).
import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';
import autocannon from 'autocannon';
import { percentiles } from './stats';
import type { LoadFigure } from './stats';

const agent = new Agent({ keepAlive: true, maxSockets: 64 });

export interface FormResponse {
  status: number;
  body: string;
}

/** POSTs an urlencoded body and resolves with the status and the whole body as text (one-off calls, not load). */
export function postForm(url: string, body: string, headers: Record<string, string> = {}): Promise<FormResponse> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body), ...headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

export interface FormLoad {
  url: string;
  /** Client i posts bodies[i % bodies.length] every time (a client's own parent token, say). */
  bodies: readonly string[];
  headers?: Record<string, string>;
  clients: number;
  seconds: number;
}

/**
 * `clients` connections posting their form back to back for `seconds`, after a short warm-up that is not recorded
 * (as bench/stats.ts closedLoop does). Every answer must be a 2xx whose body holds an access token: anything else
 * (a refusal, a connection error, a timeout) fails the figure rather than counting as served.
 */
export async function formLoad(load: FormLoad): Promise<LoadFigure> {
  const warm = await round(load, Math.min(0.5, load.seconds * 0.2));
  const t0 = performance.now();
  const lat = await round(load, load.seconds);
  const elapsed = (performance.now() - t0) / 1000;
  const { p50, p99 } = percentiles(lat);
  return { rate: lat.length / elapsed, p50, p99, n: lat.length, elapsed, lat, warm: warm.length };
}

async function round(load: FormLoad, seconds: number): Promise<number[]> {
  const lat: number[] = [];
  let next = 0;
  const r = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: load.url,
        method: 'POST',
        connections: load.clients,
        pipelining: 1,
        duration: seconds,
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...load.headers },
        setupClient: (client) => client.setBody(load.bodies[next++ % load.bodies.length]!),
        verifyBody: (body) => typeof body === 'string' && body.includes('"access_token":"'),
      },
      (err, result) => (err ? reject(err) : resolve(result)),
    );
    // responseTime: ms from the request's write to its answer's last byte (process.hrtime), one per answered call.
    instance.on('response', (_client, _status, _bytes, responseTime) => lat.push(responseTime));
  });
  const bad = r.non2xx + r.errors + r.timeouts + r.mismatches;
  if (bad > 0) {
    throw new Error(`${load.url}: ${r.non2xx} non-2xx answers, ${r.mismatches} without an access token, ${r.errors} errors, ${r.timeouts} timeouts`);
  }
  return lat;
}
