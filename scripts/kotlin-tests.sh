#!/usr/bin/env bash
# The Kotlin bindings as a user gets them: the uniffi library built, its Kotlin sources
# generated from the compiled library (never committed, so they always match it), the
# Maven module tested and packaged (the .so inside the jar), then the example in
# examples/kotlin built against that jar and run. Needs a JDK 17+ and Maven; Maven is
# installed from Debian's packages when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

module="$PWD/bindings/kotlin"
example="$PWD/examples/kotlin"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
native_dir="$target_dir/debug"

if ! command -v mvn >/dev/null 2>&1; then
  echo "kotlin: installing maven"
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq maven >/dev/null
fi

# Batch mode, quiet (errors only); Debian's Maven 3.8 prints colour resets even then.
mvn_() { mvn -B -q -Dstyle.color=never "$@" 2>&1 | sed -u 's/\x1b\[[0-9;]*m//g'; }

cargo build -p dmdelegate-uniffi

# Fresh every time: no generated file or class left from an older API.
rm -rf "$module/target" "$example/target"
# uniffi-kotlin.toml renames the two Rust names that collide with Kotlin members.
cargo run -q -p uniffi-bindgen -- generate \
  --library "$native_dir/libdmdelegate_uniffi.so" --language kotlin --no-format \
  --config "$module/uniffi-kotlin.toml" \
  --out-dir "$module/target/generated-sources/uniffi"

mvn_ -f "$module/pom.xml" -Dnative.dir="$native_dir" verify

# What surefire ran (quiet Maven prints nothing when all passed).
python3 - "$module/target/surefire-reports" <<'EOF'
import glob, sys, xml.etree.ElementTree as ET
n = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
for f in glob.glob(sys.argv[1] + "/TEST-*.xml"):
    suite = ET.parse(f).getroot()
    for k in n:
        n[k] += int(suite.get(k, "0"))
if n["tests"] == 0:
    sys.exit("kotlin: no test ran")
failed = n["failures"] + n["errors"]
print(f"kotlin: {n['tests'] - failed - n['skipped']} passed, {failed} failed, {n['skipped']} skipped")
EOF

# The example, built against the packaged jar through its Maven coordinates, and run with
# plain `java`: the native library comes out of the jar (no jna.library.path).
jar="$module/target/dmdelegate-0.1.0.jar"
mvn_ -f "$module/pom.xml" install:install-file -Dfile="$jar" -DpomFile="$module/pom.xml"
mvn_ -f "$example/pom.xml" package
classpath="$example/target/classes:$(cat "$example/target/classpath.txt")"
log="$example/target/example.log"
for run in "1 partial" "3 full"; do
  # shellcheck disable=SC2086
  if ! java -cp "$classpath" org.dmdelegate.examples.DelegateKt $run >"$log" 2>&1; then
    cat "$log"
    echo "kotlin: the example failed ($run)" >&2
    exit 1
  fi
done
echo "kotlin: example ran (Method 1 Partial, Method 3 Full)"
