// A balancer: its contract (pick/report) is synchronous.
import { definePlugin } from "../../plugin.ts";

export default definePlugin({
  manifest: {
    name: "sync-balancer",
    version: "1.0.0",
    kind: "balancer",
    api: "^1",
    provides: ["balancer:sync"],
  },
  setup: () =>
    Promise.resolve({
      api: { pick: () => undefined, report: () => {} },
      stop: () => Promise.resolve(),
    }),
});
