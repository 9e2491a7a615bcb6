/**
 * The npm types (zod's, Hono's) that Plexus's public API refers to, each
 * under its own name and exactly equal to the npm type.
 *
 * `deno doc` documents this package, not its npm dependencies, and
 * `deno doc --lint` reports every reference from a public type to an npm
 * package's type as a reference to a private type. Public types refer to
 * these aliases instead; each is tagged `@internal`, which tells the lint
 * the reference is deliberate. Their documentation is the packages' own:
 * https://zod.dev and https://hono.dev. No entry point exports this module.
 *
 * @module
 */
import type * as zod from "zod";
import type * as hono from "hono";
import type { BlankEnv, BlankSchema } from "hono/types";

/**
 * zod's `ZodType`: any zod schema whose parsed value is an `Output`.
 *
 * @internal
 */
export type ZodType<Output = unknown, Input = unknown> = zod.ZodType<
  Output,
  Input
>;

/**
 * zod's `ZodError`: what `schema.parse` throws, with the `issues` found.
 *
 * @internal
 */
export type ZodError<T = unknown> = zod.ZodError<T>;

/**
 * zod's `z.output`: the type a schema parses to.
 *
 * @internal
 */
export type ZodOutput<T> = zod.output<T>;

/**
 * zod's `z.input`: the type a schema accepts.
 *
 * @internal
 */
export type ZodInput<T> = zod.input<T>;

/**
 * Hono's app (a router with middleware), as `ctx.http` is one.
 *
 * @internal
 */
export type Hono<
  E extends hono.Env = BlankEnv,
  S extends hono.Schema = BlankSchema,
  BasePath extends string = "/",
> = hono.Hono<E, S, BasePath>;

/**
 * Hono's request context, the argument of a route handler.
 *
 * @internal
 */
export type HonoContext<E extends hono.Env, P extends string> = hono.Context<
  E,
  P
>;

/**
 * zod's `z.ZodRawShape`: the fields of an object schema, by name.
 *
 * @internal
 */
export type ZodRawShape = zod.ZodRawShape;

/**
 * zod's `z.ZodObject` of a shape: an object schema.
 *
 * @internal
 */
export type ZodObject<S extends ZodRawShape> = zod.ZodObject<S>;
