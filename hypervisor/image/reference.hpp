#pragma once

#include "base/result.hpp"

#include <string>
#include <string_view>

namespace litterbox::hypervisor::image {

/// A parsed OCI image reference: `[registry/]repository[:tag][@sha256:hex]`.
struct image_ref {
  std::string registry;    ///< host[:port], e.g. "127.0.0.1:5000" or "docker.io"
  std::string repository;  ///< e.g. "litterbox/debian" or "library/alpine"
  std::string tag;         ///< empty when pinned by digest only
  std::string digest;      ///< "sha256:<64 hex>" or empty

  /// The skopeo transport form, pinned to `digest_override` when given:
  /// "docker://registry/repository@sha256:…" or "docker://registry/repository:tag".
  std::string docker_transport(std::string_view digest_override = {}) const;
  /// registry/repository[:tag][@digest], the canonical spelling for messages.
  std::string canonical() const;
};

/// Parses `text` the way container tools do: a first component containing '.' or ':' or
/// equal to "localhost" is a registry, anything else lives on `default_registry`
/// (with "library/" prepended for one-component names on docker.io); no tag and no digest
/// means ":latest". Pure. Errors: image_not_found naming what is malformed.
result<image_ref> parse_reference(std::string_view text, std::string_view default_registry);

/// True for "sha256:" followed by 64 lowercase hex digits.
bool is_sha256_digest(std::string_view text);

}  // namespace litterbox::hypervisor::image
