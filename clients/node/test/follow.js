// Test driver: follows symbols with the client library's subscribe() and prints every event as
// one JSON line (reconnects as {"type":"retry"} lines), until killed.
// Usage: node test/follow.js HOST:PORT SYMBOL[,SYMBOL...] [live|earliest] [--snapshot]
"use strict";
const { subscribe } = require("../tickstream");

const [target, symbols, start = "live", flag] = process.argv.slice(2);
const subscription = subscribe(target, symbols.split(","), {
  after: start === "earliest" ? "earliest" : undefined,
  snapshot: flag === "--snapshot",
  onRetry: (error, delayMs) => console.log(JSON.stringify({ type: "retry", code: error.code ?? null, message: error.message, delayMs })),
});

(async () => {
  for await (const event of subscription) console.log(JSON.stringify(event));
})().catch((error) => {
  console.log(JSON.stringify({ type: "error", code: error.code ?? null, message: error.message }));
  process.exitCode = 1;
});
