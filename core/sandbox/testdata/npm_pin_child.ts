/**
 * Run by integrity_test.ts in a child `deno run` whose npm scope
 * `@plexus-test` points at the test's local registry (HOME/.npmrc): loads
 * `Deno.args[0]` pinned to `Deno.args[1]` (`-`: not pinned; verified copies under
 * `Deno.args[2]`) and prints `{"ok":true}` or `{"error": message}`.
 */
import { loadAtTrust } from "../load.ts";

const [spec, pin, dataDir] = Deno.args;
try {
  await loadAtTrust(spec, {
    pins: { pluginIntegrity: pin === "-" ? {} : { [spec]: pin }, dataDir },
    pluginTrust: { "npm-pinned": "trusted" },
  });
  console.log(JSON.stringify({ ok: true }));
} catch (err) {
  console.log(JSON.stringify({ error: (err as Error).message }));
}
