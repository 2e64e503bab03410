// The floor under bench/revocation.ts's figure: one bare WebSocket client in its own Node process, no Writ code.
// It does what the least a subscribed verifier must do for each revocation frame: wake, receive it, parse it,
// acknowledge it; it stamps the moment the frame reached its handler on CLOCK_MONOTONIC (process.hrtime, the clock
// every process shares). Driven over IPC, stamps collected after each round (no IPC while frames are in flight):
//   parent → {type:'stamps'}   child → {type:'stamps', stamps: {[seq]: ms}}
//   parent → {type:'exit'}
import WebSocket from 'ws';

const ws = new WebSocket(process.argv[2], { perMessageDeflate: false });
let stamps = {};
ws.on('message', (data) => {
  const at = Number(process.hrtime.bigint()) / 1e6;
  const { params } = JSON.parse(data.toString());
  stamps[params.seq] = at;
  ws.send(JSON.stringify({ jsonrpc: '2.0', method: 'revocation.ack', params: { seq: params.seq } }));
});
ws.on('open', () => process.send({ type: 'ready' }));
ws.on('error', (e) => {
  console.error(e);
  process.exit(1);
});
process.on('message', (m) => {
  if (m.type === 'stamps') {
    process.send({ type: 'stamps', stamps });
    stamps = {};
  } else if (m.type === 'exit') {
    ws.close();
    process.exit(0);
  }
});
