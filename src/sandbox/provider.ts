/**
 * Agent boxes with a `provider`: where the provider is (defaults per kind), how the
 * guest reaches it (an egress network to that one endpoint, see ./qemu/network.ts), and
 * the API key, read on the daemon host when a stage starts and given only to the agent
 * process (the EXEC's environment): never to the spec, events, logs or the state dir.
 */
import { lookup } from "node:dns/promises";
import net from "node:net";
import { SpecError } from "../spec/errors.js";
import type { ProviderSpec } from "../spec/types.js";
import { readSecret } from "./secrets.js";
import { SandboxError, type Egress, type Sandbox, type StageVm } from "./types.js";

export const PROVIDER_DEFAULTS: Record<ProviderSpec["kind"], { baseUrl: string; keyEnv: string | null }> = {
  anthropic: { baseUrl: "https://api.anthropic.com", keyEnv: "ANTHROPIC_API_KEY" },
  openai: { baseUrl: "https://api.openai.com/v1", keyEnv: "OPENAI_API_KEY" },
  // Ollama's OpenAI-compatible endpoint; a local server wants no key.
  ollama: { baseUrl: "http://127.0.0.1:11434/v1", keyEnv: null },
};

/** The guest address the provider's endpoint is forwarded to (inside QEMU's 10.0.2.0/24). */
export const EGRESS_GUEST_IP = "10.0.2.100";
/** Resolving the provider's host name on the daemon host must not hold a stage longer. */
const LOOKUP_TIMEOUT_MS = 10_000;

export interface ProviderEndpoint {
  /** Host name or address as written (IPv6 without brackets). */
  host: string;
  port: number;
  /** The base URL the guest uses: unchanged for a host name (mapped in /etc/hosts), else the guest address. */
  guestBaseUrl: string;
  /** An /etc/hosts line for the guest, when the URL names a host (so TLS checks that name). */
  hostsLine?: string;
}

/** Checks `p.base_url` (or the kind's default); throws SpecError naming `<field>/base_url`. */
export function providerEndpoint(p: ProviderSpec, field: string): ProviderEndpoint {
  const raw = p.base_url ?? PROVIDER_DEFAULTS[p.kind].baseUrl;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new SpecError(`${field}/base_url: ${JSON.stringify(raw)} is not a URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new SpecError(`${field}/base_url: must be an http:// or https:// URL`);
  if (url.username || url.password) throw new SpecError(`${field}/base_url: must not carry credentials (the key comes from api_key_env)`);
  if (url.search || url.hash) throw new SpecError(`${field}/base_url: must not have a query or fragment`);
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const port = url.port ? Number(url.port) : url.protocol === "https:" ? 443 : 80;
  const base = url.href.replace(/\/+$/, "");
  // An address, or the host's own name, means nothing inside the guest: it gets the forward address.
  if (net.isIP(host) || host === "localhost") {
    const g = new URL(url.href);
    g.hostname = EGRESS_GUEST_IP;
    return { host, port, guestBaseUrl: g.href.replace(/\/+$/, "") };
  }
  return { host, port, guestBaseUrl: base, hostsLine: `${EGRESS_GUEST_IP} ${host}` };
}

/** The environment variable that holds the key (null: none needed). */
export function keyEnvOf(p: ProviderSpec): string | null {
  return p.api_key_env ?? PROVIDER_DEFAULTS[p.kind].keyEnv;
}

/** Reads the key on the daemon host; throws SandboxError naming the variable (never its value). */
export function providerKey(p: ProviderSpec, secretsFile: string | undefined, env: NodeJS.ProcessEnv = process.env): { name: string; value: string } | null {
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
