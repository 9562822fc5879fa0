#include "base/secret.hpp"

#include <array>
#include <cerrno>
#include <cstdlib>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <sys/random.h>

namespace litterbox {

bool constant_time_equal(std::string_view a, std::string_view b) {
  // Length is not secret (tokens have public formats); the content comparison is branch-free.
  if (a.size() != b.size()) {
    return false;
  }
  unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = static_cast<unsigned char>(
        diff | (static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(b[i])));
  }
  return diff == 0;
}

void random_bytes(void* out, std::size_t size) {
  auto* p = static_cast<unsigned char*>(out);
  while (size > 0) {
    const ssize_t n = getrandom(p, size, 0);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      std::abort();
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

namespace {
std::string to_hex(const unsigned char* data, std::size_t n) {
  static constexpr char k_digits[] = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (std::size_t i = 0; i < n; ++i) {
    out[2 * i] = k_digits[data[i] >> 4U];
    out[2 * i + 1] = k_digits[data[i] & 0xFU];
  }
  return out;
}
}  // namespace

std::string random_hex(std::size_t bytes) {
  std::string raw(bytes, '\0');
  random_bytes(raw.data(), raw.size());
  return to_hex(reinterpret_cast<const unsigned char*>(raw.data()), raw.size());
}

std::string sha256_hex(std::string_view data) {
  std::array<unsigned char, SHA256_DIGEST_LENGTH> md{};
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), md.data());
  return to_hex(md.data(), md.size());
}

std::string hmac_sha256_hex(std::string_view key, std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), md.data(),
           &len) == nullptr) {
    std::abort();  // only an allocation failure inside OpenSSL gets here
  }
  return to_hex(md.data(), len);
}

}  // namespace litterbox
