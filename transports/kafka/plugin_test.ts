import assert from "node:assert/strict";
import { kafkaConfig } from "./plugin.ts";

Deno.test("kafka plugin: the config fills defaults and refuses unknown or malformed fields", () => {
  const c = kafkaConfig.parse({});
  assert.equal(c.prefix, "plexus.");
  assert.equal(c.maxMessageBytes, 1_000_000);
  assert.equal(c.createTopics, true);
  assert.equal(
    kafkaConfig.parse({ brokers: "a:9092,b:9092" }).brokers,
    "a:9092,b:9092",
  );
  assert.equal(kafkaConfig.safeParse({ brokers: "a" }).success, false);
  assert.equal(kafkaConfig.safeParse({ prefix: "bad prefix" }).success, false);
  assert.equal(kafkaConfig.safeParse({ partitons: 3 }).success, false);
});
