// A process that holds N connections to the broker, each making a call as it opens, and reconnects at once
// whenever one closes (made room with, 4029, anything): a flood of callers (test/integration/flood.test.ts).
import WebSocket from 'ws';
const [url, n] = [process.argv[2], Number(process.argv[3])];
let opened = 0;
function one() {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  ws.on('error', () => undefined);
  ws.on('open', () => { opened++; ws.send('{"jsonrpc":"2.0","id":1,"method":"status","params":{}}'); });
  ws.on('close', () => setImmediate(one));
}
for (let i = 0; i < n; i++) one();
setInterval(() => process.send?.({ opened }), 500);
