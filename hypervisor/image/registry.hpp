#pragma once

#include "base/result.hpp"
#include "hypervisor/image/reference.hpp"

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace litterbox::hypervisor::image {

/// An OCI registry as the image store sees it. Implementations block and are thread-safe.
class registry {
 public:
  virtual ~registry() = default;

  /// The raw bytes of the manifest or index `ref` names (tag or digest), exactly as served,
  /// so their sha256 is the manifest digest. Errors: image_not_found, registry_unavailable.
  virtual result<std::string> fetch_manifest(const image_ref& ref) = 0;

  /// The digest of the manifest or index `ref`'s tag names right now, when the registry says
  /// so cheaply (without credentials, in one round trip); nullopt otherwise, whatever the
  /// reason (credentials wanted, no digest header, unreachable): the caller then fetches the
  /// manifest, which reports errors properly. Default: nullopt.
  virtual std::optional<std::string> head_digest(const image_ref& /*ref*/) { return std::nullopt; }

  /// Copies the image manifest `digest` of `ref`'s repository into the empty directory `dir`
  /// as `manifest.json` plus one file per blob named by its hex digest, verifying every blob.
  /// Errors: image_not_found, registry_unavailable, image_corrupt.
  virtual result<void> pull(const image_ref& ref, std::string_view digest,
                            const std::filesystem::path& dir) = 0;
};

/// How skopeo talks to registries.
struct skopeo_options {
  std::vector<std::string> insecure_registries;  ///< host:port reached over plain HTTP
  std::filesystem::path auth_file;  ///< containers-auth.json(5); empty = skopeo's default
  std::chrono::seconds inspect_timeout{60};
  std::chrono::seconds pull_timeout{1800};
  /// The whole of one head_digest request; past it the manifest is fetched through skopeo.
  std::chrono::milliseconds head_timeout{3000};
};

/// The registry through Debian's skopeo (argv only, never a shell), and head_digest as one
/// in-process HTTP `HEAD` of the manifest (libcurl; a skopeo process costs tens to hundreds
/// of milliseconds, which every pool claim would pay). Thread-safe.
class skopeo_registry final : public registry {
 public:
  explicit skopeo_registry(skopeo_options options) : options_(std::move(options)) {}

  result<std::string> fetch_manifest(const image_ref& ref) override;
  /// `HEAD /v2/<repository>/manifests/<tag>` with the media types skopeo accepts, answered
  /// by a 200 with a `Docker-Content-Digest`. Registries in insecure_registries are asked over
  /// plain HTTP, every other over HTTPS with verification. Never sends credentials: with an
  /// auth file configured, or when the registry answers 401, it is nullopt and skopeo's
  /// fetch (which has them) decides. Proxies as libcurl reads them from the environment.
  std::optional<std::string> head_digest(const image_ref& ref) override;
  result<void> pull(const image_ref& ref, std::string_view digest,
                    const std::filesystem::path& dir) override;

 private:
  std::vector<std::string> common_args(const image_ref& ref, bool source) const;

  skopeo_options options_;
};

/// Maps a failed skopeo run to an error code and a short message (no tool output dumped):
/// exposed for tests.
error classify_skopeo_failure(std::string_view what, std::string_view stderr_text, bool timed_out);

/// The manifest URL head_digest asks: scheme://host/v2/<repository>/manifests/<tag>, with
/// docker.io's API host. Exposed for tests.
std::string manifest_url(const image_ref& ref, bool plain_http);

}  // namespace litterbox::hypervisor::image
