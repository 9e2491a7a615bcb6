import { connectRedisStreams } from "../../transports/redis-streams/transport.ts";
import { conformance } from "./suite.ts";

const url = Deno.env.get("REDIS_URL");
if (!url && Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1") {
  Deno.test("conformance redis-streams: REDIS_URL is set", () => {
    throw new Error(
      'REDIS_URL required (PLEXUS_REQUIRE_SERVICES=1) but not set (run: eval "$(deno task services)")',
    );
  });
}

conformance(
  "redis-streams",
  () => connectRedisStreams({ url, claimIntervalMs: 200, retryBaseMs: 50 }),
  {
    ignore: url
      ? undefined
      : 'REDIS_URL is not set (run: eval "$(deno task services)")',
    sanitize: false,
  },
);
