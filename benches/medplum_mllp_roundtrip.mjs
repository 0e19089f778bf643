// Medplum's own MLLP stack, the loop the Rust bench runs: Hl7Client.sendAndWait to an Hl7Server
// in the same Node process (one thread), sequentially, on one kept-alive connection.
// usage: node medplum_mllp_roundtrip.mjs MESSAGES WARMUP < message.hl7   (prints one JSON line)
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
const modules = process.env.OUTPOST_NODE_MODULES;
const require = createRequire(modules.endsWith('/') ? modules : modules + '/');
const { Hl7Client, Hl7Server } = require('@medplum/hl7');
const { Hl7Message } = require('@medplum/core');

const n = Number(process.argv[2]);
const warmup = Number(process.argv[3]);
const template = readFileSync(0, 'latin1');
const server = new Hl7Server((conn) => {
  conn.addEventListener('message', ({ message }) => conn.send(message.buildAck()));
});
await server.start(0);
const port = server.server.address().port;
const client = new Hl7Client({ host: '127.0.0.1', port, keepAlive: true });
const lat = new Float64Array(n);
let total = 0n;
for (let i = 0; i < warmup + n; i++) {
  const t0 = process.hrtime.bigint();
  const msg = Hl7Message.parse(template.replace('{ID}', String(i)));
  const ack = await client.sendAndWait(msg);
  const dt = process.hrtime.bigint() - t0;
  if (ack.getSegment('MSA').getField(1).toString() !== 'AA') throw new Error('not AA');
  if (i >= warmup) { lat[i - warmup] = Number(dt) / 1000; total += dt; }
}
lat.sort();
console.log(JSON.stringify({ messages: n, per_second: n / (Number(total) / 1e9), p50_us: lat[Math.floor(n * 0.5)], p99_us: lat[Math.floor(n * 0.99)] }));
client.close();
await server.stop({ forceDrainTimeoutMs: 100 });
process.exit(0);
