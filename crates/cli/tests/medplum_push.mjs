// MedplumClient (@medplum/core) against the Outpost relay: client-credentials login, then
// pushToAgent with waitForResponse. Prints the answer as JSON.
// usage: node medplum_push.mjs BASE_URL CLIENT_ID CLIENT_SECRET AGENT_ID DEVICE_ID BODY
import { createRequire } from 'node:module';
const modules = process.env.OUTPOST_NODE_MODULES;
const require = createRequire(modules.endsWith('/') ? modules : modules + '/');
const { MedplumClient } = require('@medplum/core');

const [baseUrl, clientId, clientSecret, agentId, deviceId, body] = process.argv.slice(2);
const medplum = new MedplumClient({ baseUrl, clientId });
await medplum.startClientLogin(clientId, clientSecret);
const answer = await medplum.pushToAgent(
  { reference: `Agent/${agentId}` },
  { reference: `Device/${deviceId}` },
  body,
  'x-application/hl7-v2+er7',
  true,
);
console.log(JSON.stringify({ answer }));
