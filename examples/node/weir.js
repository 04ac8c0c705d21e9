// Loads Weir's API straight from the .proto files in the repository's proto/
// directory (nothing generated, nothing copied) and opens a client.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

// proto/ of this repository; WEIR_PROTO_DIR points elsewhere.
const PROTO_DIR =
  process.env.WEIR_PROTO_DIR || path.join(__dirname, '..', '..', 'proto');

const definition = protoLoader.loadSync('weir/v1/weir.proto', {
  includeDirs: [PROTO_DIR],
  keepCase: true, // field names as in weir.proto: receipt_handle, ...
  longs: String, // uint64 offsets as decimal strings, without rounding
  defaults: true,
  oneofs: true,
});
const weir = grpc.loadPackageDefinition(definition).weir.v1;

// A client of service weir.v1.Weir on ADDRESS ("host:port"), plaintext.
function connect(address) {
  return new weir.Weir(address, grpc.credentials.createInsecure());
}

// Calls a unary method as a promise, with a deadline.
function call(client, method, request, timeoutMs = 30000) {
  return new Promise((resolve, reject) => {
    client[method](
      request,
      { deadline: new Date(Date.now() + timeoutMs) },
      (error, response) => (error ? reject(error) : resolve(response)),
    );
  });
}

// Parses --name value pairs into an object, with defaults.
function parseArgs(argv, defaults) {
  const args = { ...defaults };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '');
    if (!(name in defaults) || i + 1 >= argv.length) {
      throw new Error(
        `unknown or incomplete option ${argv[i]}; options: ` +
          Object.keys(defaults).map((k) => `--${k}`).join(' '),
      );
    }
    args[name] = typeof defaults[name] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  return args;
}

module.exports = { grpc, connect, call, parseArgs };
