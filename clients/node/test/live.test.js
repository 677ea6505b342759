// The client library against a running feed started with `--source none` (node:test). The feed's
// address comes from TICKSTREAM_TARGET; without it these tests are skipped. Each test uses a
// symbol of its own, so they share one feed.
// Run: TICKSTREAM_TARGET=127.0.0.1:50051 node --test test/live.test.js
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { subscribe, Publisher } = require("../tickstream");

const target = process.env.TICKSTREAM_TARGET;
const options = { skip: !target && "set TICKSTREAM_TARGET=HOST:PORT of a feed run with --source none", timeout: 20_000 };

const trade = (symbol, price, tradeId) => ({ symbol, trade: { price, size: "1", tradeId: String(tradeId), side: "SIDE_BUY" } });
const quote = (symbol, bid, ask) => ({ symbol, quote: { bidPrice: bid, bidSize: "5", askPrice: ask, askSize: "6" } });

// The first `count` events of a subscription (leaving the loop closes it).
async function take(subscription, count) {
  const events = [];
  for await (const event of subscription) {
    events.push(event);
    if (events.length >= count) break;
  }
  return events;
}

async function publishAll(ticks, publisherOptions = {}) {
  const publisher = new Publisher(target, { producer: "live-test", ...publisherOptions });
  const acks = [];
  publisher.on("ack", (ack) => acks.push(ack));
  for (const tick of ticks) await publisher.publish(tick);
  await publisher.close();
  return { acks, stats: publisher.stats };
}

test("an unknown symbol is thrown as NOT_FOUND, not retried", options, async () => {
  await assert.rejects(take(subscribe(target, ["NEVER.PUBLISHED"]), 1), (error) => error.code === 5);
});

test("batches are acknowledged in order within the in-flight window", options, async () => {
  const ticks = Array.from({ length: 95 }, (_, i) => trade("LIVE.WINDOW", `1.${i}`, i + 1));
  const { acks, stats } = await publishAll(ticks, { batchSize: 10, maxInFlight: 1 });
  assert.deepEqual(acks.map((ack) => ack.batchId), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.deepEqual(acks.map((ack) => ack.ticks), [10, 10, 10, 10, 10, 10, 10, 10, 10, 5]);
  assert.equal(stats.accepted, 95);
  assert.equal(stats.duplicates, 0);
  // Offsets are feed-wide: strictly increasing acknowledgements of one producer.
  const last = acks.map((ack) => BigInt(ack.lastOffset));
  assert.ok(last.every((offset, i) => i === 0 || offset > last[i - 1]));
});

test("the same dedup ids are stored once", options, async () => {
  const ticks = [1, 2, 3].map((i) => ({ ...trade("LIVE.DEDUP", "2", i), dedupId: `d${i}` }));
  assert.equal((await publishAll(ticks)).stats.accepted, 3);
  const again = await publishAll([...ticks, { ...trade("LIVE.DEDUP", "2", 4), dedupId: "d4" }]);
  assert.deepEqual([again.stats.accepted, again.stats.duplicates], [1, 3]);
});

test("a batch the feed refuses fails the publisher with INVALID_ARGUMENT", options, async () => {
  // Over the feed's default batch limit of 1,000 ticks.
  const publisher = new Publisher(target, { batchSize: 1001 });
  for (let i = 0; i < 1001; i += 1) await publisher.publish(trade("LIVE.TOOBIG", "1", i));
  await assert.rejects(publisher.close(), (error) => error.code === 3);
  await assert.rejects(publisher.publish(trade("LIVE.TOOBIG", "1", 0)), (error) => error.code === 3);
});

test("snapshot values come first, flagged, then live ticks", options, async () => {
  await publishAll([trade("LIVE.SNAP", "10.5", 1), quote("LIVE.SNAP", "10.4", "10.6"), trade("LIVE.SNAP", "10.7", 2)]);
  const subscription = subscribe(target, ["LIVE.SNAP"], { snapshot: true });
  const events = take(subscription, 3);
  await new Promise((resolve) => setTimeout(resolve, 300)); // the stream is open
  await publishAll([trade("LIVE.SNAP", "10.8", 3)]);
  const [first, second, live] = await events;
  assert.deepEqual([first.snapshot, second.snapshot, live.snapshot], [true, true, undefined]);
  assert.deepEqual([first.tick.quote?.bidPrice, second.tick.trade?.price], ["10.4", "10.7"]);
  assert.equal(live.tick.trade.price, "10.8");
  assert.equal(live.tick.sequence, "3");
});

test("after {epoch, offset} resumes after it; another epoch gives a reset", options, async () => {
  await publishAll([1, 2, 3, 4].map((i) => trade("LIVE.RESUME", `${i}`, i)));
  const all = await take(subscribe(target, ["LIVE.RESUME"], { after: "earliest" }), 4);
  const position = { epoch: null, offset: all[1].tick.offset };
  const first = subscribe(target, ["LIVE.RESUME"], { after: "earliest" });
  await take(first, 1);
  position.epoch = first.position.epoch;
  const resumed = await take(subscribe(target, ["LIVE.RESUME"], { after: position }), 2);
  assert.deepEqual(resumed.map((event) => event.tick.trade.price), ["3", "4"]);
  // Another epoch (the feed restarted): by default a reset, then the new epoch from its start.
  const [reset, replayed] = await take(subscribe(target, ["LIVE.RESUME"], { after: { epoch: "gone", offset: "2" } }), 2);
  assert.deepEqual([reset.type, reset.reason, reset.epoch, reset.offset], ["reset", "epoch_changed", position.epoch, "0"]);
  assert.deepEqual(reset.symbols, ["LIVE.RESUME"]);
  assert.equal(replayed.tick.trade.price, "1");
  // onNewEpoch "live": the feed's reset, moved to its head; the ticks stored after it next.
  const live = subscribe(target, ["LIVE.RESUME"], { after: { epoch: "gone", offset: "2" }, onNewEpoch: "live" });
  const [feedReset] = await take(live, 1);
  assert.equal(feedReset.reason, "epoch_changed");
  assert.match(feedReset.message, /is not the feed's epoch/);
  assert.equal(feedReset.offset, all[3].tick.offset); // this feed's head
});

test("ticks published while subscribed arrive once each, in offset order", options, async () => {
  const subscription = subscribe(target, ["LIVE.FLOW"], { after: "earliest" });
  await publishAll([trade("LIVE.FLOW", "1", 0)]); // the symbol exists
  const events = take(subscription, 501);
  await publishAll(Array.from({ length: 500 }, (_, i) => trade("LIVE.FLOW", "1", i + 1)), { batchSize: 7 });
  const ticks = (await events).map((event) => event.tick);
  assert.deepEqual(ticks.map((tick) => tick.trade.tradeId), Array.from({ length: 501 }, (_, i) => String(i)));
  assert.deepEqual(ticks.map((tick) => tick.sequence), Array.from({ length: 501 }, (_, i) => String(i + 1)));
});
