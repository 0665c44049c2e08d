import { createRequire } from "node:module";

/** `make()` on first call, the same value after. */
export function once<T>(make: () => T): () => T {
  let made = false;
  let value: T;
  return () => {
    if (!made) {
      value = make();
      made = true;
    }
    return value;
  };
}

const require = createRequire(import.meta.url);

/**
 * A CommonJS package loaded on first use rather than at import: ajv and yaml cost tens
 * of milliseconds each to load, and a daemon answers its first health check before it
 * has parsed a spec or a state file.
 */
export function lazyRequire<T>(pkg: string): () => T {
  return once(() => require(pkg) as T);
}
