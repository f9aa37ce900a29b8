#!/usr/bin/env bash
# The interop matrix (interop/README.md): DM Servers in Rust (the CLI), C, Python and
# Kotlin, each in its own process, delegate to each other over HTTPS with mutual TLS
# around a simulated device process. Builds what it needs:
#   - the CLI and the C library (cargo), the C agent (gcc, -Wall -Wextra -Werror);
#   - the Python package in target/python-venv (pip install ./python) when missing there;
#   - the Kotlin jar (scripts/kotlin-tests.sh) when missing, then the Kotlin agent (Maven).
# Exits non-zero when any run fails. INTEROP_ONLY="c python" limits the languages.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
out="$ROOT/target/interop"
mkdir -p "$out"
only=" ${INTEROP_ONLY:-c python kotlin} "
agents=()

cargo build -q -p dmdelegate-cli -p dmdelegate-c

if [[ $only == *" c "* ]]; then
  gcc -std=c11 -Wall -Wextra -Werror -pedantic -O1 -Iinclude interop/agents/c/agent.c \
    target/debug/libdmdelegate.a -lpthread -ldl -lm -o "$out/agent_c"
  agents+=(--agent "c=$out/agent_c")
fi

if [[ $only == *" python "* ]]; then
  venv="${DMDELEGATE_VENV:-$ROOT/target/python-venv}"
  if ! "$venv/bin/python" -c "import dmdelegate; dmdelegate.DeviceHub" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check ./python
  fi
  agents+=(--agent "python=$venv/bin/python $ROOT/interop/agents/python/agent.py")
fi

if [[ $only == *" kotlin "* ]]; then
  module="$ROOT/bindings/kotlin"
  jar="$module/target/dmdelegate-0.1.0.jar"
  [ -f "$jar" ] || ./scripts/kotlin-tests.sh
  mvn_() { mvn -B -q -Dstyle.color=never "$@" 2>&1 | sed -u 's/\x1b\[[0-9;]*m//g'; }
  mvn_ -f "$module/pom.xml" install:install-file -Dfile="$jar" -DpomFile="$module/pom.xml"
  agent="$ROOT/interop/agents/kotlin"
  rm -rf "$agent/target"
  mvn_ -f "$agent/pom.xml" package
  agents+=(--agent "kotlin=java -cp $agent/target/classes:$(cat "$agent/target/classpath.txt") org.dmdelegate.interop.AgentKt")
fi

python3 interop/run.py --cli "$ROOT/target/debug/dmdelegate" "${agents[@]}" --json "$out/results.json"
