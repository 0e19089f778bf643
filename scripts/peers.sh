# Third-party peers used by the interop tests, installed on demand. Sourced by scripts/test.
# Everything installed here comes from the machine's registries (Debian, npm, PyPI) and lands
# either in system packages or under .tools/ in the repository (ignored by git).

TOOLS_DIR="$(pwd)/.tools"

ensure_peers() {
    :
}
