// tickstream for Node.js backends: subscribe to the feed's ticks and publish your own over gRPC.
//
//   const { subscribe, Publisher } = require("./tickstream");
//   for await (const event of subscribe("127.0.0.1:50051", ["BTCUSDT"], { after: "earliest" })) {
//     if (event.type === "tick") console.log(event.tick); // the edge's SSE JSON of the tick
//   }
//
//   const publisher = new Publisher("127.0.0.1:50051", { producer: "my-desk" });
//   await publisher.publish({ symbol: "ACME", trade: { price: "12.50", size: "100" } });
//   await publisher.close(); // every tick acknowledged
//
// See lib/subscription.js and lib/publisher.js for the guarantees and the options.
"use strict";
const { subscribe, Subscription } = require("./lib/subscription");
const { Publisher } = require("./lib/publisher");
const { tickToJson, toDraft, timestampToJson, parseTimestamp } = require("./lib/ticks");

module.exports = { subscribe, Subscription, Publisher, tickToJson, toDraft, timestampToJson, parseTimestamp };
