// Ticks in and out: the proto3 JSON of a received Tick (exactly what the edge's SSE `data` holds)
// and the TickDraft a producer sends, checked here with the feed's own rules so one bad tick is
// refused by publish() instead of failing a whole batch (and the stream) at the feed.
"use strict";

// The feed's rules (feed_service/symbols.py and feed_service/ingest.py).
const SYMBOL = /^[A-Z0-9][A-Z0-9._-]{0,31}$/;
const DECIMAL = /^[0-9]{1,40}(\.[0-9]{1,40})?$/;
const MAX_ID = 128; // dedup_id and trade_id, in characters
const MAX_SECONDS = 253402300799; // 9999-12-31T23:59:59Z, the protobuf Timestamp range
const SIDES = ["SIDE_UNSPECIFIED", "SIDE_BUY", "SIDE_SELL"];

// ----- received ticks -> proto3 JSON ---------------------------------------------------------

// google.protobuf.Timestamp {seconds: "<int64 as string>", nanos} as protobuf prints it in JSON:
// RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits, the fewest that keep every digit
// ("2024-08-08T23:54:20.816Z"), as Python's json_format and the edge do.
function timestampToJson(stamp) {
  const seconds = Number(stamp.seconds ?? 0);
  const nanos = Number(stamp.nanos ?? 0);
  const whole = new Date(seconds * 1000).toISOString().slice(0, 19); // "YYYY-MM-DDTHH:MM:SS"
  if (nanos === 0) return `${whole}Z`;
  const digits = String(nanos).padStart(9, "0");
  if (nanos % 1e6 === 0) return `${whole}.${digits.slice(0, 3)}Z`;
  if (nanos % 1e3 === 0) return `${whole}.${digits.slice(0, 6)}Z`;
  return `${whole}.${digits}Z`;
}

// Proto3 JSON leaves out fields holding their default value: "" for strings, 0 for integers
// (uint64 arrive as strings, so "0"; a string field holding "0" is not a default).
function putIfSet(out, key, value) {
  if (value !== undefined && value !== null && value !== "") out[key] = value;
}

function putIfNonZero(out, key, value) {
  if (value !== undefined && value !== null && String(value) !== "0") out[key] = String(value);
}

function tradeToJson(trade) {
  const out = {};
  putIfSet(out, "price", trade.price);
  putIfSet(out, "size", trade.size);
  putIfSet(out, "tradeId", trade.tradeId);
  if (trade.side && trade.side !== "SIDE_UNSPECIFIED") out.side = trade.side;
  return out;
}

function quoteToJson(quote) {
  const out = {};
  putIfSet(out, "bidPrice", quote.bidPrice);
  putIfSet(out, "bidSize", quote.bidSize);
  putIfSet(out, "askPrice", quote.askPrice);
  putIfSet(out, "askSize", quote.askSize);
  return out;
}

// A tickstream.v1.Tick as @grpc/proto-loader decodes it (longs: String, enums: String) to its
// proto3 JSON mapping, keys in field-number order: JSON.stringify of the result is the edge's
// SSE `data` line for the same tick, byte for byte (for ASCII content).
function tickToJson(tick) {
  const out = {};
  putIfSet(out, "symbol", tick.symbol);
  putIfNonZero(out, "sequence", tick.sequence);
  putIfNonZero(out, "offset", tick.offset);
  if (tick.eventTime) out.eventTime = timestampToJson(tick.eventTime);
  if (tick.ingestTime) out.ingestTime = timestampToJson(tick.ingestTime);
  if (tick.trade) out.trade = tradeToJson(tick.trade);
  else if (tick.quote) out.quote = quoteToJson(tick.quote);
  else if (tick.book) out.book = bookToJson(tick.book);
  else if (tick.bar) out.bar = barToJson(tick.bar);
  return out;
}

// A BookUpdate: the changed levels, or with `snapshot` the whole book (see tick.proto).
function bookToJson(book) {
  const out = {};
  const levels = side => side.map(l => { const o = {}; putIfSet(o, "price", l.price); putIfSet(o, "size", l.size); return o; });
  if (book.bids && book.bids.length) out.bids = levels(book.bids);
  if (book.asks && book.asks.length) out.asks = levels(book.asks);
  if (book.snapshot) out.snapshot = true;
  putIfNonZero(out, "firstUpdateId", book.firstUpdateId);
  putIfNonZero(out, "lastUpdateId", book.lastUpdateId);
  return out;
}

// A Bar: an OHLCV candle of the symbol's trades, exact decimal strings.
function barToJson(bar) {
  const out = {};
  putIfSet(out, "interval", bar.interval);
  if (bar.start) out.start = timestampToJson(bar.start);
  for (const name of ["open", "high", "low", "close", "volume", "quoteVolume"]) putIfSet(out, name, bar[name]);
  putIfNonZero(out, "trades", bar.trades);
  if (bar.final) out.final = true;
  return out;
}

// ----- producer input -> TickDraft -----------------------------------------------------------

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$/;

// An RFC 3339 time to a Timestamp, keeping every fractional digit (a Date keeps only ms).
function parseTimestamp(text) {
  const m = RFC3339.exec(text);
  if (!m) throw new TypeError(`eventTime ${JSON.stringify(text)} is not an RFC 3339 time`);
  const [, y, mo, d, h, mi, s, fraction = "", zone] = m;
  const date = new Date(Date.UTC(2000, Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s)));
  date.setUTCFullYear(Number(y)); // Date.UTC maps years 0-99 to 1900-1999
  let seconds = date.getTime() / 1000;
  if (zone.length > 1) {
    const sign = zone[0] === "-" ? -1 : 1;
    seconds -= sign * (Number(zone.slice(1, 3)) * 3600 + Number(zone.slice(4, 6)) * 60);
  }
  return { seconds: String(seconds), nanos: Number(fraction.padEnd(9, "0")) };
}

// eventTime as given: an RFC 3339 string, a Date, milliseconds since the Unix epoch, or a
// Timestamp object {seconds, nanos}. Undefined stays unset (the feed then uses its ingest time).
function toTimestamp(value) {
  if (value === undefined || value === null) return undefined;
  let stamp;
  if (typeof value === "string") stamp = parseTimestamp(value);
  else if (value instanceof Date || typeof value === "number") {
    const ms = value instanceof Date ? value.getTime() : value;
    if (!Number.isInteger(ms)) throw new TypeError("eventTime in milliseconds must be an integer");
    const seconds = Math.floor(ms / 1000);
    stamp = { seconds: String(seconds), nanos: (ms - seconds * 1000) * 1e6 };
  } else if (typeof value === "object" && "seconds" in value) {
    stamp = { seconds: String(value.seconds), nanos: Number(value.nanos ?? 0) };
  } else {
    throw new TypeError("eventTime: expected an RFC 3339 string, a Date, ms or {seconds, nanos}");
  }
  const seconds = Number(stamp.seconds);
  if (!(seconds >= 0 && seconds <= MAX_SECONDS && stamp.nanos >= 0 && stamp.nanos < 1e9)) {
    throw new RangeError("eventTime is outside 1970-01-01..9999-12-31");
  }
  return stamp;
}

// Compare two decimal strings exactly (no binary floats): -1, 0 or 1.
function compareDecimals(a, b) {
  const [ai, af = ""] = a.split(".");
  const [bi, bf = ""] = b.split(".");
  const aInt = ai.replace(/^0+(?=.)/, "");
  const bInt = bi.replace(/^0+(?=.)/, "");
  if (aInt.length !== bInt.length) return aInt.length < bInt.length ? -1 : 1;
  const width = Math.max(af.length, bf.length);
  const x = aInt + af.padEnd(width, "0");
  const y = bInt + bf.padEnd(width, "0");
  return x === y ? 0 : x < y ? -1 : 1;
}

function decimal(body, name, where) {
  const value = body[name];
  if (typeof value !== "string" || !DECIMAL.test(value)) {
    throw new TypeError(`${where}.${name}: ${JSON.stringify(value)} is not a decimal string like "189.25"`);
  }
  return value;
}

function side(value) {
  if (value === undefined || value === null || value === "") return "SIDE_UNSPECIFIED";
  if (typeof value === "number" && SIDES[value]) return SIDES[value];
  const name = String(value).toUpperCase();
  const full = name.startsWith("SIDE_") ? name : `SIDE_${name}`;
  if (!SIDES.includes(full)) throw new TypeError(`trade.side: ${JSON.stringify(value)} is not buy or sell`);
  return full;
}

// A tick as a producer gives it, in the shape of the SSE JSON without the feed's numbering:
//   {symbol, eventTime?, trade: {price, size, tradeId?, side?}, dedupId?}
//   {symbol, eventTime?, quote: {bidPrice, bidSize, askPrice, askSize}, dedupId?}
// to a TickDraft for proto-loader. Throws TypeError/RangeError naming the field the feed would
// refuse. Prices and sizes must be strings: a JS number has already lost the recorded digits.
function toDraft(tick) {
  const symbol = tick.symbol;
  if (typeof symbol !== "string" || !SYMBOL.test(symbol)) {
    throw new TypeError(`symbol: ${JSON.stringify(symbol)} does not match ${SYMBOL.source}`);
  }
  const draft = { symbol };
  const eventTime = toTimestamp(tick.eventTime);
  if (eventTime) draft.eventTime = eventTime;
  if (tick.trade && !tick.quote) {
    const t = tick.trade;
    const tradeId = t.tradeId === undefined || t.tradeId === null ? "" : String(t.tradeId);
    if (tradeId.length > MAX_ID) throw new TypeError(`trade.tradeId is over ${MAX_ID} characters`);
    draft.trade = {
      price: decimal(t, "price", "trade"),
      size: decimal(t, "size", "trade"),
      tradeId,
      side: side(t.side),
    };
  } else if (tick.quote && !tick.trade) {
    const q = tick.quote;
    draft.quote = {
      bidPrice: decimal(q, "bidPrice", "quote"),
      bidSize: decimal(q, "bidSize", "quote"),
      askPrice: decimal(q, "askPrice", "quote"),
      askSize: decimal(q, "askSize", "quote"),
    };
    if (compareDecimals(draft.quote.bidPrice, draft.quote.askPrice) > 0) {
      throw new RangeError(`quote.bidPrice ${q.bidPrice} is above quote.askPrice ${q.askPrice}`);
    }
  } else {
    throw new TypeError("a tick needs exactly one body: trade or quote");
  }
  if (tick.dedupId !== undefined && tick.dedupId !== null && tick.dedupId !== "") {
    const dedupId = String(tick.dedupId);
    if (dedupId.length > MAX_ID) throw new TypeError(`dedupId is over ${MAX_ID} characters`);
    draft.dedupId = dedupId;
  }
  return draft;
}

module.exports = { tickToJson, timestampToJson, parseTimestamp, toTimestamp, toDraft, compareDecimals };
