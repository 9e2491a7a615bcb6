import assert from "node:assert/strict";
import { fileURLToPath as fromFileUrl } from "node:url";
import {
  checkGrants,
  denoFlags,
  effectivePermissions,
  missingGrants,
  PERMISSION_KINDS,
  PermissionError,
  trustLevel,
  workerPermissions,
} from "./permissions.ts";
import { PlexusError } from "../errors.ts";
import { manifestSchema } from "../plugin.ts";

const NONE = {
  read: false,
  write: false,
  net: false,
  env: false,
  sys: false,
  run: false,
  ffi: false,
  import: false,
};

Deno.test("trustLevel: the operator's choice wins; else built-ins are trusted and everything else runs in a worker", () => {
  const config = {
    pluginTrust: {
      gateway: "worker" as const,
      audit: "trusted" as const,
      heavy: "process" as const,
    },
  };
  assert.equal(trustLevel("gateway", "builtin:gateway", config), "worker");
  assert.equal(trustLevel("raft", "builtin:consensus/raft", config), "trusted");
  assert.equal(trustLevel("audit", "file:///p/audit.ts", config), "trusted");
  assert.equal(
    trustLevel("heavy", "https://x.example/h.ts", config),
    "process",
  );
  for (
    const origin of [
      "file:///srv/plugins.d/fetcher.ts",
      "./plugins/fetcher.ts",
      "https://plugins.example.com/f.ts",
      "npm:plexus-fetcher",
      "jsr:@x/fetcher",
      "notbuiltin:x",
    ]
  ) {
    assert.equal(trustLevel("fetcher", origin, config), "worker", origin);
  }
  assert.equal(trustLevel("x", "builtin:x", {}), "trusted");
  assert.equal(trustLevel("x", "./x.ts", { pluginTrust: {} }), "worker");
});

Deno.test("trustLevel: a plugin named like an Object.prototype member gets the default, not the prototype's", () => {
  for (
    const name of ["constructor", "toString", "__proto__", "hasOwnProperty"]
  ) {
    assert.equal(trustLevel(name, "./x.ts", { pluginTrust: {} }), "worker");
    assert.equal(trustLevel(name, "builtin:x", { pluginTrust: {} }), "trusted");
  }
});

Deno.test("missingGrants: nothing requested needs nothing granted", () => {
  assert.deepEqual(missingGrants(undefined, undefined), []);
  assert.deepEqual(missingGrants({}, undefined), []);
  assert.deepEqual(missingGrants(NONE, undefined), []);
  assert.deepEqual(
    missingGrants({ read: [], net: false }, { net: ["x"] }),
    [],
    "an empty list asks for nothing",
  );
});

Deno.test("missingGrants: true asks for all and is covered only by true", () => {
  for (const kind of PERMISSION_KINDS) {
    assert.deepEqual(missingGrants({ [kind]: true }, { [kind]: true }), []);
    assert.deepEqual(missingGrants({ [kind]: true }, undefined), [
      `${kind}: requested, nothing granted`,
    ]);
    assert.deepEqual(missingGrants({ [kind]: true }, { [kind]: false }), [
      `${kind}: requested, nothing granted`,
    ]);
    assert.deepEqual(missingGrants({ [kind]: true }, { [kind]: [] }), [
      `${kind}: requested, nothing granted`,
    ]);
  }
  assert.deepEqual(missingGrants({ env: true }, { env: ["HOME", "USER"] }), [
    "env: all requested, granted [HOME, USER]",
  ]);
  assert.deepEqual(missingGrants({ read: true }, { read: ["/"] }), [
    "read: all requested, granted [/]",
  ]);
});

Deno.test("missingGrants: a granted true covers any list", () => {
  const requested = {
    read: ["/etc/passwd"],
    write: ["/tmp"],
    net: ["a:1", "b"],
    env: ["HOME"],
    sys: ["hostname"],
    run: ["git"],
    ffi: ["/lib/x.so"],
    import: ["deno.land"],
  };
  const all = Object.fromEntries(PERMISSION_KINDS.map((k) => [k, true]));
  assert.deepEqual(missingGrants(requested, all), []);
});

Deno.test("missingGrants: one line per requested entry not covered, in permission order", () => {
  assert.deepEqual(
    missingGrants(
      {
        env: ["HOME", "SECRET"],
        net: ["api.example.com", "db:5432", "api.example.com"],
        read: ["/srv/in"],
      },
      { net: ["db"], env: ["HOME"] },
    ),
    [
      "read: '/srv/in' not granted",
      "net: 'api.example.com' not granted",
      "env: 'SECRET' not granted",
    ],
  );
});

Deno.test("missingGrants: paths are covered by the same path or a directory above, after normalising", () => {
  const covered = (want: string, have: string[]) =>
    missingGrants({ read: [want] }, { read: have }).length === 0;
  assert.ok(covered("/srv/data", ["/srv/data"]));
  assert.ok(covered("/srv/data/", ["/srv/data"]));
  assert.ok(covered("/srv/data", ["/srv/data/"]));
  assert.ok(covered("/srv/data/in/x.json", ["/srv/data"]));
  assert.ok(covered("/srv/data/./in", ["/srv/data"]));
  assert.ok(covered("/anything", ["/"]));
  assert.ok(covered("/srv/b", ["/srv/a", "/srv/b"]));
  assert.ok(covered("./data/x", ["./data"]));
  assert.ok(covered("data/x", ["./data"]));
  assert.ok(covered("data/x", ["."]));
  assert.ok(
    !covered("/srv/database", ["/srv/data"]),
    "a prefix is not a parent",
  );
  assert.ok(
    !covered("/srv", ["/srv/data"]),
    "a parent is not covered by a child",
  );
  assert.ok(!covered("/srv/data/../etc", ["/srv/data"]), "'..' climbs out");
  assert.ok(!covered("/srv/data/../../etc/passwd", ["/srv/data"]));
  assert.ok(!covered("../x", ["."]), "'..' is outside '.'");
  assert.ok(
    !covered("data/x", ["/srv/data"]),
    "relative is not under absolute",
  );
  assert.ok(!covered("/srv/data", ["data"]), "absolute is not under relative");
  assert.ok(!covered("", ["/"]));
  for (const kind of ["write", "ffi"] as const) {
    assert.deepEqual(
      missingGrants({ [kind]: ["/opt/x/y"] }, { [kind]: ["/opt/x"] }),
      [],
    );
    assert.deepEqual(
      missingGrants({ [kind]: ["/opt/xy"] }, { [kind]: ["/opt/x"] }),
      [`${kind}: '/opt/xy' not granted`],
    );
  }
});

Deno.test("missingGrants: a host covers itself on any port; host:port covers only that port", () => {
  const covered = (want: string, have: string[]) =>
    missingGrants({ net: [want] }, { net: have }).length === 0;
  assert.ok(covered("api.example.com", ["api.example.com"]));
  assert.ok(covered("api.example.com:443", ["api.example.com"]));
  assert.ok(covered("API.example.com:443", ["api.example.COM"]));
  assert.ok(covered("db:5432", ["db:5432"]));
  assert.ok(covered("[::1]:8080", ["[::1]"]));
  assert.ok(covered("[::1]:8080", ["::1"]));
  assert.ok(covered("127.0.0.1:6379", ["127.0.0.1"]));
  assert.ok(!covered("db", ["db:5432"]), "any port is not one port");
  assert.ok(!covered("db:5433", ["db:5432"]));
  assert.ok(!covered("evil-example.com", ["example.com"]));
  assert.ok(!covered("api.example.com", ["example.com"]), "no subdomains");
  assert.ok(!covered("[::1]:8080", ["[::1]:80"]));
  assert.deepEqual(
    missingGrants({ import: ["deno.land:443"] }, { import: ["deno.land"] }),
    [],
  );
  assert.deepEqual(
    missingGrants({ import: ["esm.sh"] }, { import: ["deno.land"] }),
    ["import: 'esm.sh' not granted"],
  );
});

Deno.test("missingGrants: env, sys and run entries must be equal", () => {
  assert.deepEqual(
    missingGrants(
      {
        env: ["HOME", "home"],
        sys: ["hostname"],
        run: ["git", "/usr/bin/git"],
      },
      { env: ["HOME"], sys: ["hostname", "osRelease"], run: ["git"] },
    ),
    ["env: 'home' not granted", "run: '/usr/bin/git' not granted"],
  );
  assert.deepEqual(
    missingGrants({ env: ["HOME_DIR"] }, { env: ["HOME"] }),
    ["env: 'HOME_DIR' not granted"],
  );
});

Deno.test("effectivePermissions: exactly what was requested, every key explicit, never more than requested", () => {
  assert.deepEqual(effectivePermissions(undefined, undefined), NONE);
  assert.deepEqual(effectivePermissions({}, { net: true, env: true }), NONE);
  assert.deepEqual(
    effectivePermissions(
      {
        net: ["api.example.com", "api.example.com"],
        read: ["/srv/data/in"],
        env: [],
      },
      { net: true, read: ["/srv/data"], env: ["HOME"], run: true },
    ),
    { ...NONE, net: ["api.example.com"], read: ["/srv/data/in"] },
  );
  assert.deepEqual(
    effectivePermissions({ sys: true }, { sys: true }),
    { ...NONE, sys: true },
  );
});

Deno.test("effectivePermissions: refuses a request that is not fully granted", () => {
  assert.throws(
    () => effectivePermissions({ net: ["a"] }, { net: ["b"] }),
    (err: Error) =>
      err instanceof RangeError && /net: 'a' not granted/.test(err.message),
  );
  assert.throws(
    () => effectivePermissions({ env: true }, { env: ["HOME"] }),
    RangeError,
  );
});

Deno.test("PermissionError: names the plugin, every missing grant and where to grant it", () => {
  const err = new PermissionError("fetcher", [
    "net: 'example.com' not granted",
    "env: requested, nothing granted",
  ]);
  assert.ok(err instanceof PlexusError);
  assert.equal(err.name, "PermissionError");
  assert.equal(err.code, "grants_missing");
  assert.equal(err.retryable, false);
  assert.equal(err.plugin, "fetcher");
  assert.deepEqual(err.missing, [
    "net: 'example.com' not granted",
    "env: requested, nothing granted",
  ]);
  assert.equal(
    err.message,
    "plugin 'fetcher' asks for more than it was granted: net: 'example.com' not granted; env: requested, nothing granted (grant it in pluginGrants.fetcher)",
  );
  assert.deepEqual(err.data, { plugin: "fetcher", missing: err.missing });
  assert.match(
    new PermissionError("redis-streams", ["x"]).message,
    /\(grant it in pluginGrants\["redis-streams"\]\)$/,
  );
  assert.match(
    new PermissionError("@acme/x", ["x"]).message,
    /\(grant it in pluginGrants\["@acme\/x"\]\)$/,
  );
});

Deno.test("checkGrants: the effective permissions, or a PermissionError listing every missing grant", () => {
  assert.deepEqual(
    checkGrants("fetcher", { net: ["example.com"] }, { net: ["example.com"] }),
    { ...NONE, net: ["example.com"] },
  );
  assert.throws(
    () =>
      checkGrants("fetcher", { net: ["example.com"], env: true }, undefined),
    (err: unknown) =>
      err instanceof PermissionError &&
      err.message ===
        "plugin 'fetcher' asks for more than it was granted: net: 'example.com' not granted; env: requested, nothing granted (grant it in pluginGrants.fetcher)",
  );
});

Deno.test("workerPermissions: every key explicit, none 'inherit'; a file plugin may read its own file", () => {
  const url = new URL("./testdata/fetcher.ts", import.meta.url);
  const p = workerPermissions(effectivePermissions({}, {}), url.href);
  assert.deepEqual(Object.keys(p).sort(), [...PERMISSION_KINDS].sort());
  assert.ok(!Object.values(p).includes("inherit"));
  assert.deepEqual(p, { ...NONE, read: [fromFileUrl(url)] });
});

Deno.test("workerPermissions: a folder plugin (mod.ts, or a URL ending in /) may read its folder", () => {
  const dir = new URL("./testdata/fetcher/", import.meta.url);
  const folder = fromFileUrl(dir).replace(/[\\/]$/, "");
  assert.deepEqual(
    workerPermissions(NONE, new URL("mod.ts", dir)).read,
    [folder],
  );
  assert.deepEqual(workerPermissions(NONE, dir).read, [folder]);
  assert.deepEqual(
    workerPermissions(NONE, new URL("main.ts", dir)).read,
    [fromFileUrl(new URL("main.ts", dir))],
    "any other file name: only that file",
  );
});

Deno.test("workerPermissions: the plugin's own access is added to what was granted, not in place of it", () => {
  const url = new URL("./testdata/fetcher.ts", import.meta.url);
  const own = fromFileUrl(url);
  assert.deepEqual(
    workerPermissions({ read: ["/srv/in"], net: ["a:1"] }, url).read,
    ["/srv/in", own],
  );
  assert.equal(workerPermissions({ read: true }, url).read, true);
  assert.deepEqual(workerPermissions({ read: [own] }, url).read, [own]);
});

Deno.test("workerPermissions: an https plugin may import from its host, and read nothing", () => {
  assert.deepEqual(
    workerPermissions(
      { net: ["api.example.com"] },
      "https://plugins.example.com/f/mod.ts",
    ),
    { ...NONE, net: ["api.example.com"], import: ["plugins.example.com"] },
  );
  assert.deepEqual(
    workerPermissions(
      { import: ["deno.land"] },
      "https://plugins.example.com:8443/f.ts",
    )
      .import,
    ["deno.land", "plugins.example.com:8443"],
  );
  assert.equal(
    workerPermissions({ import: true }, "https://plugins.example.com/f.ts")
      .import,
    true,
  );
  assert.deepEqual(workerPermissions({}, "npm:plexus-fetcher@1"), NONE);
  assert.deepEqual(workerPermissions({}, "data:text/javascript,1"), NONE);
});

Deno.test("denoFlags: --no-prompt and one --allow-* per permission given; nothing for the rest; never -A", () => {
  const url = new URL("./testdata/fetcher.ts", import.meta.url);
  assert.deepEqual(denoFlags(NONE, url), [
    "--no-prompt",
    `--allow-read=${fromFileUrl(url)}`,
  ]);
  assert.deepEqual(
    denoFlags(
      {
        net: ["api.example.com", "db:5432"],
        env: true,
        sys: ["hostname"],
        write: [],
      },
      "https://plugins.example.com/f.ts",
    ),
    [
      "--no-prompt",
      "--allow-net=api.example.com,db:5432",
      "--allow-env",
      "--allow-sys=hostname",
      "--allow-import=plugins.example.com",
    ],
  );
  const all = Object.fromEntries(PERMISSION_KINDS.map((k) => [k, true]));
  const flags = denoFlags(all, url);
  assert.deepEqual(flags, [
    "--no-prompt",
    ...PERMISSION_KINDS.map((k) => `--allow-${k}`),
  ]);
  assert.ok(!flags.includes("-A") && !flags.includes("--allow-all"));
});

Deno.test("denoFlags: an entry with a comma cannot become a flag and is refused", () => {
  assert.throws(
    () => denoFlags({ read: ["/srv/a,b"] }, "https://x.example/f.ts"),
    /read entry '\/srv\/a,b'/,
  );
});

Deno.test("permissions: pluginGrants and the manifest share one schema (a manifest's permissions are accepted as a grant)", () => {
  const manifest = {
    name: "fetcher",
    version: "1.0.0",
    kind: "extension",
    api: "^1",
    provides: ["extension:fetcher"],
    permissions: { net: ["api.example.com"], env: true },
  };
  const parsed = manifestSchema.parse(manifest);
  assert.deepEqual(missingGrants(parsed.permissions, manifest.permissions), []);
});
