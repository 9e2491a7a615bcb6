import assert from "node:assert/strict";
import {
  decodeReply,
  encodeCommand,
  replyEnd,
  RespConnection,
  RespError,
  type RespValue,
} from "./resp.ts";
import { mulberry32 } from "../../core/random.ts";

const enc = new TextEncoder();
const url = Deno.env.get("REDIS_URL");
const target = url ? new URL(url) : undefined;
const port = Number(target?.port || 6379);
const host = target?.hostname ?? "127.0.0.1";

/** RESP bytes of a value, written by hand from the protocol's description. */
function respOf(v: RespValue | RespError): string {
  if (v instanceof RespError) return `-${v.message}\r\n`;
  if (v === null) return "$-1\r\n";
  if (typeof v === "number") return `:${v}\r\n`;
  if (typeof v === "string") return `$${enc.encode(v).length}\r\n${v}\r\n`;
  return `*${v.length}\r\n${v.map(respOf).join("")}`;
}

function randomValue(r: () => number, depth = 0): RespValue {
  const k = Math.floor(r() * (depth > 2 ? 3 : 4));
  if (k === 0) return null;
  if (k === 1) return Math.floor((r() - 0.5) * 1e9);
  if (k === 2) {
    const chars = ["a", "\r", "\n", "é", "€", "😀", "$", "*", "-1", " "];
    let s = "";
    const n = Math.floor(r() * 40);
    for (let i = 0; i < n; i++) s += chars[Math.floor(r() * chars.length)];
    return s;
  }
  return Array.from(
    { length: Math.floor(r() * 5) },
    () => randomValue(r, depth + 1),
  );
}

Deno.test("resp: a reply is complete only at its last byte, and decodes to what was written (seeded)", () => {
  const r = mulberry32(20261207);
  for (let n = 0; n < 300; n++) {
    const v = randomValue(r);
    const bytes = enc.encode(respOf(v));
    for (let cut = 0; cut < bytes.length; cut++) {
      assert.equal(replyEnd(bytes, cut), -1, `seed case ${n}, cut ${cut}`);
    }
    assert.equal(replyEnd(bytes, bytes.length), bytes.length);
    const at = { i: 0 };
    assert.deepEqual(decodeReply(bytes, at), v);
    assert.equal(at.i, bytes.length);
  }
});

Deno.test("resp: two replies in one buffer end where the first does", () => {
  const one = enc.encode(respOf(["1-0", ["payload", "x"]]));
  const both = new Uint8Array([...one, ...enc.encode("+OK\r\n")]);
  assert.equal(replyEnd(both, both.length), one.length);
});

Deno.test("resp: error replies, inside an array too, and bytes that are not UTF-8", () => {
  assert.deepEqual(
    decodeReply(enc.encode("-NOGROUP no such group\r\n"), { i: 0 }),
    new RespError("NOGROUP no such group"),
  );
  const inArray = decodeReply(enc.encode("*2\r\n:1\r\n-ERR bad\r\n"), {
    i: 0,
  });
  assert.ok(inArray instanceof RespError);
  assert.equal(inArray.message, "ERR bad");
  const bad = new Uint8Array([...enc.encode("$3\r\na"), 0xff, 0x62, 13, 10]);
  assert.equal(decodeReply(bad, { i: 0 }), "a\uFFFDb");
  assert.equal(decodeReply(enc.encode("*-1\r\n"), { i: 0 }), null);
  assert.throws(() => decodeReply(enc.encode("!3\r\nabc\r\n"), { i: 0 }), {
    message: /unknown reply type/,
  });
});

Deno.test("resp: a command's bulk lengths are its arguments' UTF-8 lengths", () => {
  const args = ["XADD", "k", "é€😀", "\ud800x", "", 42, "a\r\nb"];
  const got = encodeCommand(args);
  const want = `*${args.length}\r\n` +
    args.map((a) => {
      const s = String(a);
      return `$${enc.encode(s).length}\r\n${s}\r\n`;
    }).join("");
  assert.deepEqual(got, enc.encode(want));
});

Deno.test({
  name:
    "resp: against Redis: values round-trip, an ACL user authenticates, SELECT applies, a wrong password is refused",
  ignore: !url,
  async fn() {
    const admin = new RespConnection({ host, port });
    const user = `plexus-resp-${crypto.randomUUID().slice(0, 8)}`;
    try {
      assert.equal(await admin.command(["PING"]), "PONG");
      const big = "é".repeat(100_000) + "\u0000end";
      await admin.command(["SET", `${user}:big`, big]);
      assert.equal(await admin.command(["GET", `${user}:big`]), big);
      assert.equal(await admin.command(["GET", `${user}:none`]), null);
      await admin.command([
        "ACL",
        "SETUSER",
        user,
        "on",
        ">s3cret",
        "~*",
        "+@all",
      ]);
      const authed = new RespConnection({
        host,
        port,
        username: user,
        password: "s3cret",
        db: 5,
      });
      try {
        assert.equal(await authed.command(["ACL", "WHOAMI"]), user);
        await authed.command(["SET", `${user}:db`, "five"]);
        assert.equal(await admin.command(["GET", `${user}:db`]), null);
        await admin.command(["SELECT", 5]);
        assert.equal(await admin.command(["GET", `${user}:db`]), "five");
        await admin.command(["DEL", `${user}:db`]);
        await admin.command(["SELECT", 0]);
      } finally {
        authed.close();
      }
      const wrong = new RespConnection({
        host,
        port,
        username: user,
        password: "nope",
      });
      await assert.rejects(() => wrong.command(["PING"]), RespError);
      wrong.close();
    } finally {
      await admin.command(["ACL", "DELUSER", user]).catch(() => {});
      await admin.command(["DEL", `${user}:big`]).catch(() => {});
      admin.close();
    }
  },
});

Deno.test({
  name:
    "resp: a connection Redis closes fails its command, and the next command connects again",
  ignore: !url,
  async fn() {
    const c = new RespConnection({ host, port });
    const admin = new RespConnection({ host, port });
    try {
      await c.command(["CLIENT", "SETNAME", "resp-test-victim"]);
      const id = await c.command(["CLIENT", "ID"]) as number;
      // A blocking read, then Redis drops the connection under it.
      const blocked = c.command(["BLPOP", `resp-test-${id}`, 5]);
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(await admin.command(["CLIENT", "KILL", "ID", id]), 1);
      await assert.rejects(() => blocked, /closed|reset|broken/i);
      assert.equal(await c.command(["PING"]), "PONG");
      assert.notEqual(await c.command(["CLIENT", "ID"]), id);
    } finally {
      c.close();
      admin.close();
    }
  },
});

/** A TCP server on loopback that accepts and never answers. */
function silentServer() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted: Deno.Conn[] = [];
  const acceptLoop = (async () => {
    for await (const conn of listener) accepted.push(conn);
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    accepted,
    async close() {
      listener.close();
      for (const conn of accepted) conn.close();
      await acceptLoop.catch(() => {});
    },
  };
}

Deno.test("resp: a server that never answers times the command out and frees the connection", async () => {
  const server = silentServer();
  const c = new RespConnection({ host: "127.0.0.1", port: server.port });
  try {
    await assert.rejects(
      () => c.command(["XREADGROUP", "GROUP", "g", "c"], 100),
      /no reply within 100 ms/,
    );
    // The next command opens a new connection.
    await assert.rejects(() => c.command(["PING"], 50), /no reply within/);
    assert.equal(server.accepted.length, 2);
  } finally {
    c.close();
    await server.close();
  }
});

Deno.test("resp: the deadline covers AUTH on a server that accepts and never answers", async () => {
  const server = silentServer();
  const c = new RespConnection({
    host: "127.0.0.1",
    port: server.port,
    password: "pw",
  });
  let hung: ReturnType<typeof setTimeout> | undefined;
  try {
    // Without the deadline over AUTH the command would never end.
    const outcome = await Promise.race([
      c.command(["PING"], 100).then(() => "answered", (e) => e.message),
      new Promise((r) => hung = setTimeout(() => r("hung"), 2000)),
    ]);
    assert.match(String(outcome), /no reply within 100 ms/);
    assert.equal(server.accepted.length, 1);
  } finally {
    clearTimeout(hung);
    c.close();
    await server.close();
  }
});

Deno.test("resp: close() fails the command in flight and every later one", async () => {
  const server = silentServer();
  const c = new RespConnection({ host: "127.0.0.1", port: server.port });
  try {
    const pending = c.command(["PING"]);
    await new Promise((r) => setTimeout(r, 50));
    c.close();
    await assert.rejects(() => pending);
    await assert.rejects(() => c.command(["PING"]), /closed/);
  } finally {
    await server.close();
  }
});
