#!/bin/bash
# Benchmarks the image pipeline on the reference image against a shell baseline.
#   bench/image/run.sh <build-dir>
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: run.sh <build-dir>}
. "$here/../../scripts/lib/registry.sh"
. "$here/../../scripts/lib/reference-image.sh"
registry_start
ref=$(reference_image_ensure)
modules=/lib/modules/$(ls /lib/modules | sort -V | tail -1)
"$build/bench/image/image_bench" "$ref" "${TMPDIR:-/tmp}/litterbox-image-bench" "$modules"
