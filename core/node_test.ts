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
      /--consensus: unknown consensus 'raft' \(built in: coin\)/.test(
        e.message,
      ),
  );
  assert.throws(
    () => kindSpecifiers({ transport: "kafka" }, {}),
    /--transport: unknown transport 'kafka' \(built in: none\)/,
  );
});
