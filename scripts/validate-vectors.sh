#!/usr/bin/env bash
# Validates the wire-format vectors against the XML Schema.
#
#   - every vectors/valid/*.xml must validate against schema/delegation-1.0.xsd;
#   - every vectors/invalid/*.xml is checked as its row in vectors/invalid/README.md says:
#       schema-invalid   well-formed, the XSD must reject it (xmllint exit 3)
#       schema-valid     the XSD must accept it (the decoder refuses it for a rule the
#                        XSD cannot express)
#       not-well-formed  xmllint must fail to parse it (exit 1)
#       not-checked      holds a DOCTYPE; skipped (DTDs are never processed)
#     and every file must have a row, every row a file;
#   - every vectors/batch/*.xml must validate against schema/delegation-batch-1.0.xsd (the
#     HTTPS binding's batch envelope, which imports the message schema);
#   - the encoder's output for the valid vectors must validate too, when the example
#     `encode_vectors` exists. Its contract: `encode_vectors <input-dir> <output-dir>`
#     decodes every <input-dir>/NAME.xml and writes Message::to_xml() to <output-dir>/NAME.xml.
#     (Without the example, `DMDELEGATE_ENCODED_VECTORS_DIR=<dir> cargo test -p dmdelegate
#     --test vectors` writes the same files.)
#
# Usage: scripts/validate-vectors.sh   (from anywhere; it works from the repository root)
# Needs: xmllint (Debian/Ubuntu: apt-get install libxml2-utils); cargo for the encoder step.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

schema="schema/delegation-1.0.xsd"
readme="vectors/invalid/README.md"

if ! command -v xmllint >/dev/null 2>&1; then
    echo "error: xmllint not found (install libxml2-utils)" >&2
    exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

failures=0
checked=0

fail() {
    echo "FAIL $*" >&2
    failures=$((failures + 1))
}

# Runs xmllint on $1 and prints its exit code (0 valid, 1 not well-formed, 3 schema-invalid,
# 5 schema itself does not compile, which is always fatal).
xmllint_rc() {
    local rc=0
    xmllint --noout --nonet --schema "$schema" "$1" >"$tmp/out" 2>&1 || rc=$?
    if [[ $rc -eq 5 ]]; then
        cat "$tmp/out" >&2
        echo "error: $schema does not compile" >&2
        exit 2
    fi
    echo "$rc"
}

shopt -s nullglob

# --- valid vectors --------------------------------------------------------------------
valid=(vectors/valid/*.xml)
if [[ ${#valid[@]} -eq 0 ]]; then
    echo "error: no vectors in vectors/valid" >&2
    exit 2
fi
for f in "${valid[@]}"; do
    rc="$(xmllint_rc "$f")"
    checked=$((checked + 1))
    if [[ $rc -ne 0 ]]; then
        fail "$f: expected valid, xmllint exit $rc"
        cat "$tmp/out" >&2
    fi
done
echo "valid:   ${#valid[@]} vectors checked"

# --- invalid vectors ------------------------------------------------------------------
if [[ ! -f $readme ]]; then
    echo "error: $readme not found" >&2
    exit 2
fi
declare -A expect=()
# Table rows look like: | `file.xml` | `Variant` | detail | schema-status |
while IFS=$'\t' read -r file status; do
    [[ -n $file ]] || continue
    if [[ -n ${expect[$file]+x} ]]; then
        fail "$readme lists $file twice"
    fi
    expect[$file]="$status"
done < <(awk -F'|' '/^\| *`[^`]+` *\|/ {
        file = $2; gsub(/[ `]/, "", file)
        status = $(NF - 1); gsub(/^ +| +$/, "", status)
        print file "\t" status
    }' "$readme")

invalid=(vectors/invalid/*.xml)
declare -A seen=()
schema_checked=0
for f in "${invalid[@]}"; do
    name="$(basename "$f")"
    seen[$name]=1
    status="${expect[$name]-}"
    if [[ -z $status ]]; then
        fail "$f has no row in $readme"
        continue
    fi
    case "$status" in
    schema-invalid) want=3 ;;
    schema-valid) want=0 ;;
    not-well-formed) want=1 ;;
    not-checked) continue ;;
    *)
        fail "$readme: unknown schema status '$status' for $name"
        continue
        ;;
    esac
    rc="$(xmllint_rc "$f")"
    checked=$((checked + 1))
    schema_checked=$((schema_checked + 1))
    if [[ $rc -ne $want ]]; then
        fail "$f: listed as $status (xmllint exit $want), got exit $rc"
        cat "$tmp/out" >&2
    fi
done
for name in "${!expect[@]}"; do
    if [[ -z ${seen[$name]+x} ]]; then
        fail "$readme lists $name, which is not in vectors/invalid"
    fi
done
echo "invalid: ${#invalid[@]} vectors, $schema_checked checked against the schema"

# --- batch envelope ------------------------------------------------------------------
batch_schema="schema/delegation-batch-1.0.xsd"
batches=(vectors/batch/*.xml)
if [[ ${#batches[@]} -eq 0 ]]; then
    echo "error: no vectors in vectors/batch" >&2
    exit 2
fi
for f in "${batches[@]}"; do
    rc=0
    xmllint --noout --nonet --schema "$batch_schema" "$f" >"$tmp/out" 2>&1 || rc=$?
    checked=$((checked + 1))
    if [[ $rc -eq 5 ]]; then
        cat "$tmp/out" >&2
        echo "error: $batch_schema does not compile" >&2
        exit 2
    fi
    if [[ $rc -ne 0 ]]; then
        fail "$f: expected valid against $batch_schema, xmllint exit $rc"
        cat "$tmp/out" >&2
    fi
done
echo "batch:   ${#batches[@]} vectors checked"

# --- encoder output -------------------------------------------------------------------
if [[ -f core/examples/encode_vectors.rs || -f core/examples/encode_vectors/main.rs ]]; then
    mkdir -p "$tmp/encoded"
    if ! cargo run -q -p dmdelegate --example encode_vectors -- vectors/valid "$tmp/encoded"; then
        fail "cargo run --example encode_vectors failed"
    fi
    encoded=("$tmp"/encoded/*.xml)
    if [[ ${#encoded[@]} -ne ${#valid[@]} ]]; then
        fail "encode_vectors wrote ${#encoded[@]} files for ${#valid[@]} valid vectors"
    fi
    for f in "${encoded[@]}"; do
        rc="$(xmllint_rc "$f")"
        checked=$((checked + 1))
        if [[ $rc -ne 0 ]]; then
            fail "encoder output for $(basename "$f"): xmllint exit $rc"
            cat "$tmp/out" >&2
        fi
    done
    echo "encoded: ${#encoded[@]} encoder outputs checked"
else
    echo "encoded: skipped (no example core/examples/encode_vectors.rs)"
fi

if [[ $failures -ne 0 ]]; then
    echo "$failures failure(s) in $checked checks" >&2
    exit 1
fi
echo "ok: $checked checks passed"
