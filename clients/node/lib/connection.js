// What the subscriber and the publisher share: the service stubs (protos/ loaded at run time, no
// generated code), channel options, call metadata, the retry policy and the backoff.
"use strict";
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTOS = path.resolve(__dirname, "..", "..", "..", "protos");
const definition = protoLoader.loadSync(["tickstream/v1/feed.proto", "tickstream/v1/ingest.proto"], {
  includeDirs: [PROTOS],
  longs: String, // uint64 sequence and offset stay exact
  enums: String,
  defaults: false, // absent fields stay absent, as in proto3 JSON
  oneofs: true,
});
const { FeedService, IngestService } = grpc.loadPackageDefinition(definition).tickstream.v1;

const CHANNEL_OPTIONS = {
  // Notice a dead connection (no FIN, black-holed) within ~15 s even when no message is due;
  // the feed accepts pings every 10 s.
  "grpc.keepalive_time_ms": 10_000,
  "grpc.keepalive_timeout_ms": 5_000,
  // grpc-js backs off reconnecting a channel up to 120 s by default; a restarted feed should be
  // found within a couple of seconds.
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 2_000,
};

// Status codes that a retry cannot fix: the request or the credentials are wrong. Anything
// else (UNAVAILABLE, a reset connection, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED from a rate
// limit, INTERNAL from a broken transport...) is retried with backoff.
const TERMINAL = new Set([
  grpc.status.INVALID_ARGUMENT,
  grpc.status.NOT_FOUND,
  grpc.status.PERMISSION_DENIED,
  grpc.status.UNAUTHENTICATED,
  grpc.status.FAILED_PRECONDITION,
  grpc.status.OUT_OF_RANGE,
  grpc.status.UNIMPLEMENTED,
]);

function makeClient(Service, target, options) {
  const credentials = options.credentials ?? grpc.credentials.createInsecure();
  return new Service(target, credentials, { ...CHANNEL_OPTIONS, ...options.channelOptions });
}

function makeMetadata({ token, producer } = {}) {
  const metadata = new grpc.Metadata();
  if (token) metadata.set("authorization", `Bearer ${token}`);
  if (producer) metadata.set("tickstream-producer", producer);
  return metadata;
}

// Jittered exponential backoff: a random delay in [d/2, d], d doubling from initialMs to maxMs,
// so many clients cut off at once do not all come back at the same instant.
class Backoff {
  constructor({ initialMs = 100, maxMs = 3_000 } = {}) {
    this.initialMs = initialMs;
    this.maxMs = maxMs;
    this.reset();
  }

  reset() {
    this.attempt = 0;
  }

  next() {
    const ceiling = Math.min(this.maxMs, this.initialMs * 2 ** this.attempt);
    this.attempt += 1;
    return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
  }
}

// A sleep that close() can cut short.
function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

module.exports = { grpc, FeedService, IngestService, TERMINAL, makeClient, makeMetadata, Backoff, sleep };
