# Corral: the two commands of a fresh machine are `make run` and `make test`.
# Every target installs what it needs first, so a new Debian 12 machine with Swift at
# /opt/swift needs nothing else.

SHELL := /bin/bash
export PATH := /opt/swift/usr/bin:$(PATH)

# libc6-dev brings libc.a, which the static corral-init links.
APT_PACKAGES := libc6-dev libcurl4-openssl-dev libarchive-dev libcap-dev libseccomp-dev libhiredis-dev libssl-dev \
	libsqlite3-dev busybox-static file debootstrap debian-archive-keyring ripgrep libarchive-tools zstd xz-utils \
	redis-server hyperfine util-linux iproute2 python3 wrk openssl git
# Python test peers, pinned in Tests/requirements.txt.
PIP_REQUIREMENTS := Tests/requirements.txt
ROOTFS_OUT ?= rootfs/out
SWIFT_TEST_FLAGS ?= --no-parallel

FUZZ_S ?= 60

.PHONY: run test fuzz test-api-fuzz test-cgroup-v2 test-devtools test-network deps build build-tests lint format rootfs rootfs-minimal rootfs-devtools rootfs-check bench clean

# Serves on 127.0.0.1:8080 (open: loopback, no tokens) with project "demo" from
# examples/demo, and prints a curl for each kind of call. The demo's `npm test` and
# `python3` need the devtools image.
run: deps rootfs-minimal rootfs-devtools
	swift build -c release --product corral-init
	swift build -c release --product corral --static-swift-stdlib
	ROOTFS_OUT=$(ROOTFS_OUT) scripts/demo

# The failures are repeated at the end, since CI keeps only the tail of the output.
test: deps rootfs-minimal
	swift build --build-tests
	set -o pipefail; CORRAL_ROOTFS_DIR=$(CURDIR)/$(ROOTFS_OUT) swift test $(SWIFT_TEST_FLAGS) 2>&1 | tee .build/test.log || \
		{ echo "=== failed tests ==="; grep -E -A2 '^✘ .*recorded an issue' .build/test.log | cut -c1-2000 | head -120; exit 1; }
	$(MAKE) lint

# libFuzzer with AddressSanitizer over the parsers that read untrusted bytes (fuzz/run):
# FUZZ_S seconds per target; fails on a crash, a leak or a 10 s input.
fuzz:
	FUZZ_S=$(FUZZ_S) fuzz/run

# schemathesis against a live server from docs/openapi.json: fails on any 5xx.
test-api-fuzz: deps rootfs-minimal
	CORRAL_ROOTFS_DIR=$(CURDIR)/$(ROOTFS_OUT) Tests/schemathesis/run

# What needs the devtools image, which it builds first: the network edge with the tools
# agents use, unmodified (curl over TLS, pip from a PEP 503 index and git over HTTP,
# through the egress proxy to servers on loopback: Tests/HostTests/EgressDevtoolsTests.swift),
# a project setup that pip-installs from that index once (SetupDevtoolsTests), and python
# sessions with the data stack (Tests/APITests/PythonSessionTests.swift).
test-devtools: deps rootfs-minimal rootfs-devtools
	swift build --build-tests
	CORRAL_ROOTFS_DIR=$(CURDIR)/$(ROOTFS_OUT) swift test --skip-build $(SWIFT_TEST_FLAGS) --filter 'EgressDevtoolsTests|SetupDevtoolsTests|PythonSessionTests'

test-network: test-devtools

# The cgroup tests again, inside a VM whose kernel has a pure cgroup v2 hierarchy (this
# machine's cgroups are hybrid). Boots under software emulation; takes a minute or two.
test-cgroup-v2: deps rootfs-minimal
	swift build --build-tests
	Tests/cgroup-v2/run

# Installs only what is missing, so a warm machine pays one dpkg query.
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@scripts/pip-check $(PIP_REQUIREMENTS) || \
		python3 -m pip install --quiet --disable-pip-version-check -r $(PIP_REQUIREMENTS)

build: deps
	swift build

lint:
	swift format lint --strict -r Sources Tests benchmarks fuzz Package.swift

format:
	swift format -i -r Sources Tests benchmarks fuzz Package.swift

rootfs: rootfs-minimal rootfs-devtools
	$(MAKE) rootfs-check

# Checks that both images are complete (commands present and runnable); no namespaces.
rootfs-check:
	rootfs/check minimal $(ROOTFS_OUT)
	rootfs/check devtools $(ROOTFS_OUT)

rootfs-minimal: deps
	rootfs/build minimal $(ROOTFS_OUT)

rootfs-devtools: deps
	rootfs/build devtools $(ROOTFS_OUT)

bench: deps rootfs-minimal
	swift build -c release
	benchmarks/run $(ROOTFS_OUT)

clean:
	rm -rf .build
