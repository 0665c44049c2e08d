# voidbox — `make run` and `make test` set everything up on a fresh Debian machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The guest: QEMU, busybox, the Debian cloud kernel (fallback) and the kernel source +
# toolchain for the minimal guest kernel (guest/build-kernel.sh).
APT_PACKAGES := qemu-system-x86 busybox-static linux-image-cloud-amd64 cpio lz4 zstd xz-utils \
                linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev
GUEST_DIR := build/guest
EXAMPLE ?= examples/hello.yaml

.PHONY: help deps system-deps node-deps node-version build generate check-generated lint guest run test bench docs clean

help:
	@echo "make run    build everything and run $(EXAMPLE) in micro-VMs, showing its events"
	@echo "make test   build everything and run the whole test suite"
	@echo "make bench  run the benchmarks (bench/)"
	@echo "make docs   render the API reference (openapi.yaml) to build/docs/index.html"

# System packages: QEMU, the guest kernel and busybox come from Debian.
system-deps:
	@missing=""; \
	command -v qemu-system-x86_64 >/dev/null || missing="$$missing qemu-system-x86"; \
	[ -x /bin/busybox ] || missing="$$missing busybox-static"; \
	ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 || missing="$$missing linux-image-cloud-amd64"; \
	for t in cpio lz4 zstd xz gcc make bc bison flex; do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	ls /usr/src/linux-source-6.1.tar.* >/dev/null 2>&1 || missing="$$missing linux-source-6.1"; \
	dpkg -s libelf-dev libssl-dev >/dev/null 2>&1 || missing="$$missing libelf-dev"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages: $(APT_PACKAGES)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

# Node.js 20 or later (the CLI, the daemon and the SDK use its fetch and AbortSignal.any).
node-version:
	@command -v node >/dev/null || { echo "Node.js >= 20 is required and 'node' is not on PATH: install it from https://nodejs.org/ or with 'apt-get install nodejs' (Debian 13+), or via nvm: 'nvm install 20'"; exit 1; }
	@node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' || \
	  { echo "Node.js >= 20 is required (found $$(node --version)): install it from https://nodejs.org/ or via nvm: 'nvm install 20'"; exit 1; }

# npm packages from the committed lockfile (with the clients/typescript workspace);
# reinstalled only when the lockfile changes.
node_modules/.installed: package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

node-deps: node-version node_modules/.installed

deps: system-deps node-deps

build: node-deps
	npm run --silent build

generate: node-deps
	npm run --silent generate

# generated/ is committed; fail when it no longer matches openapi.yaml.
check-generated: node-deps
	@npx --no-install openapi-typescript openapi.yaml -o generated/api.ts --check >/dev/null 2>&1 || \
	  { echo "generated/api.ts is stale: run 'make generate' and commit it"; exit 1; }
	@npx --no-install openapi-typescript openapi.yaml --default-non-nullable false -o clients/typescript/src/generated/api.ts --check >/dev/null 2>&1 || \
	  { echo "clients/typescript/src/generated/api.ts is stale: run 'make generate' and commit it"; exit 1; }

lint: node-deps check-generated
	npx --no-install redocly lint openapi.yaml --format=stylish
	npm run --silent typecheck

# The guest kernel + initramfs; rebuilt only when its inputs change (guest/build.sh checks a stamp).
guest: system-deps
	bash guest/build.sh $(GUEST_DIR)

# Starts the daemon on a private socket and state dir, runs the example through the
# CLI (events live, then output and micro-VM boot times), and stops the daemon.
run: deps build guest
	@set -euo pipefail; tmp=$$(mktemp -d); sock=$$tmp/voidbox.sock; \
	node dist/src/main.js serve --listen unix://$$sock --state-dir $$tmp/state > $$tmp/daemon.log 2>&1 & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; wait $$pid 2>/dev/null; rm -rf $$tmp' EXIT; \
	for i in $$(seq 1 600); do [ -S $$sock ] && break; kill -0 $$pid 2>/dev/null || { cat $$tmp/daemon.log; exit 1; }; sleep 0.1; done; \
	[ -S $$sock ] || { echo "daemon did not start within 60 s"; cat $$tmp/daemon.log; exit 1; }; \
	node dist/src/main.js health --daemon unix://$$sock | grep -E '"(accelerator|guest_kernel)"' || true; \
	node dist/src/main.js run --daemon unix://$$sock $(EXAMPLE)

# The API reference, rendered by Redocly from openapi.yaml (no network needed to build it).
docs: node-deps
	npx --no-install redocly build-docs openapi.yaml -o build/docs/index.html

test: deps lint build guest
	@mkdir -p build
	npx --no-install vitest run --reporter=default --reporter=json --outputFile.json=build/vitest.json
	@node -e 'const r=require("./build/vitest.json"); console.log(`$${r.numPassedTests} passed, $${r.numFailedTests} failed, $${r.numPendingTests + r.numTodoTests} skipped`)'
	@left=$$(pgrep -a -f '[q]emu-system.*voidbox' || true); \
	if [ -n "$$left" ]; then echo "QEMU processes outlived the suite:"; echo "$$left"; exit 1; fi

bench: deps build guest
	npx --no-install tsx bench/events-append.ts
	npx --no-install tsx bench/events-throughput.ts
	npx --no-install tsx bench/boot.ts
	npx --no-install tsx bench/output-flood.ts

clean:
	rm -rf dist build
