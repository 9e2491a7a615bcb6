import assert from "node:assert/strict";
import { ConfigError } from "./config.ts";
import { kindSpecifiers } from "./node.ts";

const builtins = {
  "transports/mail": () => Promise.resolve({}),
  "consensus/coin": () => Promise.resolve({}),
  "balancers/dice": () => Promise.resolve({}),
};

Deno.test("node: --transport, --consensus and --balancer name entries of the catalog passed in", () => {
  assert.deepEqual(
    kindSpecifiers(
      { transport: "mail", consensus: "coin", balancer: "dice" },
      builtins,
    ),
    [
      "builtin:transports/mail",
      "builtin:consensus/coin",
      "builtin:balancers/dice",
    ],
  );
  assert.deepEqual(kindSpecifiers({}, {}), []);
});

Deno.test("node: a kind missing from the catalog is a ConfigError listing what exists", () => {
  assert.throws(
    () => kindSpecifiers({ consensus: "raft" }, builtins),
    (e: unknown) =>
      e instanceof ConfigError &&
      /--consensus: unknown consensus 'raft' \(built in: coin; no loaded plugin provides 'consensus:raft'\)/
        .test(
          e.message,
        ),
  );
  assert.throws(
    () => kindSpecifiers({ transport: "kafka" }, {}),
    /--transport: unknown transport 'kafka' \(built in: none; no loaded plugin provides 'transport:kafka'\)/,
  );
});

Deno.test("node: a kind that is not built in is fine when a loaded plugin provides it, and nothing more is loaded for it", () => {
  assert.deepEqual(
    kindSpecifiers(
      { balancer: "fewest-picks", consensus: "coin" },
      builtins,
      ["balancer:fewest-picks", "extension:x"],
    ),
    ["builtin:consensus/coin"],
  );
  assert.throws(
    () => kindSpecifiers({ balancer: "fewest" }, builtins, ["balancer:dice2"]),
    /unknown balancer 'fewest'/,
  );
});

Deno.test("node: --transport is repeatable and the config's transport is one more entry, each loaded once", () => {
  const catalog = {
    ...builtins,
    "transports/pigeon": () => Promise.resolve({}),
  };
  assert.deepEqual(
    kindSpecifiers(
      { transport: "mail", transports: ["pigeon", "mail"] },
      catalog,
    ),
    ["builtin:transports/mail", "builtin:transports/pigeon"],
  );
  assert.throws(
    () => kindSpecifiers({ transports: ["mail", "owl"] }, catalog),
    /--transport: unknown transport 'owl'/,
  );
});
