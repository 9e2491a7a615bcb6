/**
 * Test child for `request_reply_test.ts`: a NATS transport with node id
 * `Deno.args[0]` answering `Deno.args[1]` (with its node id and the body),
 * printing "ready" once answering; it runs until killed.
 *
 * @module
 */
import { connectNats } from "./transport.ts";

const [nodeId, topic] = Deno.args;
const t = await connectNats({ nodeId, mode: "core", announceMs: 100 });
await t.respond(topic, (body) => Promise.resolve({ on: nodeId, body }));
console.log("ready");
await new Promise(() => {});
