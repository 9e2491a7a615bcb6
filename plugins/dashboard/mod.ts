/**
 * The operator's console (`builtin:dashboard`): the page at `/` and
 * `/ui/…`, sign-in for people (OpenID Connect or OAuth 2 through
 * `./login.ts`, or a one-time link from `plexus login-link`) and one live
 * WebSocket, `/ws/dashboard`, carrying the node's log stream and a snapshot
 * of the cluster every second. The page calls `/api/v1` with its session
 * cookie and CSRF token like any other client (docs/console.md).
 *
 * The page's HTML, CSS and JS are strings in `./ui/` modules: no build step,
 * nothing read from disk at run time, so `deno bundle` output serves them.
 *
 * @module
 */
import { z } from "zod";
import type { Context } from "hono";
import { definePlugin, type PluginContext } from "../../core/plugin.ts";
import {
  type OperatorSessions,
  readCookie,
  SESSIONS_CAPABILITY,
} from "../../core/http/session.ts";
import {
  LOG_STREAM_CAPABILITY,
  type LogStream,
} from "../../core/observe/log_stream.ts";
import { JwtError } from "../../core/security/jwt.ts";
import {
  createLogin,
  type Login,
  LoginError,
  providerSchema,
} from "./login.ts";
import { createSnapshots } from "./snapshot.ts";
import { APP_JS } from "./ui/app_js.ts";
import { INDEX_HTML, loginHtml } from "./ui/html.ts";
import { STYLE_CSS } from "./ui/style_css.ts";

/** The dashboard's config (`pluginConfig.dashboard`). */
export const dashboardConfigSchema = z.strictObject({
  /** The identity provider people sign in with; none: only one-time links. */
  provider: providerSchema.optional(),
  /** Accept one-time admin links from `plexus login-link` (default: only when no provider is configured). */
  loginLinks: z.boolean().optional(),
  /** How often the live snapshot is pushed to open pages (at least 1 s). */
  snapshotMs: z.number().int().min(1000).max(60_000).default(1000),
});

/** The dashboard's validated config. */
export type DashboardConfig = z.output<typeof dashboardConfigSchema>;

/** The cookie binding a login attempt to the browser that started it (path `/ui/auth`). */
export const LOGIN_COOKIE = "plexus_login";
const bindingCookie = (value: string, maxAgeS: number) =>
  `${LOGIN_COOKIE}=${value}; Path=/ui/auth; HttpOnly; Secure; SameSite=Lax; Max-Age=${maxAgeS}`;

/** The page's Content-Security-Policy: only this node's own scripts, styles and sockets. */
export const DASHBOARD_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const html = (
  c: Context,
  body: string,
  status: 200 | 400 | 401 | 403 | 502 = 200,
) =>
  c.body(body, status, {
    "content-type": "text/html; charset=utf-8",
    "content-security-policy": DASHBOARD_CSP,
    "cache-control": "no-store",
  });

/**
 * The dashboard plugin.
 *
 * @example Usage
 * ```ts ignore
 * // main.ts loads it by default (--no-dashboard runs without it).
 * kernel.register(dashboard, "builtin:dashboard");
 * ```
 */
const dashboard = definePlugin<DashboardConfig>({
  manifest: {
    name: "dashboard",
    version: "1.0.0",
    kind: "extension",
    api: "^1",
    provides: ["extension:dashboard"],
    config: dashboardConfigSchema,
  },
  setup(ctx: PluginContext<DashboardConfig>) {
    const sessions = ctx.kernel.get<OperatorSessions>(SESSIONS_CAPABILITY);
    // Absent from test kernels: the page then has no log lines.
    const logStream = optional<LogStream>(ctx, LOG_STREAM_CAPABILITY);
    const cfg = ctx.config;
    const login: Login | undefined = cfg.provider
      ? createLogin(cfg.provider, { kv: ctx.kv })
      : undefined;
    const linksAllowed = cfg.loginLinks ?? !cfg.provider;
    const snapshots = createSnapshots(ctx, {
      intervalMs: cfg.snapshotMs,
      kv: optional<Deno.Kv>(ctx, "state:kv"),
    });
    const loginPage = (
      c: Context,
      error?: string,
      status: 200 | 400 | 401 | 403 | 502 = 200,
    ) =>
      html(
        c,
        loginHtml({
          provider: cfg.provider
            ? new URL(cfg.provider.issuer).host
            : undefined,
          links: linksAllowed,
          error,
        }),
        status,
      );
    const refused = (c: Context, err: unknown) => {
      if (err instanceof LoginError) {
        ctx.log.warn("dashboard login refused", {
          status: err.status,
          reason: err.message,
        });
        return loginPage(c, err.message, err.status);
      }
      throw err;
    };

    const ui = ctx.http;
    // The console, or its sign-in page until signed in (also what `/` shows).
    ui.get(
      "/ui/",
      async (c) =>
        await sessions.current(c.req.raw) ? html(c, INDEX_HTML) : loginPage(c),
    );
    ui.get("/ui/login", (c) => loginPage(c));
    ui.get("/ui/app.js", (c) =>
      c.body(APP_JS, 200, {
        "content-type": "text/javascript; charset=utf-8",
        "cache-control": "no-cache",
      }));
    ui.get("/ui/style.css", (c) =>
      c.body(STYLE_CSS, 200, {
        "content-type": "text/css; charset=utf-8",
        "cache-control": "no-cache",
      }));
    ui.get("/ui/session", async (c) => {
      const s = await sessions.current(c.req.raw);
      if (!s) {
        return c.json({
          error: { code: "unauthorized", message: "no session" },
        }, 401);
      }
      return c.json({ ...s, nodeId: ctx.node.id, version: ctx.node.version });
    });
    ui.get("/ui/auth/start", async (c) => {
      if (!login) {
        return loginPage(c, "no identity provider is configured", 400);
      }
      try {
        const { url, binding } = await login.start(
          new URL(c.req.url),
          c.req.query("returnTo"),
        );
        c.header("set-cookie", bindingCookie(binding, 600));
        return c.redirect(url.href, 302);
      } catch (err) {
        return refused(c, err);
      }
    });
    ui.get("/ui/auth/callback", async (c) => {
      if (!login) {
        return loginPage(c, "no identity provider is configured", 400);
      }
      try {
        const binding = readCookie(c.req.raw, LOGIN_COOKIE);
        // The binding is spent whatever happens: the attempt is gone too.
        c.header("set-cookie", bindingCookie("", 0));
        const who = await login.finish(new URL(c.req.url), binding);
        const { cookie } = await sessions.login({
          sub: who.sub,
          role: who.role,
          name: who.name,
          method: cfg.provider!.type,
          request: c.req.raw,
        });
        ctx.log.info("dashboard login", { sub: who.sub, role: who.role });
        c.header("set-cookie", cookie, { append: true });
        return c.redirect(who.returnTo, 302);
      } catch (err) {
        return refused(c, err);
      }
    });
    ui.get("/ui/auth/link", async (c) => {
      if (!linksAllowed) {
        return loginPage(c, "login links are off on this node", 403);
      }
      const token = c.req.query("token") ?? "";
      try {
        const who = await sessions.redeemLink(token);
        const { cookie } = await sessions.login({
          sub: `link:${who.sub}`,
          role: who.role,
          name: "admin (login link)",
          method: "link",
          request: c.req.raw,
        });
        ctx.log.info("dashboard login", {
          sub: `link:${who.sub}`,
          role: who.role,
        });
        c.header("set-cookie", cookie);
        return c.redirect("/ui/", 302);
      } catch (err) {
        if (!(err instanceof JwtError)) throw err;
        ctx.log.warn("dashboard login link refused", { reason: err.reason });
        return loginPage(
          c,
          "this login link is invalid, expired or already used",
          401,
        );
      }
    });
    ui.post("/ui/auth/logout", async (c) => {
      // The same CSRF rule as the API: a session cookie is not enough.
      const r = await sessions.verify(c.req.raw);
      if (r && !r.ok && r.failure.reason === "csrf") {
        return c.json({
          error: { code: "csrf", message: "missing or wrong CSRF token" },
        }, 403);
      }
      c.header("set-cookie", await sessions.logout(c.req.raw));
      return c.json({ loggedOut: true });
    });

    // Admins list and end other people's sessions (every node: the
    // sessions are in the shared KV).
    const subject = z.strictObject({ sub: z.string().min(1).max(512) });
    ctx.api("console")
      .get("/sessions", "admin", async (c) => {
        const q = subject.safeParse(c.req.query());
        if (!q.success) {
          return c.json({
            error: { code: "bad_request", message: "?sub= is required" },
          }, 400);
        }
        return c.json(await sessions.list(q.data.sub));
      })
      .post("/sessions/revoke", "admin", async (c) => {
        const body = subject.safeParse(await c.req.json().catch(() => null));
        if (!body.success) {
          return c.json({
            error: { code: "bad_request", message: 'expected {"sub": "..."}' },
          }, 400);
        }
        const revoked = await sessions.revokeSubject(body.data.sub);
        ctx.log.info("dashboard sessions revoked", {
          sub: body.data.sub,
          revoked,
          by: c.var.principal.sub,
        });
        return c.json({ revoked });
      });

    ctx.websocket("dashboard", async (req) => {
      const s = await sessions.current(req);
      if (!s) {
        return Response.json(
          { error: { code: "unauthorized", message: "authentication failed" } },
          { status: 401 },
        );
      }
      const { socket, response } = Deno.upgradeWebSocket(req, {
        idleTimeout: 0,
      });
      if (logStream) logStream.attach(socket);
      snapshots.add(socket);
      // A revoked or expired session ends the socket within 10 s.
      const check = setInterval(async () => {
        try {
          if (!await sessions.current(req)) socket.close(4001, "session ended");
        } catch {
          socket.close(4001, "session check failed");
        }
      }, 10_000);
      socket.addEventListener("close", () => clearInterval(check), {
        once: true,
      });
      return response;
    });

    return Promise.resolve({
      stop: () => {
        snapshots.close();
        return Promise.resolve();
      },
    });
  },
});

function optional<T>(
  ctx: PluginContext<DashboardConfig>,
  capability: string,
): T | undefined {
  try {
    return ctx.kernel.get<T>(capability);
  } catch {
    return undefined;
  }
}

export default dashboard;
