/**
 * Sealing keys over an agent's session (docs/security.md, "Agents as
 * recipients"): the gateway answers requests on `agent.{id}.sealing-keys`.
 *
 * - `{"op":"publish","x25519","sig"}`: the agent's X25519 public key and its
 *   Ed25519 signature over the key statement (`plexus-sealing-key/v1`, its
 *   directory id, the key). The node checks the signature against the
 *   agent's **enrolled** key and writes the directory entry
 *   `["sealing","keys","agent:{id}"]`; answers `{"id":"agent:{id}"}`.
 * - `{"op":"lookup","id":"node:N"}`: a sender's public keys from the
 *   directory, `{"id","x25519","ed25519"}` (base64url), so the agent can
 *   check a sealed message's signature. The agent trusts its node's answer
 *   as nodes trust the shared KV.
 * - `{"op":"refused","id","code","detail"}`: the agent refused sealed
 *   message `id`; the node logs it (warn) and counts it in
 *   `plexus_sealed_agent_refused_total{reason}`, so refusals at agents are
 *   seen where refusals at nodes are. Answers `{}`.
 *
 * The channel must let the agent's roles publish (`gateway.channels`).
 *
 * @module
 */
import { GatewayRequestError } from "./connection/requests.ts";
import type { RequestHandler } from "./gateway.ts";
import {
  type KvSealingDirectory,
  SealingKeyError,
} from "../core/security/sealing_keys.ts";
import type { SealedRefusal } from "../core/security/sealed_transport.ts";
import type { Logger } from "../core/observe/logger.ts";
import type { MetricsRegistry } from "../core/observe/metrics.ts";

/** The agent channel name sealing-key requests use. */
export const SEALING_KEYS_CHANNEL = "sealing-keys";

const REFUSALS = new Set<string>(
  [
    "not_sealed",
    "malformed",
    "readdressed",
    "replay_window",
    "unknown_sender",
    "bad_signature",
    "not_recipient",
    "no_key",
    "tampered",
    "replay",
  ] satisfies SealedRefusal[],
);

const B64U = { alphabet: "base64url", omitPadding: true } as const;

function bytes(value: unknown, field: string): Uint8Array {
  try {
    if (typeof value !== "string") throw new TypeError();
    return Uint8Array.fromBase64(value, { alphabet: "base64url" });
  } catch {
    throw new GatewayRequestError(
      "bad_request",
      `'${field}' must be base64url, got ${typeof value}`,
    );
  }
}

/**
 * Registers the `agent.*.sealing-keys` request handler with `onRequest`;
 * returns the function that removes it.
 *
 * @example Usage
 * ```ts ignore
 * const off = serveSealingKeys(gateway.api, kvSealingDirectory(kv));
 * ```
 */
export function serveSealingKeys(
  gateway: { onRequest(pattern: string, fn: RequestHandler): () => void },
  directory: KvSealingDirectory,
  options: { metrics?: MetricsRegistry; log?: Logger } = {},
): () => void {
  const refusals = options.metrics?.counter(
    "plexus_sealed_agent_refused_total",
    "Sealed messages agents refused (reported by their SDK), by reason",
  );
  return gateway.onRequest(
    `agent.*.${SEALING_KEYS_CHANNEL}`,
    async ({ agentId, payload }) => {
      const p = (payload ?? {}) as Record<string, unknown>;
      if (p.op === "refused") {
        if (
          typeof p.code !== "string" || !REFUSALS.has(p.code) ||
          typeof p.id !== "string" || p.id.length > 128 ||
          (p.detail !== undefined && typeof p.detail !== "string")
        ) {
          throw new GatewayRequestError(
            "bad_request",
            "'refused' needs 'id' (a message id), 'code' (a sealed refusal code) and an optional 'detail'",
          );
        }
        refusals?.inc({ reason: p.code });
        options.log?.warn("sealed message refused by agent", {
          agent: agentId,
          id: p.id,
          reason: p.code,
          detail: (p.detail as string | undefined)?.slice(0, 500),
        });
        return {};
      }
      if (p.op === "publish") {
        try {
          await directory.publishAgent(
            agentId,
            bytes(p.x25519, "x25519"),
            bytes(p.sig, "sig"),
          );
        } catch (err) {
          if (err instanceof SealingKeyError) {
            throw new GatewayRequestError("bad_request", err.message);
          }
          throw err;
        }
        return { id: `agent:${agentId}` };
      }
      if (p.op === "lookup") {
        if (typeof p.id !== "string" || p.id.length > 256) {
          throw new GatewayRequestError(
            "bad_request",
            "'id' must be a directory id like 'node:n1'",
          );
        }
        let peer;
        try {
          peer = await directory.lookup(p.id);
        } catch (err) {
          throw new GatewayRequestError(
            "bad_request",
            (err as Error).message,
          );
        }
        if (!peer) {
          throw new GatewayRequestError(
            "bad_request",
            `'${p.id}' has no published sealing key`,
          );
        }
        const ed = new Uint8Array(
          await crypto.subtle.exportKey("raw", peer.ed25519),
        );
        return {
          id: peer.id,
          x25519: peer.x25519.toBase64(B64U),
          ed25519: ed.toBase64(B64U),
        };
      }
      throw new GatewayRequestError(
        "bad_request",
        `unknown op ${
          JSON.stringify(p.op)?.slice(0, 40)
        }: expected 'publish' or 'lookup'`,
      );
    },
  );
}
