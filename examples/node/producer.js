// Sends COUNT messages to QUEUE (creating it if needed), BATCH per Send call.
//
//   node producer.js [--server 127.0.0.1:50051] [--queue orders]
//                    [--count 100] [--batch 50]
'use strict';

const { connect, call, parseArgs } = require('./weir');

async function main() {
  const args = parseArgs(process.argv.slice(2), {
    server: process.env.WEIR_SERVER || '127.0.0.1:50051',
    queue: 'orders',
    count: 100,
    batch: 50,
  });
  const client = connect(args.server);
  // Idempotent: an existing queue with the same configuration is fine.
  await call(client, 'CreateQueue', { name: args.queue, config: {} });

  let first = null;
  let last = null;
  for (let sent = 0; sent < args.count; ) {
    const entries = [];
    for (; entries.length < args.batch && sent < args.count; sent++) {
      entries.push({
        body: Buffer.from(JSON.stringify({ id: sent })),
        attributes: { producer: 'node' },
      });
    }
    // All or nothing: the batch is stored whole or the call fails.
    const response = await call(client, 'Send', { queue: args.queue, entries });
    if (first === null) first = response.offsets[0];
    last = response.offsets[response.offsets.length - 1];
  }
  console.log(`sent ${args.count} messages to ${args.queue}, offsets ${first}..${last}`);
  client.close();
}

main().catch((error) => {
  console.error(`error: ${error.message}`);
  process.exit(1);
});
