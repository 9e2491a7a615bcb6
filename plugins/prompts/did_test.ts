import assert from "node:assert/strict";
import { generateAgentKey } from "../../sdk/keys.ts";
import { createDidResolvers } from "./did.ts";

Deno.test("did resolvers: did:key resolves to its key; other methods need a resolver", async () => {
  const resolvers = createDidResolvers();
  const key = await generateAgentKey();
  const raw = Uint8Array.fromBase64(key.publicKey, { alphabet: "base64url" });
  assert.deepEqual(await resolvers.resolve(key.id), raw);
  assert.equal(resolvers.didKey(raw), key.id);
  await assert.rejects(
    resolvers.resolve("did:web:example.org"),
    /no DID resolver for 'did:web:example.org' \(methods: key\)/,
  );
  await assert.rejects(resolvers.resolve("did:key:zNope"), /cannot resolve/);
  const remove = resolvers.register({
    method: "web",
    resolve: () => Promise.resolve(raw),
  });
  assert.equal(resolvers.supports("did:web:example.org"), true);
  assert.deepEqual(await resolvers.resolve("did:web:example.org"), raw);
  remove();
  assert.equal(resolvers.supports("did:web:example.org"), false);
});
