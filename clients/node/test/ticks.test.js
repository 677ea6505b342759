// Unit tests of lib/ticks.js (node:test, no server): run with `node --test test/`.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { tickToJson, timestampToJson, parseTimestamp, toDraft, compareDecimals } = require("../lib/ticks");

test("timestamps print as protobuf's JSON does: 0, 3, 6 or 9 fractional digits", () => {
  assert.equal(timestampToJson({ seconds: "1723161260", nanos: 816000000 }), "2024-08-08T23:54:20.816Z");
  assert.equal(timestampToJson({ seconds: "1723161260" }), "2024-08-08T23:54:20Z");
  assert.equal(timestampToJson({ seconds: "1723161260", nanos: 1000 }), "2024-08-08T23:54:20.000001Z");
  assert.equal(timestampToJson({ seconds: "1723161260", nanos: 885691460 }), "2024-08-08T23:54:20.885691460Z");
  assert.equal(timestampToJson({ seconds: "253402300799", nanos: 999999999 }), "9999-12-31T23:59:59.999999999Z");
  assert.equal(timestampToJson({ seconds: "0", nanos: 0 }), "1970-01-01T00:00:00Z");
});

test("RFC 3339 input keeps every digit and honours offsets", () => {
  assert.deepEqual(parseTimestamp("2024-08-08T23:54:20.816Z"), { seconds: "1723161260", nanos: 816000000 });
  assert.deepEqual(parseTimestamp("2024-08-09T01:54:20.000000007+02:00"), { seconds: "1723161260", nanos: 7 });
  assert.deepEqual(parseTimestamp("1970-01-01t00:00:00.5z"), { seconds: "0", nanos: 500000000 });
  assert.throws(() => parseTimestamp("2024-08-08 23:54"), TypeError);
});

test("a decoded tick becomes the edge's SSE JSON, keys in field order, defaults omitted", () => {
  const tick = {
    ingestTime: { seconds: "1796004704", nanos: 885691460 },
    trade: { side: "SIDE_BUY", tradeId: "1520538999", size: "0.00340000", price: "2683.20000000" },
    body: "trade",
    offset: "1282",
    eventTime: { seconds: "1723161260", nanos: 816000000 },
    sequence: "75",
    symbol: "ETHUSDT",
  };
  assert.equal(
    JSON.stringify(tickToJson(tick)),
    '{"symbol":"ETHUSDT","sequence":"75","offset":"1282","eventTime":"2024-08-08T23:54:20.816Z",' +
      '"ingestTime":"2026-11-30T02:11:44.885691460Z","trade":{"price":"2683.20000000","size":"0.00340000",' +
      '"tradeId":"1520538999","side":"SIDE_BUY"}}',
  );
  const quiet = tickToJson({ symbol: "X", sequence: "1", offset: "0", trade: { price: "0", size: "2", tradeId: "", side: "SIDE_UNSPECIFIED" } });
  assert.deepEqual(quiet, { symbol: "X", sequence: "1", trade: { price: "0", size: "2" } });
  assert.deepEqual(tickToJson({ symbol: "X", quote: { bidPrice: "0", bidSize: "0", askPrice: "1" } }).quote, {
    bidPrice: "0",
    bidSize: "0",
    askPrice: "1",
  });
});

test("books and bars map as the edge's JSON does", () => {
  const book = tickToJson({
    symbol: "BTCUSDT", sequence: "2", offset: "9",
    book: { bids: [{ price: "1.50", size: "0" }], asks: [], snapshot: false, firstUpdateId: "5", lastUpdateId: "7" },
  });
  assert.equal(
    JSON.stringify(book),
    '{"symbol":"BTCUSDT","sequence":"2","offset":"9","book":{"bids":[{"price":"1.50","size":"0"}],"firstUpdateId":"5","lastUpdateId":"7"}}',
  );
  const bar = tickToJson({
    symbol: "BTCUSDT", sequence: "1", offset: "10",
    bar: { interval: "1m", start: { seconds: "1723161240", nanos: 0 }, open: "1", high: "2", low: "1", close: "2",
      volume: "3.5", quoteVolume: "6.0", trades: "2", final: true },
  });
  assert.deepEqual(bar.bar, {
    interval: "1m", start: "2024-08-08T23:54:00Z", open: "1", high: "2", low: "1", close: "2",
    volume: "3.5", quoteVolume: "6.0", trades: "2", final: true,
  });
});

test("drafts are checked with the feed's rules", () => {
  assert.deepEqual(toDraft({ symbol: "ACME", trade: { price: "1.50", size: "2", side: "buy", tradeId: 7 } }), {
    symbol: "ACME",
    trade: { price: "1.50", size: "2", tradeId: "7", side: "SIDE_BUY" },
  });
  const quote = toDraft({ symbol: "ACME", eventTime: 1500, dedupId: "q1", quote: { bidPrice: "9.99", bidSize: "1", askPrice: "10", askSize: "1" } });
  assert.deepEqual(quote.eventTime, { seconds: "1", nanos: 500000000 });
  assert.equal(quote.dedupId, "q1");
  assert.throws(() => toDraft({ symbol: "acme", trade: { price: "1", size: "1" } }), /symbol/);
  assert.throws(() => toDraft({ symbol: "ACME", trade: { price: 1.5, size: "1" } }), /trade.price/);
  assert.throws(() => toDraft({ symbol: "ACME", trade: { price: "-1", size: "1" } }), /trade.price/);
  assert.throws(() => toDraft({ symbol: "ACME" }), /exactly one body/);
  assert.throws(() => toDraft({ symbol: "ACME", quote: { bidPrice: "10.01", bidSize: "1", askPrice: "10", askSize: "1" } }), /above/);
  assert.throws(() => toDraft({ symbol: "ACME", dedupId: "x".repeat(129), trade: { price: "1", size: "1" } }), /dedupId/);
});

test("decimals compare exactly", () => {
  assert.equal(compareDecimals("10", "9.999999999999999999"), 1);
  assert.equal(compareDecimals("0010.10", "10.1"), 0);
  assert.equal(compareDecimals("0.1", "0.10000000000000000001"), -1);
});
