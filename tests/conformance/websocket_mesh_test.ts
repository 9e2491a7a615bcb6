import { startMesh } from "../../transports/websocket-mesh/mesh.ts";
import { conformance } from "../../testing/conformance.ts";

// Each transport the suite makes is one node: it dials every live node.
const live = new Set<string>();

conformance("websocket-mesh", async () => {
  const t = await startMesh({
    secret: "conformance",
    peers: [...live],
    retryBaseMs: 50,
  });
  live.add(t.url);
  const close = t.close.bind(t);
  return Object.assign(t, {
    close: () => {
      live.delete(t.url);
      return close();
    },
  });
}, { sanitize: false });
