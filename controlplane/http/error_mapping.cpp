#include "controlplane/http/error_mapping.hpp"

#include "controlplane/core/errc.hpp"
#include "schema/errc.hpp"
#include "schema/errors.hpp"

namespace litterbox::controlplane::http {
namespace {

// Long enough for a provisioning slot or port to free up, short enough for an agent loop.
constexpr std::string_view k_retry_after_seconds = "5";

/// The caller-safe message of `e`, or its category's text when the message is empty.
std::string detail_of(const error& e) {
  return e.message.empty() ? e.code.message() : e.message;
}

/// A 422 body; an error without issues still gets a one-item list so the shape holds.
std::string validation_of(const error& e, std::vector<std::string> fallback_loc) {
  if (!e.issues.empty()) {
    return schema::validation_body(e.issues);
  }
  return schema::validation_body({field_issue{std::move(fallback_loc), detail_of(e)}});
}

http_error internal(std::string_view request_id) {
  return {500, schema::error_body("internal error", "INTERNAL", request_id), std::nullopt};
}

}  // namespace

http_error to_http_error(const error& e, std::string_view request_id) {
  if (e.code.category() == schema::category()) {
    return {422, validation_of(e, {"body"}), std::nullopt};
  }
  if (e.code.category() != controlplane::category()) {
    return internal(request_id);
  }
  switch (static_cast<errc>(e.code.value())) {
    case errc::validation:
      return {422, validation_of(e, {"body"}), std::nullopt};
    case errc::idempotency_mismatch:
      return {422, validation_of(e, {"header", "Idempotency-Key"}), std::nullopt};
    case errc::bad_request:
      return {400, schema::error_body(detail_of(e), "BAD_REQUEST"), std::nullopt};
    case errc::not_found:
      return {404, schema::error_body(detail_of(e), "NOT_FOUND"), std::nullopt};
    case errc::host_state:
      return {409, schema::error_body(detail_of(e), "HOST_STATE"), std::nullopt};
    case errc::quota:
      return {429, schema::error_body(detail_of(e), "QUOTA"), std::string(k_retry_after_seconds)};
    case errc::provisioning_failed:
      return {502, schema::error_body(detail_of(e), "PROVISIONING_FAILED"), std::nullopt};
    case errc::unavailable:
    case errc::outcome_unknown:
      return {503, schema::error_body(detail_of(e), "UNAVAILABLE"), std::nullopt};
    case errc::capacity:
      return {503, schema::error_body(detail_of(e), "CAPACITY"),
              std::string(k_retry_after_seconds)};
    case errc::teardown_failed:
      return {503, schema::error_body(detail_of(e), "HOST_TEARDOWN"), std::nullopt};
    case errc::internal:
      return internal(request_id);
    case errc::history_gone:
      // API.md "Events": the body has no error_code.
      return {410, schema::detail_body("event history no longer available"), std::nullopt};
  }
  return internal(request_id);
}

}  // namespace litterbox::controlplane::http
