import assert from "node:assert/strict";
import { z } from "zod";
import {
  capabilityMatches,
  parseRequirement,
  PluginError,
  validatePlugin,
} from "./plugin.ts";

const good = () => ({
  manifest: {
    name: "demo",
    version: "1.2.3",
    kind: "extension",
    api: "^1",
    provides: ["extension:demo"],
    requires: ["state:kv", "transport:redis-streams@^1.2"],
    config: z.object({ x: z.number() }),
    permissions: { net: ["127.0.0.1:6379"], read: false },
  },
  setup: () => Promise.resolve({ stop: () => Promise.resolve() }),
});

Deno.test("manifest: a complete manifest is accepted", () => {
  const p = validatePlugin(good(), "test");
  assert.equal(p.manifest.name, "demo");
});

// Each row breaks one field and names the message that must point at it.
const BAD_FIELDS: [string, (m: Record<string, unknown>) => void, RegExp][] = [
  ["name missing", (m) => delete m.name, /name: .*got nothing/],
  [
    "name upper case",
    (m) => (m.name = "Demo"),
    /name: expected a lower-case name.*got "Demo"/,
  ],
  [
    "version not semver",
    (m) => (m.version = "one"),
    /version: expected a semantic version.*got "one"/,
  ],
  ["kind unknown", (m) => (m.kind = "widget"), /kind: .*got "widget"/],
  [
    "api not a range",
    (m) => (m.api = "latest!"),
    /api: expected a semver range.*got "latest!"/,
  ],
  [
    "provides not an array",
    (m) => (m.provides = "extension:demo"),
    /provides: .*got "extension:demo"/,
  ],
  [
    "provides bad capability",
    (m) => (m.provides = ["demo"]),
    /provides\.0: expected 'kind:name'.*got "demo"/,
  ],
  [
    "requires bad capability",
    (m) => (m.requires = ["kv"]),
    /requires\.0: expected 'kind:name'/,
  ],
  [
    "requires bad range",
    (m) => (m.requires = ["state:kv@nope!"]),
    /requires\.0: the part after '@' must be a semver range/,
  ],
  [
    "config not zod",
    (m) => (m.config = { type: "object" }),
    /config: expected a zod schema/,
  ],
  [
    "permissions unknown key",
    (m) => (m.permissions = { network: true }),
    /permissions: .*network/,
  ],
  [
    "permissions bad value",
    (m) => (m.permissions = { net: "yes" }),
    /permissions\.net: .*got "yes"/,
  ],
  ["unknown field", (m) => (m.provide = []), /provide/],
  [
    "startTimeoutMs negative",
    (m) => (m.startTimeoutMs = -1),
    /startTimeoutMs: .*got -1/,
  ],
];

for (const [what, breakIt, message] of BAD_FIELDS) {
  Deno.test(`manifest: ${what} is refused with a message naming the field`, () => {
    const p = good();
    breakIt(p.manifest as unknown as Record<string, unknown>);
    assert.throws(() => validatePlugin(p, "test"), (err) => {
      assert.ok(err instanceof PluginError);
      assert.match(err.message, message);
      assert.equal(err.phase, "manifest");
      return true;
    });
  });
}

Deno.test("manifest: errors name the plugin, or the specifier when the name is unusable", () => {
  const p = good();
  (p.manifest as Record<string, unknown>).version = "x";
  assert.throws(
    () => validatePlugin(p, "./demo.ts"),
    (e: PluginError) => e.plugin === "demo",
  );
  const q = good();
  delete (q.manifest as Record<string, unknown>).name;
  assert.throws(
    () => validatePlugin(q, "./demo.ts"),
    (e: PluginError) => e.plugin === "./demo.ts",
  );
});

Deno.test("manifest: a default export that is not an object, or lacks setup, is refused", () => {
  assert.throws(
    () => validatePlugin(42, "./x.ts"),
    /\.\/x\.ts: default export must be a plugin object/,
  );
  const p = good() as Record<string, unknown>;
  delete p.setup;
  assert.throws(
    () => validatePlugin(p, "./x.ts"),
    /plugin 'demo' has no setup function/,
  );
});

Deno.test("capabilities: wildcards match any name of a kind, nothing else", () => {
  assert.ok(capabilityMatches("consensus:*", "consensus:raft"));
  assert.ok(capabilityMatches("state:kv", "state:kv"));
  assert.ok(!capabilityMatches("consensus:*", "transport:raft"));
  assert.ok(!capabilityMatches("state:kv", "state:kv2"));
  assert.deepEqual(parseRequirement("transport:kafka@>=1.2 <2"), {
    capability: "transport:kafka",
    range: ">=1.2 <2",
  });
  assert.deepEqual(parseRequirement("state:kv"), {
    capability: "state:kv",
    range: undefined,
  });
});
