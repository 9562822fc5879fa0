#include "hypervisor/libvirt/guest_agent.hpp"

#include "cloud-init/yaml.hpp"
#include "hypervisor/errc.hpp"

#include <libvirt/libvirt-qemu.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <thread>

namespace litterbox::hypervisor {
namespace {

using std::chrono::steady_clock;
using json = nlohmann::json;

// Agent replies carry base64 file data at most; 48 KiB per write keeps each request far from
// the agent's and libvirt's message limits.
constexpr std::size_t k_write_chunk = 48 * 1024;

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace

std::string agent_request(std::string_view execute, std::string_view arguments_json) {
  json j;
  j["execute"] = std::string(execute);
  if (!arguments_json.empty()) {
    j["arguments"] = json::parse(arguments_json);
  }
  return dump(j);
}

result<std::string> agent_return(std::string_view reply) {
  const json j = json::parse(reply, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return make_error(errc::boot_failed, "the guest agent sent no JSON object");
  }
  if (const auto e = j.find("error"); e != j.end()) {
    const std::string desc = e->is_object() && e->contains("desc") && (*e)["desc"].is_string()
                                 ? (*e)["desc"].get<std::string>()
                                 : dump(*e);
    return make_error(errc::boot_failed, "the guest agent failed: " + desc);
  }
  const auto r = j.find("return");
  if (r == j.end()) {
    return make_error(errc::boot_failed, "the guest agent's reply has no return value");
  }
  return dump(*r);
}

result<std::string> clock_exec_arguments(std::chrono::system_clock::time_point now) {
  // 2000-01-01 and 2100-01-01 UTC: a host clock outside is broken, and the guest keeps its own.
  constexpr long long k_earliest = 946'684'800;
  constexpr long long k_latest = 4'102'444'800;
  const long long ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
  const long long seconds = ns / 1'000'000'000;
  const long long fraction = ns % 1'000'000'000;
  if (ns < 0 || seconds < k_earliest || seconds >= k_latest) {
    return make_error(errc::boot_failed, "the host clock (" + std::to_string(seconds) +
                                             " s since the epoch) is not a time to give a guest");
  }
  std::string digits = std::to_string(fraction);
  digits.insert(0, 9 - digits.size(), '0');
  json args;
  args["path"] = "/bin/date";
  args["arg"] = json::array({"-u", "-s", "@" + std::to_string(seconds) + "." + digits});
  args["capture-output"] = false;
  return dump(args);
}

bool agent_refused(std::string_view message) {
  // qemu-ga 7.2: a blocked RPC is "The command X has been disabled for this instance", an
  // unknown one "The command X has not been found", guest-set-time without hwclock "this
  // feature or command is not currently supported".
  constexpr std::array<std::string_view, 4> k_marks{"has been disabled", "has not been found",
                                                    "not currently supported", "hwclock"};
  return std::any_of(k_marks.begin(), k_marks.end(),
                     [&](std::string_view m) { return message.find(m) != std::string_view::npos; });
}

guest_agent::guest_agent(_virDomain* domain, steady_clock::time_point deadline)
    : domain_(domain), deadline_(deadline) {}

result<std::string> guest_agent::command(std::string_view execute,
                                         std::string_view arguments_json) {
  const auto left =
      std::chrono::duration_cast<std::chrono::seconds>(deadline_ - steady_clock::now()).count();
  if (left < 1) {
    return make_error(errc::boot_failed,
                      "the guest agent did not finish in time (" + std::string(execute) + ")");
  }
  const std::string request = agent_request(execute, arguments_json);
  const auto sent = steady_clock::now();
  char* reply = virDomainQemuAgentCommand(domain_, request.c_str(),
                                          static_cast<int>(std::min<long long>(left, 60)), 0);
  ++commands_;
  spdlog::trace(
      "guest agent {}: {} us", execute,
      std::chrono::duration_cast<std::chrono::microseconds>(steady_clock::now() - sent).count());
  if (reply == nullptr) {
    const virErrorPtr e = virGetLastError();
    const std::string message = e != nullptr && e->message != nullptr ? e->message : "no reply";
    return make_error(agent_refused(message) ? errc::clone_unsupported : errc::boot_failed,
                      "guest agent " + std::string(execute) + ": " + message);
  }
  const std::string text(reply);
  std::free(reply);
  auto value = agent_return(text);
  if (!value) {
    const bool refused = agent_refused(value.error().message);
    return make_error(refused ? errc::clone_unsupported : errc::boot_failed,
                      std::string(execute) + ": " + value.error().message);
  }
  return value;
}

result<void> guest_agent::wait_connected(steady_clock::time_point until) {
  until = std::min(until, deadline_);
  std::string last = "no answer";
  auto pause = std::chrono::milliseconds(20);
  while (true) {
    auto r = command("guest-ping");
    if (r) {
      return {};
    }
    if (r.error().code == errc::clone_unsupported) {
      return r.error();
    }
    last = r.error().message;
    if (steady_clock::now() + pause >= until) {
      break;
    }
    // libvirt answers "not connected" at once until the guest opens its end of the channel.
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(500));
  }
  return make_error(errc::boot_failed, "the guest agent did not answer: " + last);
}

result<void> guest_agent::set_time_now() {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  json args;
  args["time"] = ns;
  if (auto r = command("guest-set-time", dump(args)); !r) {
    return r.error();
  }
  return {};
}

result<void> guest_agent::set_system_clock_now() {
  auto args = clock_exec_arguments(std::chrono::system_clock::now());
  if (!args) {
    return args.error();
  }
  auto started = command("guest-exec", *args);
  if (!started) {
    return started.error();
  }
  const json pid = json::parse(*started, nullptr, false);
  if (!pid.is_object() || !pid.contains("pid") || !pid["pid"].is_number_integer()) {
    return make_error(errc::boot_failed, "guest-exec returned no pid");
  }
  json status_args;
  status_args["pid"] = pid["pid"];
  const std::string status_request = dump(status_args);
  auto pause = std::chrono::milliseconds(5);
  while (true) {
    auto status = command("guest-exec-status", status_request);
    if (!status) {
      return status.error();
    }
    const json st = json::parse(*status, nullptr, false);
    if (!st.is_object() || !st.contains("exited") || !st["exited"].is_boolean()) {
      return make_error(errc::boot_failed, "guest-exec-status returned no exit state");
    }
    if (st["exited"].get<bool>()) {
      if (st.contains("exitcode") && st["exitcode"].is_number_integer() &&
          st["exitcode"].get<long long>() == 0) {
        return {};
      }
      return make_error(errc::boot_failed,
                        "setting the guest clock with /bin/date failed: " + dump(st));
    }
    // command() gives up at the deadline; until then the date process is given time to run.
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(100));
  }
}

result<void> guest_agent::write_file(std::string_view path, std::string_view content) {
  json open_args;
  open_args["path"] = std::string(path);
  open_args["mode"] = "w";
  auto opened = command("guest-file-open", dump(open_args));
  if (!opened) {
    return opened.error();
  }
  const json handle = json::parse(*opened, nullptr, false);
  if (!handle.is_number_integer()) {
    return make_error(errc::boot_failed, "guest-file-open returned no handle");
  }
  result<void> outcome;
  for (std::size_t at = 0; at < content.size() && outcome; at += k_write_chunk) {
    const std::string_view chunk = content.substr(at, k_write_chunk);
    json args;
    args["handle"] = handle;
    args["buf-b64"] = cloudinit::base64_encode(chunk);
    auto wrote = command("guest-file-write", dump(args));
    if (!wrote) {
      outcome = wrote.error();
      break;
    }
    const json w = json::parse(*wrote, nullptr, false);
    if (!w.is_object() || !w.contains("count") || !w["count"].is_number_integer() ||
        w["count"].get<long long>() != static_cast<long long>(chunk.size())) {
      outcome = make_error(errc::boot_failed, "short write to " + std::string(path));
    }
  }
  json close_args;
  close_args["handle"] = handle;
  auto closed = command("guest-file-close", dump(close_args));
  if (!outcome) {
    return outcome;
  }
  if (!closed) {
    return closed.error();
  }
  return {};
}

result<void> guest_agent::fstrim() {
  if (auto r = command("guest-fstrim"); !r) {
    return r.error();
  }
  return {};
}

}  // namespace litterbox::hypervisor
