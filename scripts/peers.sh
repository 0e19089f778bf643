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

# ASTM: labmcp-astm-lis (a strict receiver and an analyzer simulator) and python-astm 0.5.0,
# which needs a `collections` shim on Python >= 3.10 (scripts/peers/pyshim), to build and to run.
ensure_astm_peers() {
    local dir="$TOOLS_DIR/python"
    local shim
    shim="$(pwd)/scripts/peers/pyshim"
    if [ ! -x "$dir/labmcp/bin/labmcp-astm-lis" ]; then
        echo "installing labmcp-astm-lis (PyPI)"
        python3 -m venv "$dir/labmcp"
        "$dir/labmcp/bin/pip" install -q labmcp-astm-lis
    fi
    if ! PYTHONPATH="$shim" "$dir/astm050/bin/python" -c "import astm" 2>/dev/null; then
        echo "installing astm==0.5.0 (PyPI)"
        python3 -m venv "$dir/astm050"
        "$dir/astm050/bin/pip" install -q setuptools wheel
        PYTHONPATH="$shim" "$dir/astm050/bin/pip" install -q --no-build-isolation astm==0.5.0
    fi
    export OUTPOST_LABMCP="$dir/labmcp"
    export OUTPOST_PYASTM="$dir/astm050"
    export OUTPOST_PYSHIM="$shim"
}

# DICOM: dcmtk from the distribution's packages (storescp, dcmqrscp, wlmscpfs, dump2dcm, ...).
# pynetdicom's console scripts share dcmtk's names, so tests call dcmtk by its absolute path.
ensure_dcmtk() {
    local need=0 prog
    for prog in storescp storescu dcmqrscp wlmscpfs dump2dcm dcmconv; do
        [ -x "/usr/bin/$prog" ] || need=1
    done
    if [ "$need" = 1 ]; then
        echo "installing dcmtk (apt)"
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dcmtk >/dev/null
    fi
    export OUTPOST_DCMTK_DIR=/usr/bin
}

# DICOM peers from PyPI: pydicom, whose wheel ships the test files the corpus test stores and
# which compares stored objects element by element (crates/dicom-net/tests/pydicom_compare.py),
# and pynetdicom, a second SCU and SCP beside dcmtk.
ensure_pydicom() {
    local dir="$TOOLS_DIR/python/pydicom"
    if ! "$dir/bin/python" -c "import pydicom, pynetdicom" 2>/dev/null; then
        echo "installing pydicom 3.0.2 and pynetdicom 3.0.4 (PyPI)"
        python3 -m venv "$dir"
        "$dir/bin/pip" install -q "pydicom==3.0.2" "pynetdicom==3.0.4"
    fi
    export OUTPOST_PYDICOM="$dir"
}

# Scale-out: redis-server and PostgreSQL from the distribution's packages. The tests start
# private instances of both on free ports (crates/cli/tests/support/services.rs).
ensure_scaleout_peers() {
    local missing=""
    [ -x /usr/bin/redis-server ] || missing="$missing redis-server"
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
    if [ -n "$missing" ]; then
        echo "installing$missing (apt)"
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
    fi
    export OUTPOST_REDIS_SERVER=/usr/bin/redis-server
    OUTPOST_PG_BIN="$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")"
    export OUTPOST_PG_BIN
}

# FHIR R4 validation: the PyPI package fhir.resources 6.4.0, the last release whose models are
# FHIR R4 (4.0.1) — 6.5 moved to R4B, 7 and 8 to R5 — with the pydantic 1 it is built on. The
# lab-results tests parse every resource they produce with it (scripts/peers/fhir_validate.py).
FHIR_RESOURCES_VERSION=6.4.0
ensure_fhir_validator() {
    local dir="$TOOLS_DIR/python/fhir-r4"
    if ! "$dir/bin/python" -c "import fhir.resources as f; assert f.__version__ == '$FHIR_RESOURCES_VERSION' and f.__fhir_version__ == '4.0.1'" 2>/dev/null; then
        echo "installing fhir.resources $FHIR_RESOURCES_VERSION (PyPI)"
        python3 -m venv "$dir"
        "$dir/bin/pip" install -q "fhir.resources==$FHIR_RESOURCES_VERSION" "pydantic==1.10.27"
    fi
    export OUTPOST_FHIR_PYTHON="$dir/bin/python"
}

# TLS with devices: socat (OpenSSL) terminates TLS in front of a plain MLLP device and sends to
# mllps:// channels, and `openssl s_client` talks to mllps:// and TLS dicom:// channels
# (crates/agent-core/tests/device_tls.rs, dicom_in.rs); stunnel4 for trying it by hand. dcmtk's
# storescu +tls (ensure_dcmtk) is the TLS DICOM sender.
ensure_tls_peers() {
    local missing="" prog pkg
    for pair in socat:socat stunnel4:stunnel4 openssl:openssl; do
        prog="${pair%%:*}"
        pkg="${pair##*:}"
        [ -x "/usr/bin/$prog" ] || missing="$missing $pkg"
    done
    if [ -n "$missing" ]; then
        echo "installing$missing (apt)"
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
    fi
    export OUTPOST_SOCAT=/usr/bin/socat
    export OUTPOST_OPENSSL=/usr/bin/openssl
}

# The console's browser test: headless Chromium and its WebDriver from Debian's packages,
# driven by Python selenium from PyPI (crates/cli/tests/console_browser.py).
SELENIUM_VERSION=4.38.0
ensure_chromium() {
    local missing="" prog pkg
    for pair in chromium:chromium chromedriver:chromium-driver; do
        prog="${pair%%:*}"
        pkg="${pair##*:}"
        [ -x "/usr/bin/$prog" ] || missing="$missing $pkg"
    done
    if [ -n "$missing" ]; then
        echo "installing$missing (apt)"
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
    fi
    local dir="$TOOLS_DIR/python/selenium"
    if ! "$dir/bin/python" -c "import selenium; assert selenium.__version__ == '$SELENIUM_VERSION'" 2>/dev/null; then
        echo "installing selenium $SELENIUM_VERSION (PyPI)"
        python3 -m venv "$dir"
        "$dir/bin/pip" install -q "selenium==$SELENIUM_VERSION"
    fi
    export OUTPOST_SELENIUM_PYTHON="$dir/bin/python"
    export OUTPOST_CHROMIUM=/usr/bin/chromium
    export OUTPOST_CHROMEDRIVER=/usr/bin/chromedriver
}

ensure_peers() {
    ensure_chromium
    ensure_medplum
    ensure_fhir_validator
    ensure_astm_peers
    ensure_dcmtk
    ensure_pydicom
    ensure_scaleout_peers
    ensure_tls_peers
}
