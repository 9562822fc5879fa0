#include "hypervisor/image/registry.hpp"

#include "base/process.hpp"
#include "hypervisor/errc.hpp"

#include <algorithm>
#include <array>
#include <cctype>

namespace litterbox::hypervisor::image {
namespace {

bool contains_any(std::string_view haystack, std::initializer_list<std::string_view> needles) {
  return std::any_of(needles.begin(), needles.end(), [&](std::string_view n) {
    return haystack.find(n) != std::string_view::npos;
  });
}

/// What skopeo may read of the daemon's environment besides the minimal one: where registry
/// credentials live when no auth file is configured, proxies and extra CA certificates.
/// Never DATABASE_URL or SERVICE_TOKENS.
std::vector<std::string> skopeo_env() {
  return {"REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_CONFIG", "HTTP_PROXY",
          "HTTPS_PROXY",        "NO_PROXY",        "http_proxy",    "https_proxy",
          "no_proxy",           "SSL_CERT_FILE",   "SSL_CERT_DIR"};
}

}  // namespace

error classify_skopeo_failure(std::string_view what, std::string_view stderr_text, bool timed_out) {
  std::string lower(stderr_text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  const std::string subject(what);
  if (timed_out) {
    return make_error(errc::registry_unavailable,
                      subject + ": the registry did not answer in time");
  }
  if (contains_any(lower,
                   {"connection refused", "no such host", "i/o timeout", "network is unreachable",
                    "connection reset", "tls:", "x509:", "server gave http response", "503 service",
                    "502 bad gateway", "500 internal"})) {
    return make_error(errc::registry_unavailable, subject + ": the registry could not be reached");
  }
  if (contains_any(lower,
                   {"digest did not match", "does not match", "mismatch", "unexpected eof",
                    "invalid checksum", "blob unknown", "unexpected end", "invalid digest"})) {
    return make_error(errc::image_corrupt, subject + ": a blob failed its digest check");
  }
  if (contains_any(lower, {"manifest unknown", "name unknown", "not found", "404",
                           "repository name not known"})) {
    return make_error(errc::image_not_found, subject + ": no such image in the registry");
  }
  if (contains_any(lower, {"unauthorized", "denied", "authentication required", "401", "403"})) {
    return make_error(errc::image_not_found,
                      subject + ": not found, or the configured credentials do not grant access");
  }
  return make_error(errc::registry_unavailable, subject + ": the registry refused the request");
}

std::vector<std::string> skopeo_registry::common_args(const image_ref& ref, bool source) const {
  std::vector<std::string> args;
  const bool insecure =
      std::find(options_.insecure_registries.begin(), options_.insecure_registries.end(),
                ref.registry) != options_.insecure_registries.end();
  if (source) {
    args.emplace_back(insecure ? "--src-tls-verify=false" : "--src-tls-verify=true");
    if (!options_.auth_file.empty()) {
      args.push_back("--src-authfile=" + options_.auth_file.string());
    }
  } else {
    args.emplace_back(insecure ? "--tls-verify=false" : "--tls-verify=true");
    if (!options_.auth_file.empty()) {
      args.push_back("--authfile=" + options_.auth_file.string());
    }
  }
  return args;
}

result<std::string> skopeo_registry::fetch_manifest(const image_ref& ref) {
  std::vector<std::string> argv{"skopeo", "inspect", "--raw"};
  for (auto& a : common_args(ref, false)) {
    argv.push_back(std::move(a));
  }
  argv.push_back(ref.docker_transport());
  auto run = run_process(argv, {options_.inspect_timeout, skopeo_env()});
  if (!run) {
    return make_error(errc::internal, run.error().message);
  }
  if (run->exit_code != 0) {
    return classify_skopeo_failure(ref.canonical(), run->err, run->timed_out);
  }
  return std::move(run->out);
}

result<void> skopeo_registry::pull(const image_ref& ref, std::string_view digest,
                                   const std::filesystem::path& dir) {
  std::vector<std::string> argv{"skopeo", "copy", "--quiet"};
  for (auto& a : common_args(ref, true)) {
    argv.push_back(std::move(a));
  }
  argv.push_back(ref.docker_transport(digest));
  argv.push_back("dir:" + dir.string());
  auto run = run_process(argv, {options_.pull_timeout, skopeo_env()});
  if (!run) {
    return make_error(errc::internal, run.error().message);
  }
  if (run->exit_code != 0) {
    return classify_skopeo_failure(ref.canonical(), run->err, run->timed_out);
  }
  return {};
}

}  // namespace litterbox::hypervisor::image
