#include "hypervisor/image/registry.hpp"

#include "base/process.hpp"
#include "hypervisor/errc.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <curl/curl.h>
#include <memory>
#include <mutex>

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

/// What skopeo's `inspect --raw` accepts (containers/image's default manifest types), so
/// that the digest a HEAD names is that of the bytes fetch_manifest gets.
constexpr std::string_view k_manifest_accept =
    "Accept: application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.docker.distribution.manifest.v1+prettyjws, "
    "application/vnd.docker.distribution.manifest.v1+json";

struct curl_deleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct slist_deleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

/// Collects the value of Docker-Content-Digest from the response headers.
std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
  const std::size_t n = size * count;
  std::string_view line(data, n);
  constexpr std::string_view name = "docker-content-digest:";
  if (line.size() > name.size()) {
    std::string head(line.substr(0, name.size()));
    std::transform(head.begin(), head.end(), head.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (head == name) {
      line.remove_prefix(name.size());
      while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) {
        line.remove_prefix(1);
      }
      while (!line.empty() && (line.back() == '\r' || line.back() == '\n' || line.back() == ' ' ||
                               line.back() == '\t')) {
        line.remove_suffix(1);
      }
      *static_cast<std::string*>(user) = std::string(line);
    }
  }
  return n;
}

}  // namespace

std::string manifest_url(const image_ref& ref, bool plain_http) {
  // docker.io is the name; its registry API lives on registry-1.docker.io (as skopeo knows).
  const std::string host = ref.registry == "docker.io" ? "registry-1.docker.io" : ref.registry;
  return std::string(plain_http ? "http://" : "https://") + host + "/v2/" + ref.repository +
         "/manifests/" + ref.tag;
}

std::optional<std::string> skopeo_registry::head_digest(const image_ref& ref) {
  if (ref.tag.empty() || !ref.digest.empty() || !options_.auth_file.empty()) {
    return std::nullopt;
  }
  static std::once_flag curl_ready;
  std::call_once(curl_ready, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  const std::unique_ptr<CURL, curl_deleter> curl(curl_easy_init());
  if (!curl) {
    return std::nullopt;
  }
  const bool plain_http =
      std::find(options_.insecure_registries.begin(), options_.insecure_registries.end(),
                ref.registry) != options_.insecure_registries.end();
  const std::string url = manifest_url(ref, plain_http);
  const std::unique_ptr<curl_slist, slist_deleter> headers(
      curl_slist_append(nullptr, std::string(k_manifest_accept).c_str()));
  std::string digest;
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &digest);
  const long timeout_ms = options_.head_timeout.count();
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_USERAGENT, "litterbox");
  if (curl_easy_perform(c) != CURLE_OK) {
    return std::nullopt;
  }
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  if (code != 200) {
    return std::nullopt;
  }
  std::transform(digest.begin(), digest.end(), digest.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  if (!is_sha256_digest(digest)) {
    return std::nullopt;
  }
  return digest;
}

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
