# voidbox — `make run` and `make test` set everything up on a fresh Debian machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# What micro-VMs need now: QEMU, busybox and the Debian cloud kernel (the guest kernel
# until the minimal one is built); systemd for `systemd-analyze verify` of deploy/voidbox.service.
# mmdebstrap and erofs-utils build guest images (voidbox image build), umoci imports OCI ones;
# gcc and libc6-dev compile the guest agent (guest/vbx-agent.c) into the initramfs.
APT_PACKAGES := qemu-system-x86 busybox-static linux-image-cloud-amd64 cpio lz4 zstd xz-utils systemd mmdebstrap erofs-utils umoci gcc libc6-dev
# What the minimal guest kernel (guest/kernel.sh) needs to compile: the kernel source and a toolchain.
KERNEL_APT_PACKAGES := linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev xz-utils
GUEST_DIR := build/guest
EXAMPLE ?= examples/hello.yaml
NODE_MIN := 20
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
S := $(if $(SUDO),$(SUDO) ,)

.PHONY: help node-check deps system-deps kernel-deps node-deps build generate check-generated lint guest kernel test-guest run test bench clean mock conformance conformance-ci docs

help:
	@echo "make run     build everything and run $(EXAMPLE) in micro-VMs, showing its events"
	@echo "             (first time: boots the Debian cloud kernel while the minimal guest kernel"
	@echo "             builds in the background)"
	@echo "make kernel  build the minimal guest kernel now, with progress (or wait for the background build)"
	@echo "make test    build everything, the minimal guest kernel included, and run the whole test suite"
	@echo "make bench   run the benchmarks (bench/)"
	@echo "make mock    serve openapi.yaml with the Prism mock on 127.0.0.1:$(PORT) (PORT= to change)"
	@echo "make conformance URL=http://HOST:PORT [TOKEN=... | TOKEN_FILE=...] [MOCK=1]"
	@echo "             run the contract suite against any running implementation"
	@echo "make docs    render the API reference (openapi.yaml) to build/docs/index.html"

# Node.js >= $(NODE_MIN) first: nothing else works without it, and Debian 12's own nodejs is 18.
node-check:
	@v=$$(node -p 'process.versions.node' 2>/dev/null || true); \
	if [ -z "$$v" ] || [ "$${v%%.*}" -lt $(NODE_MIN) ] || ! command -v npm >/dev/null; then \
	  found=$${v:+Node.js $$v}; echo "voidbox needs Node.js $(NODE_MIN) or newer with npm; found: $${found:-no node on the PATH}."; \
	  echo "Debian 12's own nodejs package is 18, too old. Install Node.js $(NODE_MIN) either way:"; \
	  echo "  from NodeSource (system-wide, as root or with sudo):"; \
	  echo "    curl -fsSL https://deb.nodesource.com/setup_$(NODE_MIN).x | $(S)bash - && $(S)apt-get install -y nodejs"; \
	  echo "  or with nvm (for your user, no root):"; \
	  echo "    curl -fsSL https://raw.githubusercontent.com/nvm-sh/nvm/v0.40.1/install.sh | bash"; \
	  echo "    . ~/.nvm/nvm.sh && nvm install $(NODE_MIN)"; \
	  echo "then run make again."; \
	  exit 1; \
	fi

# System packages, installed when missing, with apt's own progress.
system-deps:
	@missing=""; \
	command -v qemu-system-x86_64 >/dev/null || missing="$$missing qemu-system-x86"; \
	[ -x /bin/busybox ] || missing="$$missing busybox-static"; \
	ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 || missing="$$missing linux-image-cloud-amd64"; \
	for t in cpio lz4 zstd xz systemd-analyze mmdebstrap mkfs.erofs umoci; do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages (missing:$$missing): $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y $(APT_PACKAGES); \
	fi

kernel-deps:
	@missing=""; for p in $(KERNEL_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing the guest kernel's build dependencies:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y $$missing || \
	  { $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y $$missing; }; \
	fi

# npm packages from the committed lockfile (with the clients/typescript workspace);
# reinstalled only when the lockfile changes.
node_modules/.installed: package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

node-deps: node_modules/.installed

deps: node-check system-deps node-deps

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

# Comments cite only documents the repo holds (scripts/check-citations.mjs says what it checks).
lint: node-deps check-generated
	npx --no-install redocly lint openapi.yaml --format=stylish
	node scripts/check-citations.mjs
	npm run --silent typecheck
	# No unused exports, files or dependencies (knip.json: src, bench, tests and scripts).
	npx --no-install knip --no-progress

# The guest image (initramfs + kernel); rebuilt only when its inputs change (guest/build.sh
# checks a stamp). Until the minimal kernel is built, it boots the Debian cloud kernel and
# starts the minimal kernel's build in the background.
guest: system-deps
	@bash guest/build.sh $(GUEST_DIR)

# The minimal guest kernel, now (progress shown), then the image that boots it.
kernel: system-deps kernel-deps
	@VOIDBOX_GUEST_KERNEL=custom bash guest/build.sh $(GUEST_DIR)

# Starts the daemon on a private socket and state dir, runs the example through the
# CLI (events live, then output and micro-VM boot times), and stops the daemon.
run: node-check deps build guest
	@set -euo pipefail; tmp=$$(mktemp -d); sock=$$tmp/voidbox.sock; \
	node dist/src/main.js serve --listen unix://$$sock --state-dir $$tmp/state > $$tmp/daemon.log 2>&1 & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; wait $$pid 2>/dev/null; rm -rf $$tmp' EXIT; \
	for i in $$(seq 1 600); do [ -S $$sock ] && break; kill -0 $$pid 2>/dev/null || { cat $$tmp/daemon.log; exit 1; }; sleep 0.1; done; \
	[ -S $$sock ] || { echo "daemon did not start within 60 s"; cat $$tmp/daemon.log; exit 1; }; \
	rc=0; node dist/src/main.js run --daemon unix://$$sock $(EXAMPLE) || rc=$$?; \
	node dist/src/main.js health --daemon unix://$$sock | grep -E '"(status|accelerator|guest_kernel|guest_boot|guest_boot_error)"' || true; \
	case "$$(bash guest/kernel.sh $(GUEST_DIR)/custom --status)" in \
	  building) echo "note: these micro-VMs booted the Debian cloud kernel; the minimal guest kernel (it boots faster) is building in the background: 'make kernel' shows its progress, the next 'make run' uses it";; \
	esac; \
	exit $$rc

# The suite tests the kernel users get by default: the minimal guest kernel (built now
# when missing). VOIDBOX_GUEST_KERNEL=cloud make test tests the Debian cloud kernel instead.
test-guest: system-deps kernel-deps
	@VOIDBOX_GUEST_KERNEL=$${VOIDBOX_GUEST_KERNEL:-custom} bash guest/build.sh $(GUEST_DIR)

# The API reference, rendered by Redocly from openapi.yaml (no network needed to build it).
docs: node-deps
	npx --no-install redocly build-docs openapi.yaml -o build/docs/index.html

test: node-check deps lint build test-guest
	@mkdir -p build
	npx --no-install vitest run --reporter=default --reporter=json --outputFile.json=build/vitest.json
	$(MAKE) --no-print-directory conformance-ci
	@left=$$(pgrep -a -f '[q]emu-system.*voidbox' || true); \
	if [ -n "$$left" ]; then echo "QEMU processes outlived the suite:"; echo "$$left"; exit 1; fi
	@# The suite's own count last (the conformance runs above print theirs).
	@node -e 'const r=require("./build/vitest.json"); console.log(`suite: $${r.numPassedTests} passed, $${r.numFailedTests} failed, $${r.numPendingTests + r.numTodoTests} skipped`)'

# Each bench writes its figures to build/bench/<name>.json; report.ts prints them as one
# table (figure, goal, pass/miss) and writes build/bench/report.json and latency.svg.
bench: deps build guest
	rm -f build/bench/*.json
	npx --no-install tsx bench/events-append.ts
	npx --no-install tsx bench/events-throughput.ts
	npx --no-install tsx bench/boot.ts
	npx --no-install tsx bench/warm-start.ts
	npx --no-install tsx bench/snapshot.ts
	npx --no-install tsx bench/output-flood.ts
	npx --no-install tsx bench/hostile.ts
	npx --no-install tsx bench/startup.ts
	npx --no-install tsx bench/history.ts
	npx --no-install tsx bench/crash-cycles.ts
	npx --no-install tsx bench/sse-latency.ts
	npx --no-install tsx bench/sdk-follow.ts
	npx --no-install tsx bench/metrics.ts
	npx --no-install tsx bench/images.ts
	npx --no-install tsx bench/agents.ts
	npx --no-install tsx bench/report.ts

# The mock consumers develop against: the spec itself answering with its examples
# (`Prefer: code=404` / `Prefer: example=…` pick a reply; see README "The mock").
PORT ?= 4010
mock: node-deps
	npx --no-install prism mock openapi.yaml -h 127.0.0.1 -p $(PORT)

# The contract suite against any running implementation (ours, another, a mock): no files
# are shared with it. The last line is `N passed, N failed, N skipped`.
conformance: node-deps
	@[ -n "$(URL)" ] || { echo "usage: make conformance URL=http://HOST:PORT [TOKEN=... | TOKEN_FILE=...] [MOCK=1]"; exit 2; }
	@mkdir -p build
	@VOIDBOX_CONFORMANCE_URL='$(URL)' VOIDBOX_CONFORMANCE_TOKEN='$(TOKEN)' VOIDBOX_CONFORMANCE_TOKEN_FILE='$(TOKEN_FILE)' \
	  VOIDBOX_CONFORMANCE_MOCK='$(MOCK)' npx --no-install vitest run test/contract/suite/ \
	  --reporter=default --reporter=json --outputFile.json=build/conformance.json; rc=$$?; \
	node -e 'const r=require("./build/conformance.json"); console.log(`$${r.numPassedTests} passed, $${r.numFailedTests} failed, $${r.numPendingTests + r.numTodoTests} skipped`)'; \
	exit $$rc

# `make conformance` as CI runs it: against the built daemon on TCP with a token, then
# against `make mock`. Each is started here on a free port and stopped after (bounded waits).
conformance-ci: build
	@set -uo pipefail; tmp=$$(mktemp -d); rc=0; \
	port=$$(node -e 's=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'); \
	(umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > $$tmp/token); \
	node dist/src/main.js serve --listen tcp://127.0.0.1:$$port --state-dir $$tmp/state --token-file $$tmp/token > $$tmp/daemon.log 2>&1 & dpid=$$!; \
	trap 'kill $$dpid $${mpid:-} 2>/dev/null; wait $$dpid $${mpid:-} 2>/dev/null; rm -rf $$tmp' EXIT; \
	for i in $$(seq 1 300); do grep -q '"listening"' $$tmp/daemon.log && break; kill -0 $$dpid 2>/dev/null || break; sleep 0.1; done; \
	grep -q '"listening"' $$tmp/daemon.log || { echo "daemon did not start within 30 s"; cat $$tmp/daemon.log; exit 1; }; \
	echo "conformance: the daemon at http://127.0.0.1:$$port (TCP, token)"; \
	$(MAKE) --no-print-directory conformance URL=http://127.0.0.1:$$port TOKEN_FILE=$$tmp/token || rc=1; \
	kill $$dpid; wait $$dpid 2>/dev/null; \
	mport=$$(node -e 's=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'); \
	node_modules/.bin/prism mock openapi.yaml -h 127.0.0.1 -p $$mport > $$tmp/mock.log 2>&1 & mpid=$$!; \
	for i in $$(seq 1 300); do grep -q 'Prism is listening' $$tmp/mock.log && break; kill -0 $$mpid 2>/dev/null || break; sleep 0.1; done; \
	grep -q 'Prism is listening' $$tmp/mock.log || { echo "mock did not start within 30 s"; cat $$tmp/mock.log; exit 1; }; \
	echo "conformance: the mock at http://127.0.0.1:$$mport"; \
	$(MAKE) --no-print-directory conformance URL=http://127.0.0.1:$$mport MOCK=1 || rc=1; \
	exit $$rc

clean:
	rm -rf dist build
