import assert from "node:assert/strict";
import {
  can,
  isRole,
  PERMISSION_NAMES,
  PERMISSIONS,
  type Role,
  ROLES,
} from "./roles.ts";

Deno.test("roles: can() answers exactly what the permission table says", () => {
  for (const role of ROLES) {
    for (const permission of PERMISSION_NAMES) {
      assert.equal(
        can(role, permission),
        PERMISSIONS[role].includes(permission),
        `${role} / ${permission}`,
      );
    }
  }
});

Deno.test("roles: each role holds everything the role below it holds, and more", () => {
  for (let i = 0; i + 1 < ROLES.length; i++) {
    const upper = new Set(PERMISSIONS[ROLES[i]]);
    const lower = PERMISSIONS[ROLES[i + 1]];
    for (const p of lower) assert.ok(upper.has(p), `${ROLES[i]} has ${p}`);
    assert.ok(
      upper.size > lower.length,
      `${ROLES[i]} has more than ${ROLES[i + 1]}`,
    );
  }
  assert.deepEqual([...PERMISSIONS.admin].sort(), [...PERMISSION_NAMES].sort());
  assert.deepEqual(PERMISSIONS.viewer.filter((p) => !p.endsWith(":read")), []);
});

Deno.test("roles: unknown roles and permissions are denied, prototype names included", () => {
  for (
    const role of [
      "root",
      "Admin",
      "",
      "__proto__",
      "constructor",
      "toString",
      "hasOwnProperty",
    ]
  ) {
    assert.equal(isRole(role), false, role);
    for (const permission of PERMISSION_NAMES) {
      assert.equal(can(role, permission), false, `${role} / ${permission}`);
    }
  }
  for (
    const permission of [
      "plugins:delete",
      "",
      "__proto__",
      "constructor",
      "length",
      "ADMIN",
    ]
  ) {
    for (const role of ROLES) {
      assert.equal(can(role, permission), false, `${role} / ${permission}`);
    }
  }
  assert.equal(isRole(["admin"]), false);
  assert.equal(isRole(null), false);
});

Deno.test("roles: the permission table cannot be changed at run time", () => {
  assert.throws(() => {
    (PERMISSIONS as Record<Role, string[]>).viewer.push("admin");
  }, TypeError);
  assert.throws(() => {
    (PERMISSIONS as Record<string, unknown>).viewer = ["admin"];
  }, TypeError);
  assert.equal(can("viewer", "admin"), false);
});

Deno.test("roles: the markdown table in the module doc matches PERMISSIONS", async () => {
  const source = await Deno.readTextFile(
    new URL("./roles.ts", import.meta.url),
  );
  const rows = source.split("\n")
    .map((l) => l.replace(/^\s*\*\s?/, ""))
    .filter((l) => l.startsWith("|"))
    .map((l) => l.split("|").slice(1, -1).map((c) => c.trim()));
  const [head, , ...body] = rows;
  assert.deepEqual(head.slice(1).sort(), [...ROLES].sort());
  const documented = new Map(
    body.map((cells) => [cells[0].replaceAll("`", ""), cells.slice(1)]),
  );
  assert.deepEqual([...documented.keys()].sort(), [...PERMISSION_NAMES].sort());
  for (const [permission, marks] of documented) {
    head.slice(1).forEach((role, i) => {
      assert.equal(
        marks[i] === "✓",
        PERMISSIONS[role as Role].includes(permission as never),
        `doc table: ${role} / ${permission}`,
      );
    });
  }
});
