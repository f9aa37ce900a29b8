#!/usr/bin/env bash
# The Python package as a user gets it: `pip install ./python` into a fresh virtual
# environment, then pytest, the stubs checked against the module, and mypy --strict over
# the tests and examples.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${DMDELEGATE_VENV:-$PWD/target/python-venv}"
python3 -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
pip install -q --disable-pip-version-check "maturin>=1.16,<2" "pytest>=8" "mypy>=1.10"
pip install -q --disable-pip-version-check ./python
pytest -q -p no:cacheprovider --import-mode=importlib python/tests
(cd "$venv" && python -m mypy.stubtest dmdelegate._native)
python -m mypy --strict --cache-dir "$venv/.mypy_cache" python/tests examples/python
python examples/python/delegate.py 1 partial >/dev/null
for method in 1 2 3 4; do
    python examples/python/server.py "$method" full >/dev/null
done
python examples/python/server.py 1 partial >/dev/null
echo "python: examples ran"
