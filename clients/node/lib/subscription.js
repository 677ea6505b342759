// subscribe(): the feed's ticks as an async iterator of events, resumed across reconnects.
"use strict";
const { grpc, FeedService, TERMINAL, makeClient, makeMetadata, Backoff, sleep } = require("./connection");
const { tickToJson, timestampToJson } = require("./ticks");

const bigMax = (a, b) => (BigInt(a) >= BigInt(b) ? String(a) : String(b));

// A subscription to one or more symbols of the feed at `target` ("HOST:PORT").
//
// Iterate it (once) with `for await`; each event is one of
//   {type: "tick", tick}                  tick: the proto3 JSON of the Tick, identical to the
//                                         edge's SSE `data`; `snapshot: true` on snapshot values
//   {type: "reset", reason, message, epoch, offset, symbols}
//                                         ticks may have been missed (the feed restarted, the
//                                         resume point left its history...): state built from
//                                         earlier ticks is stale; ticks after `offset` follow
//   {type: "status", symbol, state: "live"|"stale", lastTickTime?}
//
// Guarantees: within one epoch, ticks come in increasing offset order and no offset is ever
// yielded twice; across a dropped connection, a silent feed (no message for heartbeatTimeoutMs;
// the feed heartbeats every second) or a feed restart, the subscription reconnects with jittered
// exponential backoff and resumes after the last offset it yielded, so the consumer sees every
// tick once, or a reset. `position` ({epoch, offset}) is the resume cursor at any time.
// When the feed restarted with a new epoch (its history lost), onNewEpoch "replay" (default)
// yields a reset (epoch_changed) and then every tick the new epoch holds from its first, so
// ticks a producer resent before this subscriber came back are not skipped; "live" yields the
// feed's reset at the new epoch's head and continues with the ticks stored after it (the feed
// itself goes on from the new epoch's oldest tick, as the edge's SSE streams do: the older ones
// are passed over here).
//
// Errors: a status a retry cannot fix (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED,
// UNAUTHENTICATED...) is thrown from the iterator. NOT_FOUND is retried instead once the stream
// has opened: a restarted feed fed only by producers knows a symbol again once it is published.
// close() (or leaving the loop) ends the iteration and the channel.
class Subscription {
  constructor(target, symbols, options = {}) {
    if (!Array.isArray(symbols) || symbols.length === 0) throw new TypeError("symbols: name at least one");
    this.symbols = [...symbols];
    this.types = options.types ?? []; // e.g. ["TICK_TYPE_TRADE"]; empty: all
    this.snapshot = Boolean(options.snapshot);
    this.heartbeatTimeoutMs = options.heartbeatTimeoutMs ?? 5_000;
    this.onRetry = options.onRetry ?? (() => {}); // (error, delayMs) before each reconnect
    this.onNewEpoch = options.onNewEpoch ?? "replay";
    if (!["replay", "live"].includes(this.onNewEpoch)) throw new TypeError('onNewEpoch: "replay" or "live"');
    this._replayNote = null; // set: the next stream replays a new epoch from its start
    this.reconnects = 0;
    this._backoff = new Backoff(options.backoff);
    this._metadata = makeMetadata({ token: options.token });
    this._client = makeClient(FeedService, target, options);
    this._abort = new AbortController();
    this._call = null;
    this._opened = false; // a stream opened at least once
    const after = options.after;
    this._earliest = after === "earliest";
    // The cursor: the epoch of the ticks and the last offset yielded (or known complete).
    if (after && typeof after === "object") {
      if (!after.epoch) throw new TypeError("after.epoch is required to resume");
      this.epoch = after.epoch;
      this.offset = String(after.offset ?? 0);
    } else {
      this.epoch = null;
      this.offset = "0";
    }
  }

  get position() {
    return this.epoch === null ? null : { epoch: this.epoch, offset: this.offset };
  }

  close() {
    this._abort.abort();
    this._call?.cancel();
  }

  [Symbol.asyncIterator]() {
    return this._events();
  }

  _request() {
    const request = { symbols: this.symbols, types: this.types, snapshot: this.snapshot };
    if (this._replayNote !== null || (this._earliest && this.offset === "0")) {
      request.earliest = true; // a new epoch to replay, or nothing received yet from earliest
    } else if (this.epoch !== null) {
      request.after = { epoch: this.epoch, offset: this.offset };
    }
    return request;
  }

  async *_events() {
    const closed = this._abort.signal;
    try {
      while (!closed.aborted) {
        const request = this._request();
        const call = this._client.Subscribe(request, this._metadata);
        call.on("error", () => {}); // errors reach the loop below; none may go unhandled after it
        this._call = call;
        // Silence watchdog: armed only while waiting for the feed, not while the consumer
        // holds an event (a slow consumer is not a dead feed).
        let stalled = false;
        let timer = null;
        const arm = () => {
          timer = setTimeout(() => {
            stalled = true;
            call.cancel();
          }, this.heartbeatTimeoutMs);
        };
        let failure;
        const opening = { index: 0, snapshotDue: this.snapshot && !request.after && !request.earliest };
        arm();
        try {
          for await (const response of call) {
            clearTimeout(timer);
            this._opened = true;
            this._backoff.reset();
            yield* this._handle(response, opening);
            if (opening.replay) break; // reopen at once from the new epoch's start
            opening.index += 1;
            arm();
          }
          if (!opening.replay) failure = new Error("the feed ended the stream without a status");
        } catch (error) {
          if (closed.aborted) return;
          if (stalled) {
            failure = new Error(`no message from the feed for ${this.heartbeatTimeoutMs} ms`);
          } else if (TERMINAL.has(error.code) && !(error.code === grpc.status.NOT_FOUND && this._opened)) {
            throw error;
          } else {
            failure = error;
          }
        } finally {
          clearTimeout(timer);
          call.cancel();
          this._call = null;
        }
        if (opening.replay) continue;
        const delayMs = this._backoff.next();
        this.reconnects += 1;
        this.onRetry(failure, delayMs);
        await sleep(delayMs, closed);
      }
    } finally {
      this._abort.abort();
      this._client.close();
    }
  }

  // The events of one SubscribeResponse; updates the cursor before yielding each.
  *_handle(response, opening) {
    switch (response.event) {
      case "heartbeat": {
        const beat = response.heartbeat;
        if (opening.index === 0) {
          if (this._replayNote !== null) {
            // The stream replaying a new epoch: its history from the start follows the reset.
            const message = this._replayNote;
            this._replayNote = null;
            this.epoch = beat.epoch;
            const earliest = BigInt(beat.earliestOffset ?? 0);
            this.offset = String(earliest > 0n ? earliest - 1n : 0n);
            yield this._resetEvent("epoch_changed", message);
          } else if (this.epoch === null) {
            // A fresh stream: live starts after the head, earliest before the oldest tick.
            this.epoch = beat.epoch;
            this.offset = this._earliest ? "0" : String(beat.headOffset ?? "0");
          } else if (beat.epoch !== this.epoch && this.onNewEpoch === "replay") {
            // The feed restarted and lost its history: rather than its Reset and live ticks,
            // take every tick the new epoch holds (a producer may have resent ticks already).
            this._replayNote =
              `epoch ${this.epoch} is gone (the feed restarted and lost its history); ` +
              `replaying epoch ${beat.epoch} from its start`;
            opening.replay = true;
          } else if (beat.epoch !== this.epoch) {
            // onNewEpoch "live": the Reset that follows goes on from the new epoch's oldest
            // tick; this subscription goes on from its head instead.
            opening.liveFrom = String(beat.headOffset ?? "0");
          }
        } else if (beat.epoch === this.epoch) {
          this.offset = bigMax(this.offset, beat.headOffset ?? "0"); // complete through the head
        }
        return;
      }
      case "reset": {
        const reset = response.reset;
        this.epoch = reset.epoch;
        this.offset = opening.liveFrom ?? String(reset.headOffset ?? "0");
        // A resume point refused at the opening is followed by a snapshot, when asked for one.
        if (opening.index === 1 && reset.reason !== "RESET_REASON_SLOW_CONSUMER") {
          opening.snapshotDue = this.snapshot;
        }
        const reason = String(reset.reason ?? "RESET_REASON_UNSPECIFIED").replace(/^RESET_REASON_/, "");
        yield this._resetEvent(reason.toLowerCase(), reset.message ?? "");
        return;
      }
      case "ticks": {
        const batch = response.ticks;
        const ticks = batch.ticks ?? [];
        if (opening.snapshotDue) {
          // The latest values before the stream's start: not positions, the cursor stays.
          opening.snapshotDue = false;
          for (const tick of ticks) yield { type: "tick", tick: tickToJson(tick), snapshot: true };
          return;
        }
        for (const tick of ticks) {
          if (BigInt(tick.offset) <= BigInt(this.offset)) continue; // never an offset twice
          this.offset = String(tick.offset);
          yield { type: "tick", tick: tickToJson(tick) };
        }
        this.offset = bigMax(this.offset, batch.headOffset ?? "0");
        return;
      }
      case "status": {
        const status = response.status;
        const event = {
          type: "status",
          symbol: status.symbol,
          state: String(status.state).replace(/^SYMBOL_STATE_/, "").toLowerCase(),
        };
        if (status.lastTickTime) event.lastTickTime = timestampToJson(status.lastTickTime);
        yield event;
        return;
      }
      default:
        return; // a member added to the oneof later: ignored
    }
  }
}

// The reset event, at the cursor just set.
Subscription.prototype._resetEvent = function resetEvent(reason, message) {
  return { type: "reset", reason, message, epoch: this.epoch, offset: this.offset, symbols: [...new Set(this.symbols)].sort() };
};

function subscribe(target, symbols, options) {
  return new Subscription(target, symbols, options);
}

module.exports = { subscribe, Subscription };
