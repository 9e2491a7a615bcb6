/**
 * API roles and what each may do. Deny by default: an unknown role or an
 * unknown permission is never allowed. Each role has everything the role
 * below it has.
 *
 * | permission         | viewer | analyst | operator | admin |
 * | ------------------ | :----: | :-----: | :------: | :---: |
 * | `plugins:read`     |   ✓    |    ✓    |    ✓     |   ✓   |
 * | `cluster:read`     |   ✓    |    ✓    |    ✓     |   ✓   |
 * | `tasks:read`       |   ✓    |    ✓    |    ✓     |   ✓   |
 * | `agents:read`      |   ✓    |    ✓    |    ✓     |   ✓   |
 * | `tasks:write`      |        |    ✓    |    ✓     |   ✓   |
 * | `prompt:send`      |        |    ✓    |    ✓     |   ✓   |
 * | `agents:write`     |        |         |    ✓     |   ✓   |
 * | `agents:send`      |        |         |    ✓     |   ✓   |
 * | `agents:broadcast` |        |         |    ✓     |   ✓   |
 * | `queues:write`     |        |         |    ✓     |   ✓   |
 * | `admin`            |        |         |          |   ✓   |
 *
 * Intended use on the HTTP API (CONTRACTS.md): `GET /api/v1/plugins` →
 * `plugins:read`; `GET /api/v1/cluster` → `cluster:read`;
 * `GET /api/v1/tasks/{id}` → `tasks:read`; `POST /api/v1/tasks` →
 * `tasks:write`; `POST /send/prompt` and `POST /api/v1/prompts` →
 * `prompt:send`; `GET /api/v1/agents/{id}/status` → `agents:read`;
 * `POST /api/v1/agents` (enrol) → `agents:write`;
 * `POST /api/v1/agents/{id}/send` → `agents:send`;
 * `POST /api/v1/agents/broadcast` → `agents:broadcast`;
 * `POST /api/v1/tasks/dead/{id}/replay` and `POST /api/v1/tasks/dead/purge`
 * → `queues:write`; token revocation and
 * other node administration → `admin`.
 *
 * @module
 */

/** The API roles, least privileged last. */
export const ROLES = ["admin", "operator", "analyst", "viewer"] as const;

/** One API role. */
export type Role = typeof ROLES[number];

/** Every permission a role can hold. */
export const PERMISSION_NAMES = [
  "plugins:read",
  "cluster:read",
  "tasks:read",
  "agents:read",
  "tasks:write",
  "prompt:send",
  "agents:write",
  "agents:send",
  "agents:broadcast",
  "queues:write",
  "admin",
] as const;

/** One permission. */
export type Permission = typeof PERMISSION_NAMES[number];

const VIEWER: readonly Permission[] = [
  "plugins:read",
  "cluster:read",
  "tasks:read",
  "agents:read",
];
const ANALYST: readonly Permission[] = [
  ...VIEWER,
  "tasks:write",
  "prompt:send",
];
const OPERATOR: readonly Permission[] = [
  ...ANALYST,
  "agents:write",
  "agents:send",
  "agents:broadcast",
  "queues:write",
];
const ADMIN: readonly Permission[] = [...OPERATOR, "admin"];

/**
 * The permission table: role → the permissions it holds (the module doc
 * shows it as a table; a test keeps the two equal).
 *
 * @example Usage
 * ```ts
 * import { PERMISSIONS } from "./roles.ts";
 * import assert from "node:assert/strict";
 * assert.ok(PERMISSIONS.analyst.includes("tasks:write"));
 * assert.ok(!PERMISSIONS.viewer.includes("tasks:write"));
 * ```
 */
export const PERMISSIONS: Readonly<Record<Role, readonly Permission[]>> = Object
  .freeze({
    admin: Object.freeze(ADMIN),
    operator: Object.freeze(OPERATOR),
    analyst: Object.freeze(ANALYST),
    viewer: Object.freeze(VIEWER),
  });

const ROLE_SET: ReadonlySet<string> = new Set(ROLES);
const GRANTS: ReadonlyMap<string, ReadonlySet<string>> = new Map(
  ROLES.map((role) => [role, new Set(PERMISSIONS[role])]),
);

/**
 * Whether `value` is one of the four roles. Safe on attacker data:
 * `"__proto__"`, `"constructor"` or a non-string are not roles.
 *
 * @example Usage
 * ```ts
 * import { isRole } from "./roles.ts";
 * import assert from "node:assert/strict";
 * assert.ok(isRole("operator"));
 * assert.ok(!isRole("root"));
 * assert.ok(!isRole("constructor"));
 * ```
 */
export function isRole(value: unknown): value is Role {
  return typeof value === "string" && ROLE_SET.has(value);
}

/**
 * Whether `role` holds `permission`. Deny by default: unknown roles and
 * unknown permissions get `false`.
 *
 * @example Usage
 * ```ts
 * import { can } from "./roles.ts";
 * import assert from "node:assert/strict";
 * assert.ok(can("operator", "agents:send"));
 * assert.ok(!can("viewer", "tasks:write"));
 * assert.ok(!can("root", "admin"));
 * ```
 */
export function can(role: string, permission: string): boolean {
  return GRANTS.get(role)?.has(permission) ?? false;
}
