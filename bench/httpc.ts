// The benchmark's HTTP client, shared by Writ's exchange and oidc-provider's token endpoint: node:http with a
// keep-alive agent (one socket per concurrent client). Node's fetch spent more CPU per call than either server
// (700-1,200 µs against 600-700 µs, both in this benchmark's process and on the same two cores), so the ratio of
// two servers measured through it said more about the client than about them.
import { Agent, request } from 'node:http';

const agent = new Agent({ keepAlive: true, maxSockets: 64 });

export interface FormResponse {
  status: number;
  body: string;
}

/** POSTs an urlencoded body and resolves with the status and the whole body as text. */
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
