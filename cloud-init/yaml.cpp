#include "cloud-init/yaml.hpp"

#include <array>
#include <cstdint>

namespace litterbox::cloudinit {
namespace {

constexpr std::string_view k_alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr std::string_view k_hex = "0123456789ABCDEF";

// Length of the valid UTF-8 sequence starting at text[i], or 0 if it is not one (overlong,
// surrogate, out of range or truncated sequences are all invalid).
std::size_t utf8_length(std::string_view text, std::size_t i, std::uint32_t& cp) {
  const auto b0 = static_cast<unsigned char>(text[i]);
  std::size_t len = 0;
  std::uint32_t min = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
    cp = b0 & 0x1FU;
    min = 0x80;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    cp = b0 & 0x0FU;
    min = 0x800;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    cp = b0 & 0x07U;
    min = 0x10000;
  } else {
    return 0;
  }
  if (i + len > text.size()) {
    return 0;
  }
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(text[i + k]);
    if ((b & 0xC0U) != 0x80U) {
      return 0;
    }
    cp = (cp << 6U) | (b & 0x3FU);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    return 0;
  }
  return len;
}

void append_hex_escape(std::string& out, unsigned char c) {
  out += "\\x";
  out += k_hex[c >> 4U];
  out += k_hex[c & 0x0FU];
}

}  // namespace

std::string yaml_quote(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out += '"';
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\t':
          out += "\\t";
          break;
        case '\r':
          out += "\\r";
          break;
        default:
          if (c < 0x20 || c == 0x7F) {
            append_hex_escape(out, c);
          } else {
            out += static_cast<char>(c);
          }
      }
      ++i;
      continue;
    }
    std::uint32_t cp = 0;
    const std::size_t len = utf8_length(text, i, cp);
    if (len == 0) {
      out += "\\uFFFD";
      ++i;
      continue;
    }
    // C1 controls, NEL, the Unicode line/paragraph separators and the BOM are either line
    // breaks or non-printable to YAML: escape them so the scalar stays one printable line.
    if (cp <= 0x9F || cp == 0x2028 || cp == 0x2029 || cp == 0xFEFF) {
      out += "\\u";
      for (int shift = 12; shift >= 0; shift -= 4) {
        out += k_hex[(cp >> static_cast<unsigned>(shift)) & 0x0FU];
      }
    } else {
      out.append(text.substr(i, len));
    }
    i += len;
  }
  out += '"';
  return out;
}

std::string base64_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t n =
        (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16U) |
        (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8U) |
        static_cast<unsigned char>(bytes[i + 2]);
    out += k_alphabet[(n >> 18U) & 0x3FU];
    out += k_alphabet[(n >> 12U) & 0x3FU];
    out += k_alphabet[(n >> 6U) & 0x3FU];
    out += k_alphabet[n & 0x3FU];
  }
  const std::size_t rest = bytes.size() - i;
  if (rest > 0) {
    std::uint32_t n = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16U;
    if (rest == 2) {
      n |= static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8U;
    }
    out += k_alphabet[(n >> 18U) & 0x3FU];
    out += k_alphabet[(n >> 12U) & 0x3FU];
    out += rest == 2 ? k_alphabet[(n >> 6U) & 0x3FU] : '=';
    out += '=';
  }
  return out;
}

bool base64_decode(std::string_view text, std::string& out) {
  out.clear();
  if (text.size() % 4 != 0) {
    return false;
  }
  std::array<int, 256> value{};
  value.fill(-1);
  for (std::size_t k = 0; k < k_alphabet.size(); ++k) {
    value[static_cast<unsigned char>(k_alphabet[k])] = static_cast<int>(k);
  }
  for (std::size_t i = 0; i < text.size(); i += 4) {
    std::uint32_t n = 0;
    int pad = 0;
    for (std::size_t k = 0; k < 4; ++k) {
      const char c = text[i + k];
      if (c == '=' && i + 4 == text.size() && k >= 2) {
        ++pad;
        n <<= 6U;
        continue;
      }
      const int v = value[static_cast<unsigned char>(c)];
      if (v < 0 || pad > 0) {
        return false;
      }
      n = (n << 6U) | static_cast<std::uint32_t>(v);
    }
    out += static_cast<char>((n >> 16U) & 0xFFU);
    if (pad < 2) {
      out += static_cast<char>((n >> 8U) & 0xFFU);
    }
    if (pad < 1) {
      out += static_cast<char>(n & 0xFFU);
    }
  }
  return true;
}

}  // namespace litterbox::cloudinit
