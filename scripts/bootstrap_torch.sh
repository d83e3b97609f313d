#!/usr/bin/env bash
# Optional: creates the venv with pinned PyTorch that regenerates the golden
# fixtures (tests/golden/make_golden.py) and the demo data (demo/make_demo.py).
# The build and the tests never need it. Idempotent and quick when the venv
# already matches requirements-torch.txt. Prints the venv's python on stdout.
#
#   HMHA_TORCH_VENV       where to put it (default ~/.cache/hmha/torchenv)
#   HMHA_TORCH_INDEX_URL  optional pip index, e.g. https://download.pytorch.org/whl/cpu
#                         for a CPU-only wheel (much smaller download)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${HMHA_TORCH_VENV:-$HOME/.cache/hmha/torchenv}
req="$root/requirements-torch.txt"

stamp="$venv/.hmha-requirements-torch"
if ! cmp -s "$req" "$stamp" 2>/dev/null; then
    echo "bootstrap_torch: creating $venv with $(grep -v '^#' "$req" | tr '\n' ' ')" >&2
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    extra=()
    if [ -n "${HMHA_TORCH_INDEX_URL:-}" ]; then
        extra=(--index-url "$HMHA_TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple)
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check "${extra[@]}" -r "$req" >&2
    cp "$req" "$stamp"
fi
echo "$venv/bin/python"
