/**
 * Where an agent box's provider is: the defaults per kind, and how the guest reaches it
 * (the URL it uses, and an /etc/hosts line for a host name). Checked when the spec is
 * loaded; src/sandbox/provider.ts turns it into the VM's egress network and the key.
 */
import net from "node:net";
import { SpecError } from "./errors.js";
import type { ProviderSpec } from "./types.js";

const PROVIDER_DEFAULTS: Record<ProviderSpec["kind"], { baseUrl: string; keyEnv: string | null }> = {
  anthropic: { baseUrl: "https://api.anthropic.com", keyEnv: "ANTHROPIC_API_KEY" },
  openai: { baseUrl: "https://api.openai.com/v1", keyEnv: "OPENAI_API_KEY" },
  // Ollama's OpenAI-compatible endpoint; a local server wants no key.
  ollama: { baseUrl: "http://127.0.0.1:11434/v1", keyEnv: null },
};

/** The guest address the provider's endpoint is forwarded to (inside QEMU's 10.0.2.0/24). */
export const EGRESS_GUEST_IP = "10.0.2.100";

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

