# voidbox — `make run` and `make test` set everything up on a fresh Debian machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The guest: QEMU, busybox, the Debian cloud kernel (fallback) and the kernel source +
# toolchain for the minimal guest kernel (guest/build-kernel.sh).
APT_PACKAGES := qemu-system-x86 busybox-static linux-image-cloud-amd64 cpio lz4 zstd xz-utils \
                linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev
GUEST_DIR := build/guest
EXAMPLE ?= examples/hello.yaml

.PHONY: help deps system-deps node-deps build generate check-generated lint guest run test bench clean mock conformance conformance-ci

help:
	@echo "make run    build everything and run $(EXAMPLE) in micro-VMs, showing its events"
	@echo "make test   build everything and run the whole test suite"
	@echo "make bench  run the benchmarks (bench/)"
	@echo "make mock   serve openapi.yaml with the Prism mock on 127.0.0.1:$(PORT) (PORT= to change)"
	@echo "make conformance URL=http://HOST:PORT [TOKEN=… | TOKEN_FILE=…] [MOCK=1]"
	@echo "           run the contract suite against any running implementation"

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

# npm packages from the committed lockfile; reinstalled only when the lockfile changes.
node_modules/.installed: package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

node-deps: node_modules/.installed

deps: system-deps node-deps

build: node-deps
	npm run --silent build

generate: node-deps
	npm run --silent generate

# generated/ is committed; fail when it no longer matches openapi.yaml.
check-generated: node-deps
	@npx --no-install openapi-typescript openapi.yaml -o generated/api.ts --check >/dev/null 2>&1 || \
	  { echo "generated/api.ts is stale: run 'make generate' and commit it"; exit 1; }

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

test: deps lint build guest
	@mkdir -p build
	npx --no-install vitest run --reporter=default --reporter=json --outputFile.json=build/vitest.json
	@node -e 'const r=require("./build/vitest.json"); console.log(`$${r.numPassedTests} passed, $${r.numFailedTests} failed, $${r.numPendingTests + r.numTodoTests} skipped`)'
	$(MAKE) --no-print-directory conformance-ci
	@left=$$(pgrep -a -f '[q]emu-system.*voidbox' || true); \
	if [ -n "$$left" ]; then echo "QEMU processes outlived the suite:"; echo "$$left"; exit 1; fi

bench: deps build guest
	npx --no-install tsx bench/events-append.ts
	npx --no-install tsx bench/events-throughput.ts
	npx --no-install tsx bench/boot.ts
	npx --no-install tsx bench/output-flood.ts
	npx --no-install tsx bench/hostile.ts

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
	  VOIDBOX_CONFORMANCE_MOCK='$(MOCK)' npx --no-install vitest run test/contract/contract.test.ts \
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
