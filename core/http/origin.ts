/**
 * The `Origin` check on WebSocket upgrades. CORS does not cover WebSockets:
 * a browser opens one to any site, from inside the user's network and with
 * the user's cookies, and lets the page read every message. Without this
 * check a page on another site could read a node's streams (cross-site
 * WebSocket hijacking). Every upgrade is checked:
 *
 * - no `Origin` header: allowed (not a browser: agents, nodes, curl);
 * - the node's own origin (the `Origin`'s host equals the `Host` header):
 *   allowed, so pages the node serves itself work;
 * - an origin listed in `allowed` (`http.corsOrigins`): allowed;
 * - anything else, `Origin: null` included: 403 before upgrading.
 *
 * See docs/security.md ("WebSocket origins").
 *
 * @module
 */
import { errorResponse } from "./errors.ts";

/** Options for {@linkcode upgradeOriginGuard}. */
export interface UpgradeOriginOptions {
  /**
   * Origins allowed besides the node's own, e.g. `https://ops.example.com`
   * (the node config's `http.corsOrigins`). @default {[]}
   */
  allowed?: readonly string[];
  /** Called with the refused origin (e.g. to count it). */
  onRefused?: (origin: string, req: Request) => void;
}

/** True when the request asks for a WebSocket upgrade. */
export function isWebSocketUpgrade(req: Request): boolean {
  return req.headers.get("upgrade")?.toLowerCase().includes("websocket") ??
    false;
}

function parseOrigin(origin: string): URL | undefined {
  try {
    const u = new URL(origin);
    return u.protocol === "http:" || u.protocol === "https:" ? u : undefined;
  } catch {
    return undefined;
  }
}

/** The `Host` the request was sent to, as `URL.host` spells it under `protocol`. */
function requestHost(req: Request, protocol: string): string | undefined {
  const host = req.headers.get("host") ?? new URL(req.url).host;
  try {
    return new URL(`${protocol}//${host}`).host;
  } catch {
    return undefined;
  }
}

/**
 * Makes the check: the returned function answers a refused upgrade with a
 * 403 JSON error, and returns undefined for everything it lets through
 * (requests that are not upgrades included).
 *
 * @example Usage
 * ```ts
 * import { upgradeOriginGuard } from "./origin.ts";
 * const guard = upgradeOriginGuard({ allowed: ["https://ops.example.com"] });
 * const upgrade = (origin: string) =>
 *   new Request("http://127.0.0.1:8086/ws", {
 *     headers: { upgrade: "websocket", host: "127.0.0.1:8086", origin },
 *   });
 * guard(upgrade("https://evil.example"))?.status; // 403
 * guard(upgrade("https://ops.example.com")); // undefined: allowed
 * guard(upgrade("http://127.0.0.1:8086")); // undefined: the node's own origin
 * ```
 */
export function upgradeOriginGuard(
  options: UpgradeOriginOptions = {},
): (req: Request) => Response | undefined {
  // Normalized http(s) origins, and every entry as written (an extension's
  // `chrome-extension://id` has no normalized form).
  const allowed = new Set<string>();
  for (const o of options.allowed ?? []) {
    allowed.add(o.replace(/\/$/, ""));
    const u = parseOrigin(o);
    if (u) allowed.add(u.origin);
  }
  return (req) => {
    if (!isWebSocketUpgrade(req)) return undefined;
    const origin = req.headers.get("origin");
    if (origin === null) return undefined;
    if (allowed.has(origin)) return undefined;
    const u = parseOrigin(origin);
    if (
      u && (allowed.has(u.origin) || requestHost(req, u.protocol) === u.host)
    ) return undefined;
    options.onRefused?.(origin, req);
    return errorResponse(
      403,
      `WebSocket upgrade refused: origin '${
        origin.slice(0, 200)
      }' is not this node's and not in http.corsOrigins`,
    );
  };
}
