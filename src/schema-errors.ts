import type { ErrorObject } from "ajv";

/**
 * The one wording of ajv's schema errors, for request validation (http/errors.ts), run
 * specs (spec/load.ts) and state files read back (store/schemas.ts): each error names
 * the field and says what is wrong with it, in a few words a client can act on.
 */

export interface ErrorWording {
  /** The field an error is about, from ajv's instancePath ("/sandbox/mode"). */
  at(instancePath: string): string;
  /** At most this many errors are described. */
  max: number;
}

/** Field names come from the client: keep messages bounded. */
const clip = (s: string) => (s.length > 80 ? `${s.slice(0, 77)}...` : s);

function where(e: ErrorObject, w: ErrorWording): string {
  const missing = e.keyword === "required" ? (e.params as { missingProperty: string }).missingProperty : undefined;
  const extra = e.keyword === "additionalProperties" ? (e.params as { additionalProperty: string }).additionalProperty : undefined;
  return clip([w.at(e.instancePath), missing ?? extra].filter(Boolean).join("/"));
}

/** The branches of a oneOf/anyOf error (verbose mode puts them in `schema`). */
const branchesOf = (e: ErrorObject): Array<{ required?: string[]; type?: string }> => (Array.isArray(e.schema) ? e.schema : []);

/** `oneOf: [{required: [a]}, {required: [b]}]`: the fields of which exactly one is required. */
function exclusiveFields(e: ErrorObject): string[] | undefined {
  const bs = branchesOf(e);
  if (e.keyword !== "oneOf" || !bs.length || !bs.every((b) => b.required?.length === 1)) return undefined;
  return bs.map((b) => b.required![0]);
}

const isChoice = (e: ErrorObject) => e.keyword === "oneOf" || e.keyword === "anyOf";
/** `e` comes from one of the branches of the oneOf/anyOf error `g`. */
const within = (e: ErrorObject, g: ErrorObject) => e !== g && e.schemaPath.startsWith(`${g.schemaPath}/`);
/** `e` is a branch's complaint about the very value a oneOf/anyOf error `g` is about. */
const inside = (e: ErrorObject, g: ErrorObject) => within(e, g) && e.instancePath === g.instancePath;
/** What every branch of a oneOf/anyOf says anyway: a missing field, a wrong type. */
const generic = (e: ErrorObject) => e.keyword === "required" || e.keyword === "type";
const branchOf = (e: ErrorObject, g: ErrorObject) => e.schemaPath.slice(g.schemaPath.length + 1).split("/")[0];

/**
 * A oneOf whose branches are told apart by a tag (`type: box` | `type: fan_out`): the
 * branches whose tag does not match say nothing useful. Returns the errors to drop, and,
 * when no branch's tag matches, the one message that replaces them all.
 */
function tagged(g: ErrorObject, list: ErrorObject[], w: ErrorWording): { drop: Set<ErrorObject>; message?: string } | undefined {
  const tags = list.filter((e) => within(e, g) && e.keyword === "enum" && e.instancePath.startsWith(`${g.instancePath}/`) && !e.instancePath.slice(g.instancePath.length + 1).includes("/"));
  const count = branchesOf(g).length;
  if (!tags.length || !count) return undefined;
  const wrong = new Set(tags.map((e) => branchOf(e, g)));
  const drop = new Set(list.filter((e) => e === g || (within(e, g) && wrong.has(branchOf(e, g)))));
  if (wrong.size === count - 1) return { drop };
  const field = new Set(tags.map((e) => e.instancePath));
  if (wrong.size !== count || field.size !== 1) return undefined;
  const allowed = tags.flatMap((e) => (e.params as { allowedValues: unknown[] }).allowedValues);
  return { drop, message: `${clip(w.at([...field][0]))}: must be one of ${allowed.join(", ")}` };
}

/**
 * A oneOf/anyOf failure is worded once, by its own error ("exactly one of a or b is
 * required", "must be object or string"), not as its branches' complaints; unless a
 * branch says something specific (a string too short), which is then the message. The
 * "exactly one" error is dropped when exactly one of the fields is there: that field's
 * own error is the problem. A tagged oneOf speaks through the branch its tag picks.
 * if/then errors come with the `then` error that says what is missing: only that is kept.
 * Identical messages (a schema used twice) are listed once.
 */
function summarised(all: ErrorObject[], w: ErrorWording): string[] {
  let list = all.filter((e) => e.keyword !== "if");
  const replaced: string[] = [];
  for (const g of list.filter((e) => e.keyword === "oneOf")) {
    const t = tagged(g, list, w);
    if (!t) continue;
    list = list.filter((e) => !t.drop.has(e));
    if (t.message) replaced.push(t.message);
  }
  const choices = list.filter(isChoice);
  const kept = list.filter((e) => {
    if (generic(e) && choices.some((g) => inside(e, g))) return false;
    if (!isChoice(e)) return true;
    if (list.some((x) => inside(x, e) && !generic(x))) return false;
    const fields = exclusiveFields(e);
    const data = (e.data ?? {}) as Record<string, unknown>;
    return !fields || fields.filter((f) => data[f] !== undefined).length !== 1;
  });
  return [...new Set([...replaced, ...kept.map((e) => describe(e, w))])];
}

function describe(e: ErrorObject, w: ErrorWording): string {
  const at = where(e, w);
  const fields = exclusiveFields(e);
  if (fields) return `${at}: exactly one of ${fields.join(" or ")} is required`;
  const types = branchesOf(e).map((b) => b.type);
  if (isChoice(e) && types.length && types.every(Boolean)) return `${at}: must be ${types.join(" or ")}`;
  if (e.keyword === "required") return `${at}: is required`;
  if (e.keyword === "additionalProperties") return `${at}: unknown property`;
  if (e.keyword === "const") return `${at}: must be ${JSON.stringify((e.params as { allowedValue: unknown }).allowedValue)}`;
  if (e.keyword === "enum") {
    const allowed = (e.params as { allowedValues: unknown[] }).allowedValues;
    return allowed.length === 1 ? `${at}: must be ${JSON.stringify(allowed[0])}` : `${at}: must be one of ${allowed.join(", ")}`;
  }
  return `${at}: ${e.message ?? "is invalid"}`;
}

/** The errors as messages ("spec/sandbox/mode: must be one of local, mock, auto"), at most `w.max`. */
export function schemaErrorMessages(errors: ErrorObject[] | null | undefined, w: ErrorWording): string[] {
  return summarised(errors ?? [], w).slice(0, w.max);
}
