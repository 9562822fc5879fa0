#pragma once

#include "controlplane/http/routes.hpp"
#include "controlplane/http/wire_profile.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace litterbox::controlplane::http {

/// The OpenAPI 3 document profile `p` serves at <prefix>/openapi.json: exactly the operations
/// the route table lists for `p`, described by schema/openapi.json (which describes every
/// operation of the table once; its "x-profiles" section holds what a profile's document says
/// differently), with the Host schema cut to host_fields(p). Throws std::logic_error when the
/// table and the descriptions disagree (an operation without a description or the reverse,
/// a Host schema that is not schema::to_json's): a build defect, caught by the unit tests and
/// at server start-up.
std::string openapi_document(wire_profile p);

/// The same from another route table and description text (for tests of the checks above).
std::string openapi_document(wire_profile p, const std::vector<route>& table,
                             std::string_view descriptions);

}  // namespace litterbox::controlplane::http
