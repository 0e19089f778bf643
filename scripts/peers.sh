# Third-party peers used by the interop tests, installed on demand. Sourced by scripts/test.
# Everything comes from the machine's registries (npm, PyPI, Debian) and lands under .tools/
# in the repository (ignored by git) or in system packages. Tests find the peers through the
# variables exported here, and fail (never skip) when one is missing.

TOOLS_DIR="$(pwd)/.tools"
MEDPLUM_VERSION=5.0.10

ensure_medplum() {
    local dir="$TOOLS_DIR/node"
    if [ ! -x "$dir/node_modules/.bin/medplum" ]; then
        echo "installing @medplum/cli, @medplum/core, @medplum/hl7 $MEDPLUM_VERSION (npm)"
        mkdir -p "$dir"
        # Medplum 5 declares Node >= 22 but runs on Node 20; the engine warning is harmless.
        npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
            "@medplum/cli@$MEDPLUM_VERSION" "@medplum/core@$MEDPLUM_VERSION" "@medplum/hl7@$MEDPLUM_VERSION"
    fi
    export MEDPLUM_CLI="$dir/node_modules/.bin/medplum"
    export OUTPOST_NODE_MODULES="$dir/node_modules"
}

ensure_peers() {
    ensure_medplum
}
