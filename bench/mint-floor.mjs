// The floor under the WebSocket mint figure: the least a durable token server does per call, with no Writ code.
// A bare `ws` server on a Unix socket; for each request it parses the frame, signs claims of the same shape with
// an Ed25519 key (node:crypto, on its thread), appends a hash-chained record to a preallocated file overwritten in
// place, and answers once that record is fdatasync-ed: group commit, one sync in flight, the records that arrive
// meanwhile forming the next batch. No sessions, grants, schemas, approvals, editor or second log file.
//   node bench/mint-floor.mjs SOCKET DIR     writes "ready\n" on stdout once listening; SIGTERM stops it
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { closeSync, fdatasync, openSync, writeSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { WebSocketServer } from 'ws';

const [socket, dir] = process.argv.slice(2);
const { privateKey } = generateKeyPairSync('ed25519');
const FILE_BYTES = 4 * 1024 * 1024;
const fd = openSync(join(dir, 'mint-floor.wal'), 'w+', 0o600);
writeSync(fd, Buffer.alloc(FILE_BYTES), 0, FILE_BYTES, 0);
fdatasync(fd, () => {});

const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
const header = b64({ alg: 'EdDSA', typ: 'at+jwt', kid: 'floor' });
let pos = 0;
let prev = '0'.repeat(64);
let seq = 0;
let queue = [];
let syncing = false;
let scheduled = false;

function commit() {
  scheduled = false;
  if (syncing || queue.length === 0) return;
  const batch = queue;
  queue = [];
  const bytes = Buffer.from(batch.map((b) => b.line).join(''), 'utf8');
  if (pos + bytes.length > FILE_BYTES) pos = 0;
  writeSync(fd, bytes, 0, bytes.length, pos);
  pos += bytes.length;
  syncing = true;
  fdatasync(fd, (e) => {
    if (e) throw e;
    syncing = false;
    for (const b of batch) b.ws.send(b.reply);
    commit();
  });
}

function mint(ws, text) {
  const req = JSON.parse(text);
  const iat = Math.floor(Date.now() / 1000);
  const jti = `tok_${seq}`;
  const claims = { iss: 'urn:writ:floor', sub: 'dev@example.com', aud: 'https://api.example', client_id: 'agt_floor', scope: 'repo:read:acme/web', act: { sub: 'agt_floor' }, task_id: 'tsk_floor', grant_id: req.params.grantId, jti, iat, nbf: iat, exp: iat + 300 };
  const input = `${header}.${b64(claims)}`;
  const token = `${input}.${sign(null, Buffer.from(input, 'latin1'), privateKey).toString('base64url')}`;
  const line = JSON.stringify({ v: 1, seq: seq++, ts: new Date().toISOString(), event: 'token.minted', agent: 'agt_floor', grantId: req.params.grantId, jti, exp: iat + 300, prev });
  prev = createHash('sha256').update(line).digest('hex');
  queue.push({ ws, line: `${line}\n`, reply: JSON.stringify({ jsonrpc: '2.0', id: req.id, result: { token, jti, expiresAt: iat + 300 } }) });
  if (!scheduled) {
    scheduled = true;
    queueMicrotask(commit);
  }
}

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 64 * 1024 });
const server = createServer();
server.on('upgrade', (req, sock, head) => wss.handleUpgrade(req, sock, head, (ws) => ws.on('message', (data) => mint(ws, data.toString()))));
server.listen(socket, () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => {
  closeSync(fd);
  process.exit(0);
});
