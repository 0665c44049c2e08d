/**
 * JSON already encoded (a run's cached serialisation, a listing built one run at a
 * time), typed by the value it encodes, so a handler that replies with the bytes is
 * still checked against the operation's reply schema. Only the code that encodes the
 * value labels the bytes (`encodedJson`).
 */
declare const encodes: unique symbol;
export type JsonBytes<T> = Buffer & { readonly [encodes]: T };

/** Labels bytes the caller has just encoded from a `T` (or checked to be valid JSON of that type). */
export const encodedJson = <T>(bytes: Buffer): JsonBytes<T> => bytes as JsonBytes<T>;
