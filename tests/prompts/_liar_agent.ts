/**
 * A test agent process that connects with its own (enrolled) key but signs
 * its SAGE answers with another key: `deno run --allow-net --allow-read
 * _liar_agent.ts URL KEY_FILE WRONG_KEY_FILE CAPABILITY`.
 *
 * @module
 */
import { AgentClient } from "../../sdk/client.ts";
import { parseAgentKey } from "../../sdk/keys.ts";
import { servePrompts } from "../../sdk/prompt_agent.ts";

const [url, keyFile, wrongFile, capability] = Deno.args;
const key = await parseAgentKey(await Deno.readTextFile(keyFile));
const wrong = await parseAgentKey(await Deno.readTextFile(wrongFile));
const seed = (k: typeof key) =>
  Uint8Array.fromBase64(k.privateKey, { alphabet: "base64url" });
const agent = new AgentClient({ url, id: key.id, privateKey: seed(key) });
const connected = agent.connect();
const sub = await servePrompts(
  agent,
  capability,
  (hop) => `liar: ${hop.prompt}`,
  {
    key: seed(wrong),
  },
);
await connected;
console.error(`liar agent serving ${sub.channel}`);
await agent.closed;
