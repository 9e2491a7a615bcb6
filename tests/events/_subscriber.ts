/**
 * A named event subscriber as its own process: opens the shared KV, and for
 * each `custom.*` event appends its offset as a line to the output file
 * (written before the handler returns, so a line means "handled").
 *
 * deno run --unstable-kv -A tests/events/_subscriber.ts KV OUT NAME
 */
import { openStore } from "../../core/state/store.ts";
import { createEventBus } from "../../plugins/events/bus.ts";
import { createNodeEvents } from "../../core/events.ts";

const [spec, out, name] = Deno.args;
const kv = await openStore(spec);
const file = await Deno.open(out, { append: true, create: true });
const encoder = new TextEncoder();
const bus = createEventBus(kv, { events: createNodeEvents("subscriber") });
await bus.subscribe('type ^= "custom."', async (e) => {
  await file.write(encoder.encode(e.offset + "\n"));
}, { from: "start", name, ackEvery: 25, maxPollMs: 50 });
console.log("subscribed");
