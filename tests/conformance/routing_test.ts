/**
 * The conformance suite through the routing facade: over two in-memory
 * transports (rules send some cases' topics to one, the rest to the other),
 * and over Redis Streams and NATS JetStream.
 */
import {
  MemoryBroker,
  memoryTransport,
} from "../../testing/memory_transport.ts";
import { conformance } from "../../testing/conformance.ts";
import { routedTransport } from "../../core/transport_routing.ts";
import connectRouted, { RULES } from "./_routed_connect.ts";
import { restartService } from "./_services.ts";

const a = new MemoryBroker();
const b = new MemoryBroker();
conformance("routed over two memory transports", () =>
  Promise.resolve(
    routedTransport({
      transports: {
        redis: memoryTransport({ broker: a }),
        nats: memoryTransport({ broker: b }),
      },
      rules: RULES.map(({ pattern, transport }) => ({ pattern, transport })),
      default: "nats",
    }),
  ));

const ready = Deno.env.get("REDIS_URL") && Deno.env.get("NATS_URL");
conformance("routed over redis-streams and nats", connectRouted, {
  ignore: ready
    ? undefined
    : 'REDIS_URL and NATS_URL are not set (run: eval "$(deno task services)")',
  sanitize: false,
  connectModule: new URL("./_routed_connect.ts", import.meta.url).href,
  restartBroker: () => restartService("redis"),
});
