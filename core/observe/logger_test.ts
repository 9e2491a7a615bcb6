import assert from "node:assert/strict";
import {
  createLogger,
  type LogRecord,
  safeStringify,
  withCorrelation,
} from "./logger.ts";

Deno.test("logger: levels filter, children add fields, errors become plain objects", () => {
  const seen: LogRecord[] = [];
  const log = createLogger({
    level: "info",
    sinks: [(r) => seen.push(r)],
    fields: { node: "n1" },
  });
  log.debug("hidden");
  const child = log.child({ plugin: "p" });
  child.error("failed", {
    error: new Error("outer", { cause: new Error("inner") }),
  });
  assert.equal(seen.length, 1);
  const r = seen[0];
  assert.deepEqual(
    { level: r.level, msg: r.msg, node: r.node, plugin: r.plugin },
    { level: "error", msg: "failed", node: "n1", plugin: "p" },
  );
  assert.deepEqual(JSON.parse(JSON.stringify(r)).error, {
    name: "Error",
    message: "outer",
    cause: { name: "Error", message: "inner" },
  });
  assert.ok(!log.enabled("debug") && log.enabled("warn"));
});

Deno.test("logger: the correlation id in force is added, an explicit one wins", async () => {
  const seen: LogRecord[] = [];
  const log = createLogger({ sinks: [(r) => seen.push(r)] });
  await withCorrelation("c-1", async () => {
    await new Promise((r) => setTimeout(r, 1));
    log.info("a");
    log.info("b", { correlationId: "explicit" });
  });
  log.info("c");
  assert.deepEqual(seen.map((r) => r.correlationId), [
    "c-1",
    "explicit",
    undefined,
  ]);
});

Deno.test("logger: a throwing sink does not stop the others; stringify never throws", () => {
  const seen: string[] = [];
  const log = createLogger({
    sinks: [() => {
      throw new Error("sink down");
    }, (r) => seen.push(r.msg)],
  });
  log.info("still here");
  assert.deepEqual(seen, ["still here"]);
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assert.match(safeStringify(cyclic), /unserializable/);
  assert.equal(safeStringify({ n: 1n }), '{"n":"1"}');
});
