// Publishes events with @azure/eventgrid as an application would, but for the endpoint and the key.
// Usage: node publish.js '<json spec>' where the spec is
//   {"endpoint": "...", "schema": "EventGrid" | "CloudEvent" | "Custom",
//    "key": "<access key>", "credential": "key" | "sas", "events": [...],
//    "allowInsecureConnection": true | false}   (the SDK refuses plain http unless it is true)
// Prints {"sent": <number of events>} on success; on failure prints {"error", "statusCode"} and exits 1.
"use strict";

const {
  AzureKeyCredential,
  AzureSASCredential,
  EventGridPublisherClient,
  generateSharedAccessSignature,
} = require("@azure/eventgrid");

function toEvent(schema, event) {
  // The SDK takes Date objects for times; JSON carries strings.
  if (schema === "EventGrid" && event.eventTime) return { ...event, eventTime: new Date(event.eventTime) };
  if (schema === "CloudEvent" && event.time) return { ...event, time: new Date(event.time) };
  return event;
}

async function main() {
  const spec = JSON.parse(process.argv[2]);
  let credential = new AzureKeyCredential(spec.key);
  if (spec.credential === "sas") {
    const expires = new Date(Date.now() + 10 * 60 * 1000);
    const token = await generateSharedAccessSignature(spec.endpoint, credential, expires);
    credential = new AzureSASCredential(token);
  }
  const client = new EventGridPublisherClient(spec.endpoint, spec.schema, credential, {
    allowInsecureConnection: spec.allowInsecureConnection,
  });
  await client.send(spec.events.map((e) => toEvent(spec.schema, e)));
  console.log(JSON.stringify({ sent: spec.events.length }));
}

main().catch((err) => {
  console.log(JSON.stringify({ error: String(err && err.message), statusCode: err && err.statusCode }));
  process.exit(1);
});
