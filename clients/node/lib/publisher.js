// Publisher: ticks into the feed over one IngestService.Publish stream, batched, acknowledged,
// and resent after a reconnect.
"use strict";
const crypto = require("node:crypto");
const { EventEmitter } = require("node:events");
const { IngestService, TERMINAL, makeClient, makeMetadata, Backoff } = require("./connection");
const { toDraft } = require("./ticks");

// Publishes ticks to the feed at `target` ("HOST:PORT").
//
// publish(tick) checks the tick (throws on what the feed would refuse) and adds it to the open
// batch; a batch is sent when it holds `batchSize` ticks or `lingerMs` after its first tick. At
// most `maxInFlight` batches are unacknowledged at a time: beyond, publish() waits (back-pressure).
// The feed acknowledges each batch once it is stored, in order; each acknowledgement is emitted
// as an "ack" event {batchId, ticks, accepted, duplicates, lastOffset, epoch}.
//
// Every tick carries a dedup id (the tick's `dedupId`, else one generated for this Publisher), so
// when the stream breaks (dropped connection, feed restart, no acknowledgement for
// `ackTimeoutMs`), the unacknowledged batches are sent again, in order, on a new stream after a
// jittered backoff (a "retry" event {error, delayMs} each time) and the feed stores none of them
// twice (within its dedup window; a restarted feed with an in-memory history starts a new epoch
// without the old ticks, and stores them once there). Give stable dedup ids derived from your
// input when a restarted producer may send the same ticks again.
//
// A status a retry cannot fix (INVALID_ARGUMENT, PERMISSION_DENIED, UNAUTHENTICATED...) fails the
// Publisher: the pending publish(), flush() and close() calls reject with it, later calls too.
// flush() waits until every tick published so far is acknowledged; close() flushes, then ends
// the stream and the channel.
class Publisher extends EventEmitter {
  constructor(target, options = {}) {
    super();
    this.batchSize = options.batchSize ?? 100;
    this.lingerMs = options.lingerMs ?? 5;
    this.maxInFlight = options.maxInFlight ?? 16;
    this.ackTimeoutMs = options.ackTimeoutMs ?? 10_000;
    this.stats = { published: 0, accepted: 0, duplicates: 0, batches: 0, reconnects: 0, epoch: null, lastOffset: null };
    this._idPrefix = `${String(options.producer ?? "node").slice(0, 32)}-${crypto.randomBytes(6).toString("hex")}`;
    this._idCount = 0;
    this._backoff = new Backoff(options.backoff);
    this._metadata = makeMetadata({ token: options.token, producer: options.producer });
    this._client = makeClient(IngestService, target, options);
    this._pending = []; // drafts not yet in a batch (fewer than batchSize)
    this._unacked = []; // batches {batchId, drafts} sent or due, oldest first
    this._nextBatchId = 1;
    this._call = null;
    this._reconnectTimer = null;
    this._lingerTimer = null;
    this._ackTimer = null;
    this._flushing = 0;
    this._failure = null;
    this._closed = false;
    this._waiters = []; // resolved whenever a batch is acknowledged or the Publisher fails
  }

  // Add one tick: {symbol, eventTime?, trade | quote, dedupId?} (see ticks.js, toDraft).
  async publish(tick) {
    this._checkUsable();
    const draft = toDraft(tick);
    if (!draft.dedupId) draft.dedupId = `${this._idPrefix}-${++this._idCount}`;
    while (this._pending.length >= this.batchSize) {
      await this._progress(); // the window is full: wait for an acknowledgement
      this._checkUsable();
    }
    this._pending.push(draft);
    this.stats.published += 1;
    if (this._pending.length >= this.batchSize) this._pump();
    else this._lingerTimer ??= setTimeout(() => this._onLinger(), this.lingerMs);
  }

  // Resolves once every tick published so far is acknowledged.
  async flush() {
    this._flushing += 1;
    try {
      this._pump();
      while (this._pending.length > 0 || this._unacked.length > 0) {
        if (this._failure) throw this._failure;
        await this._progress();
      }
      if (this._failure) throw this._failure;
    } finally {
      this._flushing -= 1;
    }
  }

  async close() {
    if (this._closed) return;
    try {
      await this.flush(); // throws the failure, if the Publisher failed
    } finally {
      this._closed = true;
      clearTimeout(this._lingerTimer);
      clearTimeout(this._reconnectTimer);
      clearTimeout(this._ackTimer);
      const call = this._call;
      this._call = null;
      if (call) {
        // End our side and let the feed end its own; the channel closes after.
        await new Promise((resolve) => {
          const timer = setTimeout(resolve, 2_000);
          call.on("status", () => {
            clearTimeout(timer);
            resolve();
          });
          call.end();
        });
      }
      this._client.close();
    }
  }

  _checkUsable() {
    if (this._failure) throw this._failure;
    if (this._closed) throw new Error("the Publisher is closed");
  }

  _progress() {
    return new Promise((resolve) => this._waiters.push(resolve));
  }

  _wake() {
    const waiters = this._waiters;
    this._waiters = [];
    for (const resolve of waiters) resolve();
  }

  _onLinger() {
    this._lingerTimer = null;
    this._pump(true);
  }

  // Seal batches from the pending ticks while the window allows (a partial batch once it has
  // lingered, or while flushing), and send them.
  _pump(lingered = false) {
    if (this._failure || this._closed) return;
    while (this._pending.length > 0 && this._unacked.length < this.maxInFlight) {
      const full = this._pending.length >= this.batchSize;
      if (!full && !lingered && this._flushing === 0) break;
      const batch = { batchId: this._nextBatchId++, drafts: this._pending.splice(0, this.batchSize) };
      this._unacked.push(batch);
      if (this._call) this._send(batch);
    }
    if (this._pending.length === 0) {
      clearTimeout(this._lingerTimer);
      this._lingerTimer = null;
    } else if (lingered) {
      // The window is full: the lingering ticks go out with the next acknowledgement.
      this._lingerTimer ??= setTimeout(() => this._onLinger(), this.lingerMs);
    }
    this._connect();
  }

  _send(batch) {
    this._call.write({ ticks: batch.drafts, batchId: batch.batchId });
    if (!this._ackTimer) this._armAckTimer(); // measured from the oldest wait or the last ack
  }

  // A new Publish stream when there is something to send and none is open (or due).
  _connect() {
    if (this._call || this._reconnectTimer || this._unacked.length === 0 || this._failure || this._closed) return;
    const call = this._client.Publish(this._metadata);
    this._call = call;
    call.on("data", (ack) => this._onAck(call, ack));
    call.on("error", (error) => this._onBroken(call, error));
    call.on("status", (status) => {
      // An error status came as "error" just before; OK means the feed ended the stream early.
      if (status.code === 0) this._onBroken(call, new Error("the feed ended the Publish stream"));
    });
    for (const batch of this._unacked) this._send(batch); // resend everything unacknowledged, in order
  }

  _armAckTimer() {
    clearTimeout(this._ackTimer);
    this._ackTimer = null;
    if (!this._call || this._unacked.length === 0) return;
    const call = this._call;
    this._ackTimer = setTimeout(() => {
      this._onBroken(call, new Error(`no acknowledgement for ${this.ackTimeoutMs} ms`));
    }, this.ackTimeoutMs);
  }

  _onAck(call, ack) {
    if (call !== this._call) return; // a stream already given up
    const batch = this._unacked[0];
    if (!batch || String(ack.batchId) !== String(batch.batchId)) {
      this._onBroken(call, new Error(`acknowledgement for batch ${ack.batchId}, expected ${batch?.batchId}`));
      return;
    }
    this._unacked.shift();
    this._backoff.reset();
    const accepted = ack.accepted ?? 0;
    const duplicates = ack.duplicates ?? 0;
    Object.assign(this.stats, {
      accepted: this.stats.accepted + accepted,
      duplicates: this.stats.duplicates + duplicates,
      batches: this.stats.batches + 1,
      epoch: ack.epoch,
      lastOffset: ack.lastOffset ?? "0",
    });
    this._armAckTimer();
    this.emit("ack", {
      batchId: batch.batchId,
      ticks: batch.drafts.length,
      accepted,
      duplicates,
      lastOffset: ack.lastOffset ?? "0",
      epoch: ack.epoch,
    });
    this._pump(); // a lingering partial batch goes out when its linger timer fires
    this._wake();
  }

  // The stream is gone: fail for good on a terminal status, else reconnect after a backoff and
  // resend what is unacknowledged.
  _onBroken(call, error) {
    if (call !== this._call) return;
    this._call = null;
    clearTimeout(this._ackTimer);
    this._ackTimer = null;
    call.removeAllListeners("data");
    call.on("error", () => {}); // a late error of the abandoned call is not ours to throw
    call.cancel();
    if (this._closed) return;
    if (TERMINAL.has(error.code)) {
      this._failure = error;
      this._wake();
      return;
    }
    const delayMs = this._backoff.next();
    this.stats.reconnects += 1;
    this.emit("retry", { error, delayMs });
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      this._connect();
    }, delayMs);
  }
}

module.exports = { Publisher };
