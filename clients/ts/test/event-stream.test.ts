// The event-stream parser, without a server: `node --test event-stream.test.js` (tests/ts/test_ts_node_tests.py
// runs it). The server's own framing is checked against the real service in live.ts; here, the framing
// any server may legally send, cut into chunks anywhere.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { EventStreamParser, type StreamEvent } from "../src/event-stream.js";

const encoder = new TextEncoder();

/** Every event (and the parser's final state) of `chunks`, pushed in order, then the end of the stream. */
function parse(chunks: (string | Uint8Array)[], lastEventId?: string) {
  const parser = new EventStreamParser(lastEventId);
  const comments: string[] = [];
  parser.onComment = (text) => comments.push(text);
  const events: StreamEvent[] = [];
  for (const chunk of chunks) events.push(...parser.push(typeof chunk === "string" ? encoder.encode(chunk) : chunk));
  events.push(...parser.end());
  return { events, comments, lastEventId: parser.lastEventId, retry: parser.retry };
}

/** The stream's bytes cut at every position: each cut must read the same as the whole. */
function everySplit(bytes: Uint8Array): Uint8Array[][] {
  const splits: Uint8Array[][] = [[bytes], [...bytes].map((b) => Uint8Array.of(b))];
  for (let at = 1; at < bytes.length; at++) splits.push([bytes.slice(0, at), bytes.slice(at)]);
  return splits;
}

describe("EventStreamParser", () => {
  it("reads the same events however the bytes are cut: mid-line, mid-CRLF, mid-character", () => {
    const stream = encoder.encode(
      "\uFEFF: stream open\r\n\r\nid: 1\r\ndata: {\"a\":\"é😀\"}\r\n\r\nevent: error\rdata: one\rdata: two\r\rid: 3\ndata: last\n\n",
    );
    const expected: StreamEvent[] = [
      { type: "message", data: '{"a":"é😀"}', lastEventId: "1" },
      { type: "error", data: "one\ntwo", lastEventId: "1" },
      { type: "message", data: "last", lastEventId: "3" },
    ];
    for (const chunks of everySplit(stream)) {
      const read = parse(chunks);
      assert.deepEqual(read.events, expected, `cut as ${chunks.map((c) => c.length).join("+")} bytes`);
      assert.deepEqual(read.comments, [" stream open"]);
    }
  });

  it("takes a CR that ends one chunk and an LF that starts the next as one line end", () => {
    // Read as two line ends, the LF would make a blank line and dispatch "a" alone.
    assert.deepEqual(parse(["data: a\r", "\ndata: b\r\n\r\n"]).events, [{ type: "message", data: "a\nb", lastEventId: "" }]);
    // A CR alone ends a line; an LF after the next character is a line end of its own.
    assert.deepEqual(parse(["data: a\r", "data: b\r", "\r"]).events, [{ type: "message", data: "a\nb", lastEventId: "" }]);
    // An empty chunk between CR and LF changes nothing.
    assert.deepEqual(parse(["data: a\r", "", "\n\r\n"]).events, [{ type: "message", data: "a", lastEventId: "" }]);
  });

  it("joins data lines with LF and drops only the last one", () => {
    assert.deepEqual(parse(["data: one\ndata:\ndata:  three\n\n"]).events, [
      { type: "message", data: "one\n\n three", lastEventId: "" },
    ]);
  });

  it("strips one space after the colon, and a field without a colon has an empty value", () => {
    const read = parse(["data:no space\ndata:  two spaces\ndata\n\n"]);
    assert.deepEqual(read.events.map((e) => e.data), ["no space\n two spaces\n"]);
    assert.deepEqual(parse(["data\n\n"]).events, [{ type: "message", data: "", lastEventId: "" }]);
  });

  it("ignores comments and unknown fields, and dispatches nothing without data", () => {
    const read = parse([": heartbeat\n\nevent: ping\n\nfoo: bar\n\n:\n\ndata: after\n\n"]);
    // The event type of a dispatch without data is forgotten too: "after" is a message.
    assert.deepEqual(read.events, [{ type: "message", data: "after", lastEventId: "" }]);
    assert.deepEqual(read.comments, [" heartbeat", ""]);
  });

  it("keeps the last id for later events, ignores an id holding NUL, and an empty id clears it", () => {
    const read = parse(["id: 1\ndata: a\n\ndata: b\n\nid: 2\0x\ndata: c\n\nid\ndata: d\n\nid: 9\n\n"]);
    assert.deepEqual(read.events.map((e) => [e.data, e.lastEventId]), [["a", "1"], ["b", "1"], ["c", "1"], ["d", ""]]);
    // A blank line without data dispatches no event, yet sets the stream's last event id.
    assert.equal(read.lastEventId, "9");
  });

  it("starts from the id a reconnection resumed after", () => {
    const read = parse(["event: error\ndata: {}\n\n"], "41");
    assert.deepEqual(read.events, [{ type: "error", data: "{}", lastEventId: "41" }]);
  });

  it("takes retry only when it is all ASCII digits", () => {
    assert.equal(parse(["retry: 2500\n\n"]).retry, 2500);
    assert.equal(parse(["retry: 2500\nretry: 12a\nretry: -1\nretry:\nretry: 1.5\n\n"]).retry, 2500);
    assert.equal(parse(["retry: 0\n"]).retry, 0);
  });

  it("drops an event the end of the stream cut off", () => {
    assert.deepEqual(parse(["data: whole\n\ndata: cut off"]).events, [{ type: "message", data: "whole", lastEventId: "" }]);
    assert.deepEqual(parse(["data: cut off\n"]).events, []);
  });

  it("drops one byte order mark at the very start only, and decodes bad bytes as U+FFFD", () => {
    const bom = Uint8Array.of(0xef, 0xbb, 0xbf);
    assert.deepEqual(parse([bom.slice(0, 1), bom.slice(1), "data: x\n\n"]).events.map((e) => e.data), ["x"]);
    // A second BOM is part of the field name, which no field has: the line is ignored.
    assert.deepEqual(parse(["\uFEFF\uFEFFdata: x\n\ndata: y\n\n"]).events.map((e) => e.data), ["y"]);
    assert.deepEqual(parse([Uint8Array.of(0x64, 0x61, 0x74, 0x61, 0x3a, 0x20, 0xff, 0x0a, 0x0a)]).events.map((e) => e.data), ["\uFFFD"]);
  });
});
