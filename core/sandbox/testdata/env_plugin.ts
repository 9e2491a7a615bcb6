// A plugin that declares it reads HOME.
import { definePlugin } from "../../plugin.ts";

export default definePlugin({
  manifest: {
    name: "env-reader",
    version: "1.0.0",
    kind: "extension",
    api: "^1",
    provides: ["extension:env-reader"],
    permissions: { env: ["HOME"] },
  },
  setup: () => Promise.resolve({ stop: () => Promise.resolve() }),
});
