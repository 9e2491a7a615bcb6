/**
 * The NATS transport in `core` mode (at most once) as the conformance suite
 * makes it, from `NATS_URL`.
 *
 * @module
 */
import type { Transport } from "../../core/transport.ts";
import { connectNats } from "../../transports/nats/transport.ts";

/** Connects in core mode with a short retry backoff. */
export default function connect(): Promise<Transport> {
  return connectNats({
    servers: Deno.env.get("NATS_URL"),
    mode: "core",
    retryBaseMs: 50,
  });
}
