# shellcheck shell=bash
# The reference guest image: built from cloud-init/images when missing (cached under the
# state directory, keyed by the recipe's hash) and pushed to the loopback registry.
# Source this file and registry.sh, then call reference_image_ensure; it prints the reference.
#   LITTERBOX_STATE_DIR      state directory (default /var/lib/litterbox)
#   LITTERBOX_REGISTRY_ADDR  registry address (default 127.0.0.1:5000)

reference_image_recipe_dir() {
  echo "$(cd "$(dirname "${BASH_SOURCE[0]}")/../../cloud-init/images" && pwd)"
}

# Hash of every file of the recipe: a change to any of them means a new image.
reference_image_recipe_hash() {
  local recipe
  recipe=$(reference_image_recipe_dir)
  (cd "$recipe" && find . -type f ! -name '*.md' -print0 | LC_ALL=C sort -z |
     xargs -0 sha256sum) | sha256sum | cut -c1-16
}

reference_image_ensure() {
  local state recipe hash layout ref want have tmp
  state=${LITTERBOX_STATE_DIR:-/var/lib/litterbox}
  recipe=$(reference_image_recipe_dir)
  hash=$(reference_image_recipe_hash)
  layout="$state/reference-image/$hash"
  ref="$(registry_addr)/litterbox/debian:12"
  if [ ! -f "$layout/index.json" ]; then
    mkdir -p "$state/reference-image"
    tmp="$state/reference-image/.tmp-$hash-$$"
    rm -rf "$tmp"
    echo "reference image: building (recipe $hash)" >&2
    "$recipe/build.sh" "$tmp" 12 >&2 || { rm -rf "$tmp"; return 1; }
    # Published only when complete, so a killed build is rebuilt next time.
    mv "$tmp" "$layout"
  fi
  want=sha256:$(jq -r '.manifests[0].digest' "$layout/index.json" | cut -d: -f2)
  have=$(skopeo inspect --raw --tls-verify=false "docker://$ref" 2>/dev/null | sha256sum |
         cut -d' ' -f1)
  if [ "$want" != "sha256:$have" ]; then
    echo "reference image: pushing to $ref" >&2
    skopeo copy --quiet --dest-tls-verify=false "oci:$layout:12" "docker://$ref" >&2 || return 1
  fi
  echo "$ref"
}
