/**
 * The NATS JetStream transport as the conformance suite makes it, from
 * `NATS_URL`; also imported by the consumer child process. A short ack wait
 * so a killed member's message goes to another member within a test; short
 * retry backoff.
 *
 * @module
 */
import type { Transport } from "../../core/transport.ts";
import { connectNats } from "../../transports/nats/transport.ts";

/** Connects with the test timings. */
export default function connect(): Promise<Transport> {
  return connectNats({
    servers: Deno.env.get("NATS_URL"),
    ackWaitMs: 2000,
    retryBaseMs: 50,
    groupInactiveMs: 300_000, // test groups go away on their own
  });
}
