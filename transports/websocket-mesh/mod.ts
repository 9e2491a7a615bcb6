/**
 * `transports/websocket-mesh`: the Transport contract over WebSocket links
 * between nodes, a full mesh with no broker and nothing stored.
 *
 * The default export is the plugin (`builtin:transports/websocket-mesh`,
 * `--transport websocket-mesh`), which provides `transport:websocket-mesh`.
 * The frames are in docs/wire-format.md.
 *
 * @module
 */
export { default } from "./plugin.ts";
export { linkUrl, type MeshConfig, meshConfig } from "./plugin.ts";
export { type MeshOptions, type MeshTransport, startMesh } from "./mesh.ts";
