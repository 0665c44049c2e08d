import { createHash, timingSafeEqual } from "node:crypto";
import type { NextFunction, Request, Response } from "express";
import { ApiError } from "../errors.js";
import { sendError } from "./errors.js";

const digest = (s: string) => createHash("sha256").update(s).digest();

/** Whether an Authorization header carries `token`, compared in constant time. */
export function tokenMatches(authorization: string | undefined, token: string): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
  // Hashing both sides makes the comparison length-independent as well.
  return !!m && timingSafeEqual(digest(m[1]), digest(token));
}

/** Bearer-token check on every route (health included). */
export function bearerAuth(token: string) {
  return (req: Request, res: Response, next: NextFunction) => {
    if (tokenMatches(req.headers.authorization, token)) return next();
    sendError(res, new ApiError("UNAUTHORIZED", "missing or invalid bearer token"));
  };
}
