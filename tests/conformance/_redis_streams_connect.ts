/**
 * The Redis Streams transport as the conformance suite makes it, from
 * `REDIS_URL`; also imported by the consumer child process. Short claim and
 * ack-wait times so takeovers happen within a test.
 *
 * @module
 */
import type { Transport } from "../../core/transport.ts";
import { connectRedisStreams } from "../../transports/redis-streams/transport.ts";

/** Connects with the test timings. */
export default function connect(): Promise<Transport> {
  return connectRedisStreams({
    url: Deno.env.get("REDIS_URL"),
    claimIntervalMs: 200,
    ackWaitMs: 2000,
    retryBaseMs: 50,
  });
}
