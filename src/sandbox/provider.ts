/**
 * Agent boxes with a `provider` (where it is: src/spec/provider.ts): the guest reaches
 * it through an egress network to that one endpoint (./qemu/network.ts), and the API
 * key, read on the daemon host when a stage starts, goes only to the agent process (the
 * EXEC's environment): never to the spec, events, logs or the state dir.
 */
import { lookup } from "node:dns/promises";
import net from "node:net";
import { EGRESS_GUEST_IP, keyEnvOf, type ProviderEndpoint } from "../spec/provider.js";
import type { ProviderSpec } from "../spec/types.js";
import { readSecret } from "./secrets.js";
import { SandboxError, type Egress, type Sandbox, type StageVm } from "./types.js";

/** Resolving the provider's host name on the daemon host must not hold a stage longer. */
const LOOKUP_TIMEOUT_MS = 10_000;

/** Reads the key on the daemon host; throws SandboxError naming the variable (never its value). */
function providerKey(p: ProviderSpec, secretsFile: string | undefined, env: NodeJS.ProcessEnv = process.env): { name: string; value: string } | null {
  const name = keyEnvOf(p);
  if (!name) return null;
  const value = readSecret(name, secretsFile, env);
  if (!value)
    throw new SandboxError(
      `provider ${p.kind}: no API key: ${name} is not set in the daemon's environment${secretsFile ? ` nor in the secrets file ${secretsFile}` : " (or name a secrets file with voidbox serve --provider-secrets FILE)"}`,
    );
  return { name, value };
}

async function resolveHost(host: string): Promise<string> {
  if (net.isIP(host)) return host;
  let timer: NodeJS.Timeout | undefined;
  try {
    const found = await Promise.race([
      lookup(host === "localhost" ? "127.0.0.1" : host),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${LOOKUP_TIMEOUT_MS} ms`)), LOOKUP_TIMEOUT_MS))),
    ]);
    return found.address;
  } catch (e) {
    throw new SandboxError(`provider host ${host} cannot be resolved on the daemon host: ${(e as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The sandbox for an agent box with a provider: each stage attempt first reads the key
 * (a missing one fails the stage before any VM boots) and resolves the provider's host,
 * then opens a VM whose network reaches that endpoint only; the key is added to the
 * environment of the EXEC alone.
 */
export function providerSandbox(inner: Sandbox, p: { provider: ProviderSpec; endpoint: ProviderEndpoint; secretsFile?: string; env?: NodeJS.ProcessEnv }): Sandbox {
  return {
    kind: inner.kind,
    async open(opts) {
      const key = providerKey(p.provider, p.secretsFile, p.env);
      const address = await resolveHost(p.endpoint.host);
      const egress: Egress = { guestIp: EGRESS_GUEST_IP, guestPort: p.endpoint.port, host: address, port: p.endpoint.port };
      const vm = await inner.open({ ...opts, egress });
      return withExecEnv(vm, key ? { [key.name]: key.value } : {});
    },
  };
}

function withExecEnv(vm: StageVm, extra: Record<string, string>): StageVm {
  return {
    vm: vm.vm,
    closed: vm.closed,
    exec: (cmd) => vm.exec({ ...cmd, env: { ...cmd.env, ...extra } }),
    readFile: (rel, max) => vm.readFile(rel, max),
    stop: (grace) => vm.stop(grace),
    foreground: vm.foreground ? () => vm.foreground!() : undefined,
  };
}
