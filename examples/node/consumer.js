// Consumes QUEUE over Subscribe (the server pushes messages as they arrive):
// prints each message, deletes it, and exits once COUNT are deleted (0: runs
// until interrupted). CREDIT messages may be on their way at once.
//
//   node consumer.js [--server 127.0.0.1:50051] [--queue orders]
//                    [--count 0] [--credit 32] [--group ""]
//
// A server without Subscribe (UNIMPLEMENTED) is consumed by long-polling
// Receive + Delete instead, with the same output.
'use strict';

const { grpc, connect, call, parseArgs } = require('./weir');

const args = parseArgs(process.argv.slice(2), {
  server: process.env.WEIR_SERVER || '127.0.0.1:50051',
  queue: 'orders',
  count: 0,
  credit: 32,
  group: '',
  'visibility-timeout': 30000,
});
const client = connect(args.server);
let deleted = 0;

function handle(message) {
  // The work: here, print it. Throwing would leave the message leased; it
  // comes back after the visibility timeout.
  console.log(
    `offset=${message.offset}\treceive_count=${message.receive_count}\t` +
      message.body.toString(),
  );
}

function done() {
  return args.count > 0 && deleted >= args.count;
}

function finish() {
  console.error(`deleted ${deleted} messages`);
  client.close();
}

function subscribe() {
  const stream = client.Subscribe();
  let nextRequestId = 1;
  let unanswered = 0;
  let closing = false;
  stream.write({
    start: {
      queue: args.queue,
      group: args.group,
      visibility_timeout_ms: args['visibility-timeout'],
    },
    credit: args.count > 0 ? Math.min(args.credit, args.count) : args.credit,
  });
  let granted = args.count > 0 ? Math.min(args.credit, args.count) : args.credit;

  stream.on('data', (response) => {
    const receipts = [];
    for (const message of response.messages) {
      handle(message);
      receipts.push(message.receipt_handle);
    }
    if (response.ack) {
      unanswered--;
      for (const result of response.ack.delete_results) {
        if (result.code === 0) {
          deleted++;
        } else {
          console.error(`error: delete: code ${result.code}: ${result.message}`);
        }
      }
    }
    if (receipts.length > 0) {
      // Delete what was handled and take as many new ones (credit).
      let credit = receipts.length;
      if (args.count > 0) credit = Math.max(0, Math.min(credit, args.count - granted));
      granted += credit;
      unanswered++;
      stream.write({
        delete_receipt_handles: receipts,
        credit,
        request_id: String(nextRequestId++),
      });
    }
    if (done() && unanswered === 0 && !closing) {
      // Half-close: the server ends the stream, releasing anything still
      // leased to it.
      closing = true;
      stream.end();
    }
  });
  stream.on('error', (error) => {
    if (error.code === grpc.status.UNIMPLEMENTED) {
      console.error('Subscribe is not available: falling back to Receive');
      receiveLoop().catch(fail);
      return;
    }
    if (closing && error.code === grpc.status.CANCELLED) return;
    fail(error);
  });
  stream.on('status', (status) => {
    if (status.code === grpc.status.OK) finish();
  });
}

async function receiveLoop() {
  while (!done()) {
    const response = await call(
      client,
      'Receive',
      {
        queue: args.queue,
        group: args.group,
        max_messages: args.credit,
        visibility_timeout_ms: args['visibility-timeout'],
        wait_time_ms: 10000,
      },
      40000,
    );
    if (response.messages.length === 0) continue;
    response.messages.forEach(handle);
    const result = await call(client, 'Delete', {
      queue: args.queue,
      receipt_handles: response.messages.map((m) => m.receipt_handle),
    });
    deleted += result.results.filter((r) => r.code === 0).length;
  }
  finish();
}

function fail(error) {
  console.error(`error: ${error.message}`);
  process.exit(1);
}

subscribe();
