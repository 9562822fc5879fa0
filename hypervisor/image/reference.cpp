#include "hypervisor/image/reference.hpp"

#include "hypervisor/errc.hpp"

#include <algorithm>

namespace litterbox::hypervisor::image {
namespace {

bool is_lower_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

// One path component of a repository: lowercase alphanumerics separated by '.', '_', "__"
// or runs of '-' (distribution/reference grammar, simplified to what matters for safety).
bool valid_component(std::string_view c) {
  if (c.empty() || !is_lower_alnum(c.front()) || !is_lower_alnum(c.back())) {
    return false;
  }
  return std::all_of(c.begin(), c.end(), [](char ch) {
    return is_lower_alnum(ch) || ch == '.' || ch == '_' || ch == '-';
  });
}

bool valid_tag(std::string_view t) {
  if (t.empty() || t.size() > 128 || t.front() == '.' || t.front() == '-') {
    return false;
  }
  return std::all_of(t.begin(), t.end(), [](char ch) {
    return is_lower_alnum(ch) || (ch >= 'A' && ch <= 'Z') || ch == '_' || ch == '.' || ch == '-';
  });
}

bool valid_registry(std::string_view r) {
  // Starts like a host name or an IPv6 literal, never like an option.
  if (r.empty() || r.size() > 255 ||
      !(is_lower_alnum(r.front()) || (r.front() >= 'A' && r.front() <= 'Z') || r.front() == '[')) {
    return false;
  }
  return std::all_of(r.begin(), r.end(), [](char ch) {
    return is_lower_alnum(ch) || (ch >= 'A' && ch <= 'Z') || ch == '.' || ch == '-' || ch == ':' ||
           ch == '[' || ch == ']';
  });
}

error malformed(std::string_view what) {
  return make_error(errc::image_not_found, "invalid image reference: " + std::string(what));
}

}  // namespace

bool is_sha256_digest(std::string_view text) {
  constexpr std::string_view prefix = "sha256:";
  if (text.size() != prefix.size() + 64 || text.substr(0, prefix.size()) != prefix) {
    return false;
  }
  return std::all_of(text.begin() + static_cast<std::ptrdiff_t>(prefix.size()), text.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string image_ref::docker_transport(std::string_view digest_override) const {
  std::string out = "docker://" + registry + "/" + repository;
  if (!digest_override.empty()) {
    return out + "@" + std::string(digest_override);
  }
  if (!digest.empty()) {
    return out + "@" + digest;
  }
  return out + ":" + tag;
}

std::string image_ref::canonical() const {
  std::string out = registry + "/" + repository;
  if (!tag.empty()) {
    out += ":" + tag;
  }
  if (!digest.empty()) {
    out += "@" + digest;
  }
  return out;
}

result<image_ref> parse_reference(std::string_view text, std::string_view default_registry) {
  if (text.empty() || text.size() > 512) {
    return malformed("empty or longer than 512 characters");
  }
  image_ref ref;
  std::string_view rest = text;
  if (const auto at = rest.find('@'); at != std::string_view::npos) {
    ref.digest = std::string(rest.substr(at + 1));
    rest = rest.substr(0, at);
    if (!is_sha256_digest(ref.digest)) {
      return malformed("digest must be sha256:<64 lowercase hex digits>");
    }
  }
  const auto last_slash = rest.rfind('/');
  const auto colon = rest.rfind(':');
  if (colon != std::string_view::npos &&
      (last_slash == std::string_view::npos || colon > last_slash)) {
    ref.tag = std::string(rest.substr(colon + 1));
    rest = rest.substr(0, colon);
    if (!valid_tag(ref.tag)) {
      return malformed("bad tag");
    }
  }
  const auto first_slash = rest.find('/');
  if (first_slash != std::string_view::npos) {
    const auto head = rest.substr(0, first_slash);
    if (head.find('.') != std::string_view::npos || head.find(':') != std::string_view::npos ||
        head == "localhost") {
      ref.registry = std::string(head);
      rest = rest.substr(first_slash + 1);
    }
  }
  if (ref.registry.empty()) {
    ref.registry = std::string(default_registry);
    if (ref.registry == "docker.io" && rest.find('/') == std::string_view::npos) {
      ref.repository = "library/";
    }
  }
  if (!valid_registry(ref.registry)) {
    return malformed("bad registry name");
  }
  std::size_t start = 0;
  while (start <= rest.size()) {
    const auto end = std::min(rest.find('/', start), rest.size());
    if (!valid_component(rest.substr(start, end - start))) {
      return malformed("bad repository name");
    }
    start = end + 1;
  }
  ref.repository += std::string(rest);
  if (ref.tag.empty() && ref.digest.empty()) {
    ref.tag = "latest";
  }
  return ref;
}

}  // namespace litterbox::hypervisor::image
