// Run by load_test.ts with --allow-read only: a plugin granted env access
// the process does not have must be refused with a message that says so.
import { loadAtTrust } from "../load.ts";

try {
  await loadAtTrust(new URL("./env_plugin.ts", import.meta.url).href, {
    pluginTrust: { "env-reader": "worker" },
    pluginGrants: { "env-reader": { env: ["HOME"] } },
  });
  console.log("loaded");
} catch (err) {
  console.log((err as Error).message);
}
