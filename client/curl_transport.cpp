#include "client/errc.hpp"
#include "client/transport.hpp"

#include <algorithm>
#include <cctype>
#include <curl/curl.h>
#include <mutex>

namespace litterbox::client {
namespace {

std::size_t on_body(char* data, std::size_t size, std::size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
  auto* headers = static_cast<std::map<std::string, std::string>*>(user);
  std::string_view line(data, size * count);
  if (line.starts_with("HTTP/")) {
    headers->clear();  // a new response (after 100-continue or a redirect) starts over
    return size * count;
  }
  const auto colon = line.find(':');
  if (colon != std::string_view::npos) {
    std::string name(line.substr(0, colon));
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    auto value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
      value.remove_prefix(1);
    }
    while (!value.empty() &&
           (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) {
      value.remove_suffix(1);
    }
    (*headers)[name] = std::string(value);
  }
  return size * count;
}

// What a streamed body goes through: the callback for a 200, a buffer for anything else.
struct stream_sink {
  CURL* handle;
  const std::function<bool(std::string_view)>* on_body;
  std::string error_body;
  bool stopped = false;
};

std::size_t on_stream_body(char* data, std::size_t size, std::size_t count, void* user) {
  auto* sink = static_cast<stream_sink*>(user);
  long status = 0;
  curl_easy_getinfo(sink->handle, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) {
    sink->error_body.append(data, size * count);
    return size * count;
  }
  if (!(*sink->on_body)(std::string_view(data, size * count))) {
    sink->stopped = true;
    return 0;  // aborts the transfer (CURLE_WRITE_ERROR)
  }
  return size * count;
}

class curl_transport final : public transport {
 public:
  curl_transport() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    handle_ = curl_easy_init();
  }
  ~curl_transport() override {
    if (handle_ != nullptr) {
      curl_easy_cleanup(handle_);
    }
  }
  curl_transport(const curl_transport&) = delete;
  curl_transport& operator=(const curl_transport&) = delete;

  result<http_response> send(const http_request& request) override {
    if (handle_ == nullptr) {
      return make_error(errc::unavailable, "cannot initialise libcurl");
    }
    CURL* h = handle_;
    curl_easy_reset(h);
    http_response response;
    curl_slist* headers = nullptr;
    for (const auto& [name, value] : request.headers) {
      const std::string line = name + ": " + value;
      headers = curl_slist_append(headers, line.c_str());
    }
    // libcurl would otherwise add "Expect: 100-continue" to larger POSTs and wait for it.
    headers = curl_slist_append(headers, "Expect:");
    curl_easy_setopt(h, CURLOPT_URL, request.url.c_str());
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    const long timeout_ms = request.timeout.count();
    const long connect_ms = std::min(timeout_ms, 10000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &response.body);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &response.headers);
    if (request.method == "GET") {
      curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else {
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, request.method.c_str());
      if (request.method == "POST" || !request.body.empty()) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, request.body.data());
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
                         static_cast<curl_off_t>(request.body.size()));
      }
    }
    const CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(headers);
    if (rc != CURLE_OK) {
      const char* what = curl_easy_strerror(rc);
      return make_error(errc::unavailable,
                        std::string(rc == CURLE_OPERATION_TIMEDOUT ? "timed out: " : "") +
                            "cannot reach the service: " + what);
    }
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    response.status = static_cast<int>(status);
    return response;
  }

  result<http_response> stream(const http_request& request,
                               const std::function<bool(std::string_view)>& on_body) override {
    if (handle_ == nullptr) {
      return make_error(errc::unavailable, "cannot initialise libcurl");
    }
    CURL* h = handle_;
    curl_easy_reset(h);
    http_response response;
    stream_sink sink{h, &on_body, {}, false};
    curl_slist* headers = nullptr;
    for (const auto& [name, value] : request.headers) {
      const std::string line = name + ": " + value;
      headers = curl_slist_append(headers, line.c_str());
    }
    curl_easy_setopt(h, CURLOPT_URL, request.url.c_str());
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    const long silence_s = std::max(1L, request.timeout.count() / 1000);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, std::min(request.timeout.count(), 10000L));
    // No total timeout unless the caller has a deadline: a stream lasts; less than a byte a
    // second for this long is a dead one.
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, silence_s);
    if (request.stream_limit.count() > 0) {
      curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, request.stream_limit.count());
    }
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_stream_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &response.headers);
    const CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(headers);
    if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && sink.stopped)) {
      return make_error(errc::unavailable,
                        std::string("event stream interrupted: ") + curl_easy_strerror(rc));
    }
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    response.status = static_cast<int>(status);
    response.body = std::move(sink.error_body);
    return response;
  }

 private:
  CURL* handle_ = nullptr;
};

}  // namespace

std::unique_ptr<transport> make_curl_transport() {
  return std::make_unique<curl_transport>();
}

}  // namespace litterbox::client
