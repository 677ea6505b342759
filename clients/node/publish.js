// Publish ticks from a CSV or JSON-lines file to a tickstream feed, with the client library.
//
// Usage: node publish.js HOST:PORT FILE [--producer NAME] [--token TOKEN] [--rate TICKS_PER_S]
//
// CSV (a header line, then one tick a line; no quoting):
//   symbol,event_time,price,size,trade_id,side,bid_price,bid_size,ask_price,ask_size,id
//   ACME,2024-08-08T23:54:20.816Z,12.50,100,1,buy,,,,,
//   ACME,2024-08-08T23:54:20.9Z,,,,,12.49,300,12.51,200,
// Columns in any order; a row is a quote when its `type` says so (or, without a type column,
// when it has a bid_price), else a trade. JSON lines: one tick a line in the SSE JSON shape,
// e.g. {"symbol":"ACME","eventTime":"...","trade":{"price":"12.50","size":"100"}}, or a flat
// object with the CSV's columns.
//
// Each tick's dedup id is its `id` column (`dedupId` or `id` in JSON), else FILE:LINE, so running
// the same file again (after a crash, say) stores nothing twice: the feed drops what it has.
// Exits 0 once the feed has acknowledged every tick.
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const readline = require("node:readline");
const { parseArgs } = require("node:util");
const { setTimeout: sleep } = require("node:timers/promises");
const { Publisher } = require("./tickstream");

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { producer: { type: "string" }, token: { type: "string" }, rate: { type: "string", default: "0" } },
});
const [target, file] = positionals;
if (!target || !file) {
  console.error("usage: node publish.js HOST:PORT FILE [--producer NAME] [--token TOKEN] [--rate TICKS_PER_S]");
  process.exit(2);
}

// One CSV row (as an object keyed by the header) to a tick.
function fromCsv(row) {
  const tick = { symbol: row.symbol, eventTime: row.event_time || undefined, dedupId: row.id };
  if (row.type ? row.type === "quote" : row.bid_price) {
    tick.quote = { bidPrice: row.bid_price, bidSize: row.bid_size, askPrice: row.ask_price, askSize: row.ask_size };
  } else {
    tick.trade = { price: row.price, size: row.size, tradeId: row.trade_id, side: row.side };
  }
  return tick;
}

async function main() {
  const publisher = new Publisher(target, { producer: values.producer ?? "publish.js", token: values.token });
  publisher.on("ack", (ack) =>
    console.log(`ack batch ${ack.batchId}: ${ack.accepted} stored, ${ack.duplicates} duplicates, last offset ${ack.lastOffset}`),
  );
  publisher.on("retry", ({ error, delayMs }) => console.log(`connection lost (${error.message}); resending in ${delayMs} ms`));

  const rate = Number(values.rate); // ticks per second; 0 = as fast as the feed acknowledges
  const started = Date.now();
  const name = path.basename(file);
  const lines = readline.createInterface({ input: fs.createReadStream(file), crlfDelay: Infinity });
  let header = null;
  let lineNumber = 0;
  let count = 0;
  for await (const line of lines) {
    lineNumber += 1;
    if (!line.trim()) continue;
    let tick;
    if (line.trimStart().startsWith("{")) {
      const object = JSON.parse(line); // a tick in the SSE shape, or a flat row as in the CSV
      tick = object.trade || object.quote ? object : fromCsv(object);
      tick.dedupId ??= object.id;
      delete tick.id;
    } else if (header === null) {
      header = line.split(",").map((field) => field.trim());
      continue;
    } else {
      const cells = line.split(",");
      tick = fromCsv(Object.fromEntries(header.map((field, i) => [field, cells[i]?.trim() ?? ""])));
    }
    tick.dedupId = tick.dedupId ? String(tick.dedupId) : `${name}:${lineNumber}`;
    try {
      await publisher.publish(tick); // waits while too many batches are unacknowledged
    } catch (error) {
      throw new Error(`${name}:${lineNumber}: ${error.message}`);
    }
    count += 1;
    if (rate > 0) {
      const ahead = started + (count * 1000) / rate - Date.now();
      if (ahead > 1) await sleep(ahead);
    }
  }
  await publisher.close(); // flushes: returns once every batch is acknowledged
  const { accepted, duplicates, batches, reconnects } = publisher.stats;
  const seconds = ((Date.now() - started) / 1000).toFixed(2);
  console.log(`done: ${count} ticks, ${accepted} stored, ${duplicates} duplicates, ${batches} batches, ${reconnects} reconnects in ${seconds} s`);
}

main().catch((error) => {
  console.error(`publish.js: ${error.message}`);
  process.exit(1);
});
