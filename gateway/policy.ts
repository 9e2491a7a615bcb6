/**
 * Who may use which gateway channel: the `gateway.channels` config block
 * and its checks. Permissions go by channel name and agent role, and
 * anything not listed is denied.
 *
 * A channel's policy is the entry for its full name, else the entry for its
 * first dot-separated segment (`policies.v2` falls under `policies`).
 *
 * @module
 */
import { z } from "zod";
import { CHANNEL_NAME_RE } from "../sdk/protocol/channels.ts";

/** Agent role names: lower case, 1-32 characters. */
export const ROLE_RE = /^[a-z][a-z0-9_-]{0,31}$/;

/** Zod schema of a role name. */
export const roleSchema = z.string().regex(
  ROLE_RE,
  "role names are 1-32 of a-z, 0-9, '_', '-', starting with a letter",
);

/** Zod schema of one channel's policy. */
export const channelPolicySchema = z.strictObject({
  /** Roles that may publish (`msg`, `req`) on `agent.{id}.{name}`. */
  publish: z.array(roleSchema).max(16).optional(),
  /** Roles that may subscribe to `backend.{id}.{name}`. */
  subscribe: z.array(roleSchema).max(16).optional(),
  /**
   * Every message must carry a per-message Ed25519 signature: the agent's
   * on `agent.*` records (refused with `err` otherwise), the node's on
   * `backend.*` records (the node signs them).
   */
  signed: z.boolean().optional(),
  /**
   * Backend → agent messages are persisted in the agent's durable queue
   * (at-least-once, acked by the agent). `false`: pushed only to a live,
   * subscribed connection, never stored. @default {true}
   */
  durable: z.boolean().optional(),
});

/** One channel's policy. */
export type ChannelPolicy = z.output<typeof channelPolicySchema>;

/** The built-in channels; a `gateway.channels` block in the config replaces them. */
export const DEFAULT_CHANNELS: Readonly<Record<string, ChannelPolicy>> = {
  heartbeat: { publish: ["agent", "worker"] },
  status: { publish: ["agent", "worker"] },
  telemetry: { publish: ["agent", "worker"] },
  requests: { publish: ["agent", "worker"] },
  results: { publish: ["worker"] },
  policies: { subscribe: ["agent", "worker"], durable: true },
  commands: { subscribe: ["agent", "worker"], signed: true, durable: true },
  tasks: { subscribe: ["worker"], durable: true },
  // Sealed payloads for agents (docs/gateway.md): the delivery channel a
  // rule's `deliver.channel` names by default, and the agent's key requests.
  sealed: { subscribe: ["agent", "worker"], durable: true },
  "sealing-keys": { publish: ["agent", "worker"] },
};

/** Zod schema of `gateway.channels`. */
export const channelsSchema = z.record(
  z.string().regex(
    CHANNEL_NAME_RE,
    "channel names are dot-separated words of letters, digits, '_', '-'",
  ),
  channelPolicySchema,
);

/**
 * The policy for channel name `name`: the entry for the full name, else for
 * its first segment; undefined when there is none (deny).
 *
 * @example Usage
 * ```ts
 * import { channelPolicy } from "./policy.ts";
 * import assert from "node:assert/strict";
 * const channels = { policies: { subscribe: ["agent"] } };
 * assert.deepEqual(channelPolicy(channels, "policies.v2"), { subscribe: ["agent"] });
 * assert.equal(channelPolicy(channels, "secrets"), undefined);
 * ```
 */
export function channelPolicy(
  channels: Readonly<Record<string, ChannelPolicy>>,
  name: string,
): ChannelPolicy | undefined {
  if (Object.hasOwn(channels, name)) return channels[name];
  const first = name.split(".", 1)[0];
  return Object.hasOwn(channels, first) ? channels[first] : undefined;
}

/** Whether an agent with `roles` may publish on a channel with `policy`. */
export function canPublish(
  policy: ChannelPolicy | undefined,
  roles: readonly string[],
): boolean {
  return !!policy?.publish?.some((r) => roles.includes(r));
}

/** Whether an agent with `roles` may subscribe to a channel with `policy`. */
export function canSubscribe(
  policy: ChannelPolicy | undefined,
  roles: readonly string[],
): boolean {
  return !!policy?.subscribe?.some((r) => roles.includes(r));
}

/** Whether backend → agent messages on a channel with `policy` are persisted. */
export function isDurable(policy: ChannelPolicy | undefined): boolean {
  return policy?.durable ?? true;
}
