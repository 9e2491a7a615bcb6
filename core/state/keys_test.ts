import assert from "node:assert/strict";

/** The key list of a module doc (` * ` lines) or of a markdown code block. */
function keyList(text: string, docComment: boolean): string[] {
  const lines = text.split("\n");
  const fence = docComment ? " * ```" : "```";
  const start = lines.findIndex((l, i) =>
    l === fence && (lines[i + 1] ?? "").includes('["plugins", plugin')
  );
  const end = lines.indexOf(fence, start + 1);
  assert.ok(start >= 0 && end > start, "key list block found");
  return lines.slice(start + 1, end).map((l) =>
    (docComment ? l.slice(3) : l).trimEnd()
  );
}

Deno.test("keys: docs/state.md lists exactly the key layouts of core/state/keys.ts", async () => {
  const code = await Deno.readTextFile(new URL("./keys.ts", import.meta.url));
  const doc = await Deno.readTextFile(
    new URL("../../docs/state.md", import.meta.url),
  );
  const fromCode = keyList(code, true);
  assert.ok(fromCode.length > 20);
  assert.deepEqual(keyList(doc, false), fromCode);
});
