import connect from "./_kafka_connect.ts";
import { restartService } from "./_services.ts";
import { conformance } from "../../testing/conformance.ts";

const brokers = Deno.env.get("KAFKA_BROKERS");
if (!brokers && Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1") {
  Deno.test("conformance kafka: KAFKA_BROKERS is set", () => {
    throw new Error(
      'KAFKA_BROKERS required (PLEXUS_REQUIRE_SERVICES=1) but not set (run: eval "$(deno task services)")',
    );
  });
}

conformance("kafka", connect, {
  ignore: brokers
    ? undefined
    : 'KAFKA_BROKERS is not set (run: eval "$(deno task services)")',
  sanitize: false,
  connectModule: new URL("./_kafka_connect.ts", import.meta.url).href,
  // A SIGKILLed broker recovers every partition's log before it serves;
  // scripts/services.sh waits up to PLEXUS_KAFKA_START_S (240 s) for it.
  restartBroker: () => restartService("kafka", { timeoutMs: 250_000 }),
});
