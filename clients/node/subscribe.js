// A tickstream gRPC subscriber in Node.js: loads protos/ at run time (no generated code) and
// prints each tick as one JSON line.
// Usage: node subscribe.js HOST:PORT SYMBOL[,SYMBOL...] [COUNT] [earliest]
"use strict";
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTOS = path.resolve(__dirname, "..", "..", "protos");
const definition = protoLoader.loadSync("tickstream/v1/feed.proto", {
  includeDirs: [PROTOS],
  longs: String, // uint64 sequence and offset stay exact
  enums: String,
  defaults: false,
  oneofs: true,
});
const { FeedService } = grpc.loadPackageDefinition(definition).tickstream.v1;

const [target, symbols, count = "10", start = "live"] = process.argv.slice(2);
const client = new FeedService(target, grpc.credentials.createInsecure());
const request = { symbols: symbols.split(",") };
if (start === "earliest") request.earliest = true;

let seen = 0;
const call = client.Subscribe(request);
call.on("data", (response) => {
  if (response.event !== "ticks") return;
  for (const tick of response.ticks.ticks) {
    console.log(JSON.stringify(tick));
    if (++seen >= Number(count)) {
      call.cancel();
      client.close();
      return;
    }
  }
});
call.on("error", (error) => {
  if (error.code === grpc.status.CANCELLED) return;
  console.error(`${error.code} ${error.details}`);
  process.exitCode = 1;
});
