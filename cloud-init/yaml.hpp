#pragma once

#include <string>
#include <string_view>

namespace litterbox::cloudinit {

/// `text` as a YAML double-quoted scalar: `"`, `\`, every control character and the Unicode
/// line breaks are escaped, valid UTF-8 is kept, invalid bytes become U+FFFD. The result is
/// always one line and is never interpreted by a YAML parser as anything but that string.
std::string yaml_quote(std::string_view text);

/// Standard base64 (RFC 4648, with padding) of `bytes`.
std::string base64_encode(std::string_view bytes);

/// Decodes standard base64; returns false on any character outside the alphabet or bad padding.
bool base64_decode(std::string_view text, std::string& out);

}  // namespace litterbox::cloudinit
