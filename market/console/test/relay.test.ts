import assert from "node:assert/strict";
import { test } from "node:test";
import { parseSse } from "../src/relay";

test("SSE text splits into complete events, keeping the unfinished rest", () => {
  const first = parseSse('event: log\ndata: {"line":"a"}\n\n: keepalive\n\nevent: log\ndata: {"li');
  assert.deepEqual(first.events, [{ event: "log", data: '{"line":"a"}' }]);
  assert.equal(first.rest, 'event: log\ndata: {"li');
  const second = parseSse(`${first.rest}ne":"b"}\n\nevent: end\ndata: {}\n\n`);
  assert.deepEqual(second.events, [
    { event: "log", data: '{"line":"b"}' },
    { event: "end", data: "{}" },
  ]);
  assert.equal(second.rest, "");
});

test("CRLF line ends and multi-line data are read as the SSE spec says", () => {
  const { events } = parseSse("event: error\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n");
  assert.deepEqual(events, [{ event: "error", data: '{"a":\n1}' }]);
});
