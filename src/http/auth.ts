import { createHash, timingSafeEqual } from "node:crypto";
import type { NextFunction, Request, Response } from "express";
import { ApiError } from "../errors.js";
import { sendError } from "./errors.js";

const digest = (s: string) => createHash("sha256").update(s).digest();

/** Bearer-token check on every route (health included), compared in constant time. */
export function bearerAuth(token: string) {
  const expected = digest(token);
  return (req: Request, res: Response, next: NextFunction) => {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? "");
    // Hashing both sides makes the comparison length-independent as well.
    if (m && timingSafeEqual(digest(m[1]), expected)) return next();
    sendError(res, new ApiError("UNAUTHORIZED", "missing or invalid bearer token"));
  };
}
