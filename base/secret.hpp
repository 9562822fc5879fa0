#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace litterbox {

/// Compares in time that depends only on the lengths, never on where the inputs differ.
bool constant_time_equal(std::string_view a, std::string_view b);

/// `bytes` bytes from the kernel CSPRNG, hex-encoded. Aborts if the kernel refuses (that is
/// not a condition a caller can recover from).
std::string random_hex(std::size_t bytes);

/// Fills `out` from the kernel CSPRNG.
void random_bytes(void* out, std::size_t size);

/// Lowercase hex SHA-256 of `data`.
std::string sha256_hex(std::string_view data);

/// Lowercase hex HMAC-SHA256 of `data` under `key`.
std::string hmac_sha256_hex(std::string_view key, std::string_view data);

}  // namespace litterbox
