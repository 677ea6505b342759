// Reads a tickstream SSE stream with the `eventsource` package (a spec-conformant EventSource for
// Node), then resumes from the last id it saw, and prints both runs as JSON lines:
// {"run": 1|2, "type": <event name>, "id": <lastEventId>, "data": <parsed data>}.
// Usage: node sse_check.js URL COUNT
"use strict";
const { EventSource } = require("eventsource");

const [url, count = "20"] = process.argv.slice(2);

function read(run, from) {
  return new Promise((resolve, reject) => {
    const target = from ? `${url}${url.includes("?") ? "&" : "?"}last_event_id=${encodeURIComponent(from)}` : url;
    const source = new EventSource(target);
    let seen = 0;
    let last = from;
    let done = false;
    const timer = setTimeout(() => { source.close(); reject(new Error("timeout")); }, 20000);
    for (const type of ["trade", "quote", "reset"]) {
      source.addEventListener(type, (event) => {
        if (done) return; // events already parsed when we closed
        console.log(JSON.stringify({ run, type, id: event.lastEventId, data: JSON.parse(event.data) }));
        if (type === "reset") return;
        last = event.lastEventId;
        if (++seen >= Number(count)) {
          done = true;
          clearTimeout(timer);
          source.close();
          resolve(last);
        }
      });
    }
    source.onerror = (error) => { if (source.readyState === EventSource.CLOSED) reject(error); };
  });
}

read(1, null)
  .then((last) => read(2, last))
  .catch((error) => { console.error(String(error)); process.exitCode = 1; });
