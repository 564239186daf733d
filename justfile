# coop's recipes. Run them through the project's venv: `uv run just <recipe>`
# (scripts/bootstrap does this for you on a fresh machine).

set shell := ["bash", "-euo", "pipefail", "-c"]

export UV_PYTHON := "/usr/bin/python3"
export UV_PYTHON_DOWNLOADS := "never"

venv := justfile_directory() / ".venv" / "bin"
# coop-init's compile flags in packages/coop-run/hatch_build.py (FLAGS), without the link's.
coop_init_flags := "-Os -Wall -Wextra -std=gnu11 -fstack-protector-strong -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=2"

# List the recipes.
default:
    @just --list

# Create or update the venv (from /usr/bin/python3, so the test user can run it too).
setup:
    uv sync --compile-bytecode
    {{venv}}/python -m compileall -q packages/coop-build/src packages/coop-run/src

# Static checks: ruff, mypy (strict), the import layers (docs/architecture.md), coop-init
# without a warning. No formatter run: we do not want format churn.
lint:
    {{venv}}/ruff check
    {{venv}}/ruff check scripts/try-agents
    {{venv}}/mypy
    {{venv}}/mypy --strict scripts/try-agents
    {{venv}}/python scripts/check-layers
    ${CC:-cc} {{coop_init_flags}} -Werror -c -o /dev/null packages/coop-run/csrc/coop-init.c

# Lint, prepare the cached test images, then the whole suite as root and as the test user.
test: lint
    #!/usr/bin/env bash
    set -uo pipefail
    cd {{justfile_directory()}}
    if [ "$(id -u)" -ne 0 ]; then
        echo "just test: run as root (it prepares test images and re-runs tests as the test user)" >&2
        exit 1
    fi
    scripts/prepare-test-images || { echo "just test: preparing test images failed" >&2; exit 1; }
    # The root run's tests act as the test user too: it exists before them (a fresh machine).
    scripts/ensure-test-user || { echo "just test: creating the test user failed" >&2; exit 1; }
    failed=0
    # Exit 5 means pytest collected nothing: a suite that runs no test proves nothing.
    {{venv}}/pytest; rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "just test: pytest as root failed (exit $rc)" >&2
        failed=1
    fi
    # The unprivileged run cannot create network namespaces on the host: root builds the
    # network test topology (its own namespaces only) around it.
    scripts/prepare-test-network up || { echo "just test: network test topology failed" >&2; exit 1; }
    scripts/pytest-as-user tests; rc=$?
    scripts/prepare-test-network down || echo "just test: removing the network test topology failed" >&2
    if [ "$rc" -ne 0 ]; then
        echo "just test: pytest as the unprivileged test user failed (exit $rc)" >&2
        failed=1
    fi
    exit "$failed"

# The quickstart (host image, no internet needed): build it, start its session, run a
# command inside, and attach when run from a terminal.
demo:
    #!/usr/bin/env bash
    set -euo pipefail
    coop={{venv}}/coop
    cd {{justfile_directory()}}/examples/quickstart
    run() { echo "$ coop $*"; "$coop" "$@"; }
    run init
    run -d                      # the quickstart session, detached
    run ls
    run shell -c 'echo "inside: $(hostname), uid $(id -u), workspace $COOP_WORKSPACE"'
    if [ -t 0 ] && [ -t 1 ]; then
        echo "Attaching to the agent: type 'help'; Ctrl+] detaches (the session keeps running)."
        run attach
    fi
    echo "The session keeps running: 'coop attach' in examples/quickstart to return,"
    echo "'coop kill quickstart' to end it."

# Install Claude Code, Codex and Aider on host-image variants of their examples (npm and
# PyPI needed), start each with the network off, and record their first screens in
# docs/agents.md. Run by a person, not by CI; cleans up everything it started.
try-agents *AGENTS:
    {{venv}}/python scripts/try-agents {{AGENTS}}

# Benchmarks against the plain tools, measured in the same run (prints a table of ratios).
# Every bench runs even when one before it fails; the recipe fails if any did.
bench *ARGS:
    #!/usr/bin/env bash
    set -uo pipefail
    cd {{justfile_directory()}}
    rc=0
    {{venv}}/python tests/bench/run.py {{ARGS}} || rc=1
    {{venv}}/python tests/bench/bench_sandbox.py 200 || rc=1
    {{venv}}/python tests/bench/bench_sessions.py {{ARGS}} || rc=1
    {{venv}}/python tests/bench/bench_inputfilter.py || rc=1
    {{venv}}/python tests/bench/bench_web.py {{ARGS}} || rc=1
    exit "$rc"
