#pragma once

#include "base/result.hpp"

#include <string>

namespace litterbox::controlplane::pg {

/// Applies the embedded schema migrations that `url`'s database lacks, each in its own
/// transaction, recording them in `schema_migrations`. Safe to run again and from several
/// processes at once (an advisory lock serialises them). Returns how many were applied.
/// Errors: controlplane::errc::unavailable (cannot connect), internal (a migration failed;
/// nothing of that migration is left behind). Blocks.
result<int> migrate(const std::string& url);

}  // namespace litterbox::controlplane::pg

namespace litterbox::controlplane {
using pg::migrate;
}  // namespace litterbox::controlplane
