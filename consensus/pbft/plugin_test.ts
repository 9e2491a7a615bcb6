import assert from "node:assert/strict";
import { ed25519 } from "@noble/curves/ed25519.js";
import { createTestKernel } from "../../core/testing.ts";
import pbft, { type PbftConsensus } from "./plugin.ts";

const b64url = (u: Uint8Array) =>
  btoa(String.fromCharCode(...u)).replaceAll("+", "-").replaceAll("/", "_")
    .replace(/=+$/, "");

function members(self = "test-node") {
  const ids = [self, "n2", "n3", "n4"];
  const keys = ids.map(() => ed25519.utils.randomSecretKey());
  return {
    keys: keys.map(b64url),
    members: ids.map((id, i) => ({
      id,
      url: `http://127.0.0.1:${1 + i}`,
      publicKey: b64url(ed25519.getPublicKey(keys[i])),
    })),
  };
}

/** The test kernel's data dir is "."; run inside a temporary folder. */
async function inTempDir(fn: () => Promise<void>): Promise<void> {
  const cwd = Deno.cwd();
  const dir = await Deno.makeTempDir({ prefix: "plexus-pbft-plugin-" });
  Deno.chdir(dir);
  try {
    await fn();
  } finally {
    Deno.chdir(cwd);
    await Deno.remove(dir, { recursive: true });
  }
}

const secret = "plugin-test-secret-0123";

Deno.test("pbft plugin: a member starts in view 0 under the first member as primary and keeps its log in DATA_DIR/pbft", async () => {
  await inTempDir(async () => {
    const m = members();
    await using t = await createTestKernel([pbft], {
      pluginConfig: {
        pbft: { members: m.members, privateKey: m.keys[0], secret },
      },
    });
    const api = t.kernel.get<PbftConsensus>("consensus:pbft");
    assert.equal(t.kernel.get("consensus:*"), api);
    assert.equal(api.leader(), "test-node");
    assert.equal(api.isLeader(), true);
    assert.equal(api.epoch(), 0);
    const ms = await api.members();
    assert.deepEqual(ms.map((x) => [x.id, x.status]), [
      ["test-node", "up"],
      ["n2", "down"],
      ["n3", "down"],
      ["n4", "down"],
    ]);
    const res = await t.api("/api/v1/pbft/status", {}, "viewer");
    assert.equal(res.status, 200);
    const s = await res.json();
    assert.equal(s.primary, "test-node");
    assert.equal(s.view, 0);
    assert.ok((await Deno.stat("pbft/pbft.log")).isFile);
  });
});

Deno.test("pbft plugin: refuses to start off the member list, without a key, or with another member's key", async () => {
  await inTempDir(async () => {
    const m = members("someone-else");
    await assert.rejects(
      createTestKernel([pbft], {
        pluginConfig: {
          pbft: { members: m.members, privateKey: m.keys[0], secret },
        },
      }),
      /this node 'test-node' is not in members \[someone-else,n2,n3,n4\]/,
    );
    const ok = members();
    const before = Deno.env.get("PLEXUS_PBFT_PRIVATE_KEY");
    Deno.env.delete("PLEXUS_PBFT_PRIVATE_KEY");
    try {
      await assert.rejects(
        createTestKernel([pbft], {
          pluginConfig: { pbft: { members: ok.members, secret } },
        }),
        /pbft needs this replica's Ed25519 private key/,
      );
    } finally {
      if (before) Deno.env.set("PLEXUS_PBFT_PRIVATE_KEY", before);
    }
    await assert.rejects(
      createTestKernel([pbft], {
        pluginConfig: {
          pbft: { members: ok.members, privateKey: ok.keys[1], secret },
        },
      }),
      /private key of replica 'test-node' does not match its public key/,
    );
  });
});

Deno.test("pbft plugin: the config needs at least four distinct members with base64url public keys", () => {
  const m = members();
  const parse = (x: unknown) => pbft.manifest.config!.safeParse(x);
  assert.equal(parse({ members: m.members }).success, true);
  assert.equal(parse({ members: m.members.slice(0, 3) }).success, false);
  assert.equal(
    parse({ members: [...m.members.slice(0, 3), m.members[0]] }).success,
    false,
  );
  assert.equal(
    parse({ members: m.members.map((x) => ({ ...x, publicKey: "nope" })) })
      .success,
    false,
  );
});
